"""Numba CPU kernels: the loops. The math they call lives in ``tinyrnn.cells.math``.

One kernel per recurrent cell covers all three entry shapes of the architecture page: one
step for B streams (``T == 1``), T steps for B streams in one call (a stream's ``process``),
and whole sequences for ``run``. Over many steps of wide inputs the kernel hoists the input
projection ``x·W + b`` out of the recurrence, ``CHUNK`` time steps at a time, so the
hoisted rows stay in cache and the recurrence only adds ``h·R``; otherwise it computes
the input product step by step, with the same arithmetic. Each kernel is compiled in up to
eight variants from its one source (activations, loop order, hoisting: see ``_variant``
and the constants above the unit loops), plus one sized for a small per-sample layer's
sizes, and a model compiles only those it runs (``sequence_kernel``).

Shapes (per call; ``d`` selects one direction of a layer's stacked weights)::

    x        (B, T, I)    float32   input rows
    lengths  (B,)         int64     steps valid per stream; t >= lengths[b] is padding
    W        (D, I, GH)   f32/u16/i8   input weights, ONNX's W transposed per direction
    R        (D, Hr, GH)  f32/u16/i8   recurrent weights, ONNX's R transposed
    Wp, Rp   (D, S, n, P) same dtype   W and R cut into column panels (``packing.pack_panels``;
                                    S = 0 for a matrix small enough to be read as it is)
    proj     (D, H, Hr)   f32/u16/i8   LSTM projection, or None without one (a type of its own:
                                    the kernel then compiles without the projection's code)
    peep     (D, 3H)      float32   LSTM peepholes [Pi, Po, Pf], or None without them (likewise)
    V        (D, K)       float32   packed vectors, see ``packing.vector_layout``
    cfg      (D, 17)      float32   activations and flags, see ``packing.CFG_*``
    h        (B, D, Hr)   float32   hidden state, updated in place
    c        (B, D, H)    float32   LSTM cell state, updated in place
    y        (B, T, Dout) float32   outputs; this direction writes columns y_off:y_off+Hr
    gx       (B, TC, GH)  float32   scratch: the chunk's gate pre-activations (TC = min(T, CHUNK))
    acc      (B, 1, GH)   float32   scratch: a step's recurrent product, when it cannot go to gx
    m        (B, 1, H)    float32   scratch: LSTM unprojected hidden values, GRU r * h (RNN: unused)

Kernels do no bounds checking: ``tinyrnn.backends.cpu`` validates and sizes every array
before a kernel sees it.
"""

from __future__ import annotations

import itertools
import types

import numpy as np
from numba import njit
from numba import types as nbtypes
from numba.extending import overload

from .. import _cache  # noqa: F401  (before any cache=True function is defined)
from ..cells.math import act, gru_gate, gru_unit, lstm_unit, rnn_unit
from .packing import CFG_CLIP, CFG_COUPLED, CFG_F, CFG_G, CFG_H, CFG_LBR, CFG_REVERSE, CFG_YOFF, empty_aligned
from .simd import LANES, SMALL, TILE, assume_shape, panels_matvec, tile_matmat4, tile_matvec, tile_matvec_affine
from .weights import load, scale_of, scaled, scaled_type

# "contract" lets LLVM fuse multiply-adds, "reassoc" lets it vectorise reductions. No
# "nnan"/"ninf": NaN and infinity must propagate as IEEE says (the NaN policy relies on it).
FASTMATH = {"contract", "reassoc", "nsz"}
# _nrt=False: no kernel allocates, and without numba's runtime an array view or an array
# handed to an inlined helper costs nothing. With it, every such array was reference
# counted by an atomic increment and decrement per step: nine atomics a step, about a
# fifth of a per-sample LSTM step (benchmarks/RESULTS.md, "Instructions per step").
KERNEL = dict(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy", _nrt=False)
HELPER = dict(KERNEL, inline="always")


def _noalias() -> dict:
    """The jit option that marks a kernel's array arguments as not overlapping, if numba has it.

    Without it LLVM must assume that, say, the cell state and the gate buffer may overlap,
    and guards every vectorised loop of a step with run-time overlap checks (some 150
    instructions a step of a small LSTM). Numba's compiler has the flag (its parallel
    gufuncs set it) but does not expose it as a ``@njit`` option; this maps it. A numba
    without the flag gets no option, and the checks come back: slower, never wrong.
    The backends never pass overlapping arrays to a recurrent kernel (weights are read
    only; ``x``, ``y``, ``h``, ``c`` and the three scratch arrays are distinct buffers).
    """
    try:
        from numba.core.compiler import Flags
        from numba.core.cpu import CPUTargetOptions
        from numba.core.options import TargetOptions
    except ImportError:  # pragma: no cover - a numba that reorganised its internals
        return {}
    if not hasattr(Flags, "noalias"):
        return {}  # pragma: no cover
    if not isinstance(getattr(CPUTargetOptions, "noalias", None), TargetOptions.Mapping):
        CPUTargetOptions.noalias = TargetOptions.Mapping("noalias")
    return {"noalias": True}


RECURRENT = dict(KERNEL, **_noalias())

CHUNK = 32  # time steps whose input projection is hoisted together
# Inputs this narrow (per-sample audio, sensors) are not worth a separate hoisting pass
# over a chunk: their input product is computed step by step instead (same arithmetic, so
# the same bits). Nor are calls of fewer than HOIST_MIN_STEPS steps: a single step never
# gains, and a short block (a prompt) would compile the hoisting kernel for microseconds.
FUSE_MAX_INPUT = 4
HOIST_MIN_STEPS = 16
# Columns of a large product outside its whole panels are walked in blocks of 4 rows x
# BLOCK_COLS columns, each reused from L1 by every row (``_rows_block_acc``).
BLOCK_COLS = 128
BATCH_BLOCK_MIN = 4  # streams from which a step's recurrent product is computed for all at once
# weights of R from which streams stepping together take the batched kernels, R packed for
# them (``cpu.prepared``): past L1 (32 KiB of float32), four streams sharing each load
# from L2 beat each stream reading R alone (LSTM 16->64, 16,384 weights: 0.70-0.83x the
# time for 4 to 64 streams); within L1 they lose (LSTM 32, 4,096: 1.03-1.18x)
BATCH_PANELS_MIN = 8192


def scratch(B: int, T: int, G: int, H: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scratch arrays ``gx``, ``acc``, ``m`` of a recurrent kernel for B streams, T steps, G gates.

    Three arrays, not views of one: with ``noalias`` arguments LLVM then knows that the
    unit loops' reads (gx, acc) and writes (m) do not overlap, and drops the run-time
    overlap checks it would otherwise put in front of them every step.
    """
    TC = min(T, CHUNK)
    arrays = tuple(empty_aligned(shape, np.float32) for shape in ((B, TC, G * H), (B, 1, G * H), (B, 1, H)))
    for a in arrays:  # register tiles store whole vectors into gx and acc: aligned, as the weights
        a.fill(0.0)
    return arrays


# --- shared loops -----------------------------------------------------------------------
# The helpers take whole arrays and indices. That began as a way around numba's
# reference counting of views (atomics per view per step); the kernels now compile
# without numba's runtime (``KERNEL``), where a view costs nothing, and take views where
# they help LLVM (``_rows_block_acc``).


@njit(**HELPER)
def _vecmat(v, M, out):
    """out[:] = v @ M with M read through ``load``; no scale applied (outside hot loops)."""
    out[:] = 0.0
    for i in range(v.shape[0]):
        vi = v[i]
        for j in range(out.shape[0]):
            out[j] += vi * load(M[i, j])


@njit(**HELPER)
def _time(s, T, reverse):
    """The time index of processing step s."""
    return T - 1 - s if reverse else s


# --- out-of-line products ----------------------------------------------------------------
# ``_rows_block_acc``, ``_panel_acc`` and ``_panel_product`` are compiled once each and
# called, not inlined: every kernel reaches them from several places, and numba's IR
# inlining (not LLVM's) was most of a kernel's cold compile (benchmarks/compile_cost.py:
# the shipped model's kernels, 40 s inlined, 18 s called). Their callers are the products
# of large matrices, where a call (tens of ns) is nothing, or a tile's last columns, skipped
# when there are none. Each is reached through an inlined shim that passes every integer
# as a run-time int64: numba compiles a called function once per argument type, and a
# literal 0 or 1 is a type of its own (``_panel_acc`` compiled seven times for one model).


@njit(**RECURRENT)
def _rows_block_acc(src, s0, s1, ds0, ds1, M, dst, d0, d1, dd0, dd1, nrows, col0, ncols):
    """dst[d0 + r*dd0, d1 + r*dd1, cols] += src[s0 + r*ds0, s1 + r*ds1, :] @ M[:, cols] for r < nrows,

    ``cols`` being ``col0:col0+ncols``; M unpacked, read row by row.

    The product wherever no register tile or panel serves: a matrix too large for tiles
    and without panels (a projection, a dense layer), the last columns of a tiled one, the
    columns of a large one outside its whole panels. Four rows of M per pass, so each sum
    is loaded and stored a quarter as often as row by row (3x faster at 16 x 64), and in
    blocks of ``BLOCK_COLS`` columns that each row of ``src`` reuses from L1. Per element
    the additions run in one order (rows of M in fours, then singly) whatever the number
    of rows or the block, so a row gets the same bits either way.
    """
    n = M.shape[0]
    for jb in range((ncols + BLOCK_COLS - 1) // BLOCK_COLS):
        j0 = col0 + jb * BLOCK_COLS
        j1 = min(col0 + ncols, j0 + BLOCK_COLS)
        w = j1 - j0
        # 1-D views (free without numba's runtime) so that the column loop starts at a
        # literal 0: from a computed start, numba's negative-index wrap-around stays in
        # the loop and LLVM cannot vectorise it
        i = 0
        while i + 4 <= n:
            m0 = M[i, j0:j1]
            m1 = M[i + 1, j0:j1]
            m2 = M[i + 2, j0:j1]
            m3 = M[i + 3, j0:j1]
            for r in range(nrows):
                a0 = s0 + r * ds0
                a1 = s1 + r * ds1
                v0 = src[a0, a1, i]
                v1 = src[a0, a1, i + 1]
                v2 = src[a0, a1, i + 2]
                v3 = src[a0, a1, i + 3]
                out = dst[d0 + r * dd0, d1 + r * dd1, j0:j1]
                for j in range(w):
                    out[j] += (v0 * load(m0[j]) + v1 * load(m1[j])
                               + v2 * load(m2[j]) + v3 * load(m3[j]))
            i += 4
        while i < n:
            m0 = M[i, j0:j1]
            for r in range(nrows):
                v = src[s0 + r * ds0, s1 + r * ds1, i]
                out = dst[d0 + r * dd0, d1 + r * dd1, j0:j1]
                for j in range(w):
                    out[j] += v * load(m0[j])
            i += 1


@njit(**RECURRENT)
def _panel_acc(src, s0, s1, ds0, ds1, M, P, dst, d0, d1, dd0, dd1, nrows, col0, ncols):
    """``_rows_block_acc``'s product, with M's whole column panels read from P.

    P holds M's columns in panels of ``P.shape[2]`` (one vector register's worth), each
    panel's rows contiguous (``packing.pack_panels``). A panel is walked top to bottom
    with its sums in registers (``simd.tile_matmat4``: four rows share each weight load),
    and stays in L1 for every group of rows (40 GMAC/s at 64 x 256 x 1024 here, against
    15 for the blocked loop, whose stores and reloads of the sums are its limit); a lone
    row walks four panels at once (``simd.panels_matvec``: enough independent sums to
    hide the multiply-add latency). Walking an unpacked matrix down its columns instead
    is slow (rows 4 KiB apart fall into one L1 set). One row or four, a product element
    gets the same fused multiply-add chain, so a stream's bits do not depend on the rows
    computed with it. Columns outside whole panels take ``_rows_block_acc``, for every
    row alike.
    """
    PW = P.shape[2]
    lo = (col0 + PW - 1) // PW
    hi = min((col0 + ncols) // PW, P.shape[0])
    if lo >= hi:
        _rows_block_acc(src, s0, s1, ds0, ds1, M, dst, d0, d1, dd0, dd1, nrows, col0, ncols)
        return
    r4 = nrows - nrows % 4
    if r4 > 0:
        for p in range(lo, hi):
            out = dst[:, :, p * PW:(p + 1) * PW]
            panel = P[p]
            for r in range(0, r4, 4):
                tile_matmat4(src, s0 + r * ds0, s1 + r * ds1, ds0, ds1, panel,
                             out, d0 + r * dd0, d1 + r * dd1, dd0, dd1, 0, PW)
    for r in range(r4, nrows):
        # A lone row is a step's product, and a recurrent kernel writes consecutive steps
        # into consecutive rows of gx: walking the panels backward for odd rows, each step
        # first reads the panels its predecessor read last, still in L2 where the matrix is
        # larger than L2 (R of LSTM 256, 1 MiB: 0.93x the time). Same sums either way.
        panels_matvec(src, s0 + r * ds0, s1 + r * ds1, P, lo, hi - lo, dst, d0 + r * dd0, d1 + r * dd1,
                      (d1 + r * dd1) & 1)
    if lo * PW > col0:
        _rows_block_acc(src, s0, s1, ds0, ds1, M, dst, d0, d1, dd0, dd1, nrows, col0, lo * PW - col0)
    if col0 + ncols > hi * PW:
        _rows_block_acc(src, s0, s1, ds0, ds1, M, dst, d0, d1, dd0, dd1, nrows, hi * PW, col0 + ncols - hi * PW)


@njit(**HELPER)
def _rows(src, s0, s1, M, dst, d0, d1, col0, ncols):
    """``_rows_block_acc`` for one row; nothing to do when ``ncols`` is 0."""
    if ncols > 0:
        i = np.int64
        _rows_block_acc(src, i(s0), i(s1), i(0), i(0), M, dst, i(d0), i(d1), i(0), i(0), i(1), i(col0), i(ncols))


@njit(**HELPER)
def _panels(src, s0, s1, ds0, ds1, M, P, dst, d0, d1, dd0, dd1, nrows, col0, ncols):
    """``_panel_acc`` with every integer argument a run-time int64."""
    i = np.int64
    _panel_acc(src, i(s0), i(s1), i(ds0), i(ds1), M, P, dst, i(d0), i(d1), i(dd0), i(dd1), i(nrows),
               i(col0), i(ncols))


@njit(**HELPER)
def _matvec_acc(src, s0, s1, M, dst, d0, d1, col0, ncols):
    """dst[d0, d1, col0:col0+ncols] += src[s0, s1, :] @ M[:, col0:col0+ncols], M unpacked.

    A matrix small enough to sit in L1 goes through register tiles (``simd.tile_matvec``,
    2x faster at 32 x 128) for all but its last few columns; a larger one (a projection,
    a dense layer) takes the row-wise loop.
    """
    done = 0
    if M.shape[0] * ncols <= SMALL:
        done = tile_matvec(src, s0, s1, 0, 0, M, dst, d0, d1, 0, 0, col0, ncols)
    _rows(src, s0, s1, M, dst, d0, d1, col0 + done, ncols - done)


@njit(**HELPER)
def _product(src, s0, s1, M, P, dst, d0, d1, col0, ncols):
    """``_matvec_acc`` for a recurrent matrix: through its panels when it has them."""
    if P.shape[0] > 0:
        _panels(src, s0, s1, 0, 0, M, P, dst, d0, d1, 0, 0, 1, col0, ncols)
    else:
        _matvec_acc(src, s0, s1, M, dst, d0, d1, col0, ncols)


def _finish(out, scale, bias, col0):
    """out[j] = out[j] * scale[col0 + j] + bias[col0 + j]; ``scale`` or ``bias`` may be None.

    What is None is compiled away. With both, the multiply and the add contract into one
    fused multiply-add, as ``simd.tile_matvec_affine`` computes them in registers.
    """


@overload(_finish, inline="always")
def _ol_finish(out, scale, bias, col0):
    no_scale, no_bias = isinstance(scale, nbtypes.NoneType), isinstance(bias, nbtypes.NoneType)
    if no_scale and no_bias:
        return lambda out, scale, bias, col0: None

    def add(out, scale, bias, col0):
        for j in range(out.shape[0]):
            out[j] += bias[col0 + j]

    def mul(out, scale, bias, col0):
        for j in range(out.shape[0]):
            out[j] *= scale[col0 + j]

    def mul_add(out, scale, bias, col0):
        for j in range(out.shape[0]):
            out[j] = out[j] * scale[col0 + j] + bias[col0 + j]

    return add if no_scale else mul if no_bias else mul_add


@njit(**HELPER)
def _matvec(src, s0, s1, M, scale, bias, dst, d0, d1, col0, ncols):
    """dst[d0, d1, cols] = src[s0, s1, :] @ M[:, cols] (* scale[cols] for int8 M) (+ bias[cols]).

    M unpacked; ``bias`` a float32 array or None. ``_matvec_acc``'s arithmetic on a zeroed
    row, then the scale and the bias (for int8 M one fused multiply-add): tiles apply them
    to their sums before storing (``simd.tile_matvec_affine``), the last columns in a pass
    after. Both the hoisted and the fused input product come here, so they agree bit for bit.
    """
    done = 0
    if M.shape[0] * ncols <= SMALL:
        done = tile_matvec_affine(src, s0, s1, 0, 0, M, scale, bias, dst, d0, d1, 0, 0, col0, ncols)
    rest = dst[d0, d1, col0 + done:col0 + ncols]
    for j in range(ncols - done):
        rest[j] = 0.0
    _rows(src, s0, s1, M, dst, d0, d1, col0 + done, ncols - done)
    _finish(rest, scale_of(M[0, 0], scale), bias, col0 + done)


@njit(**RECURRENT)
def _panel_product(src, s0, s1, ds0, ds1, M, P, dst, d0, d1, dd0, dd1, nrows, col0, ncols):
    """dst[row r, cols] = src[row r] @ M[:, cols] for r < nrows: ``_panel_acc`` on zeroed rows."""
    for r in range(nrows):
        out = dst[d0 + r * dd0, d1 + r * dd1, col0:col0 + ncols]
        for j in range(ncols):
            out[j] = 0.0
    _panels(src, s0, s1, ds0, ds1, M, P, dst, d0, d1, dd0, dd1, nrows, col0, ncols)


@njit(**HELPER)
def _rows_product(src, s0, s1, ds0, ds1, M, P, scale, bias, dst, d0, d1, dd0, dd1, nrows, col0, ncols):
    """dst[row r, cols] = src[row r] @ M[:, cols] (* scale[cols] for int8 M) (+ bias[cols]) for r < nrows.

    Rows as in ``_panel_acc`` (``src[s0 + r*ds0, s1 + r*ds1]`` -> ``dst[d0 + r*dd0, d1 + r*dd1]``);
    M must have panels; ``bias`` a float32 array or None. ``_matvec``'s arithmetic for any
    number of rows: the same sums, then scale and bias in one pass (one fused multiply-add
    for int8 M), so a row gets the same bits whichever path computes it. The sums are
    ``_panel_product``'s, out of line with every integer a run-time int64 (one compile);
    the pass is inlined here, where the types of ``scale`` and ``bias`` are known.
    """
    i = np.int64
    _panel_product(src, i(s0), i(s1), i(ds0), i(ds1), M, P, dst, i(d0), i(d1), i(dd0), i(dd1),
                   i(nrows), i(col0), i(ncols))
    for r in range(nrows):
        _finish(dst[d0 + r * dd0, d1 + r * dd1, col0:col0 + ncols], scale_of(M[0, 0], scale), bias, col0)


@njit(**HELPER)
def _tiles_serve(M, P, nrows):
    """Whether register tiles on M itself compute a product of ``nrows`` rows.

    Panels serve a matrix larger than L1 (``SMALL``) and, for a smaller input matrix
    packed for its hoisted product (``packing.pack_input_panels``), four or more rows
    sharing each weight load; one to three rows of a small matrix are faster through
    tiles. Both give the same bits (``_rows_product``), so the choice never changes a result.
    """
    return P.shape[0] == 0 or (nrows < 4 and M.shape[0] * M.shape[1] <= SMALL)


@njit(**HELPER)
def _matvec_p(src, s0, s1, M, P, scale, bias, dst, d0, d1, col0, ncols):
    """``_matvec`` for a recurrent layer's matrix M: through its panels P when it has them
    and is too large for L1 (see ``_tiles_serve``)."""
    if not _tiles_serve(M, P, 1):
        _rows_product(src, s0, s1, 0, 0, M, P, scale, bias, dst, d0, d1, 0, 0, 1, col0, ncols)
    else:
        _matvec(src, s0, s1, M, scale, bias, dst, d0, d1, col0, ncols)


@njit(**RECURRENT)
def _hoist(x, Wd, Wpd, bias, sW, lengths, s0, n, reverse, gx):
    """gx[b, k, :] = x[b, t(s0+k), :] @ Wd * sW + bias for the chunk's active rows.

    A Wd read through its panels (``_tiles_serve``) is walked once for the whole chunk,
    four rows sharing each weight load; its rows for padding steps are computed too
    (cheaper than skipping them there) and never read.
    """
    B, T, _ = x.shape
    GH = gx.shape[2]
    if _tiles_serve(Wd, Wpd, B if n == 1 else n):
        for b in range(B):
            for k in range(n):
                t = _time(s0 + k, T, reverse)
                if t >= lengths[b]:
                    continue
                _matvec_p(x, b, t, Wd, Wpd, sW, bias, gx, b, k, 0, GH)
        return
    t0 = T - 1 - s0 if reverse else s0
    dt = -1 if reverse else 1
    if n == 1:  # one step (a batched GRU step): the streams are the rows
        _rows_product(x, 0, t0, 1, 0, Wd, Wpd, sW, bias, gx, 0, 0, 1, 0, B, 0, GH)
    else:
        for b in range(B):
            _rows_product(x, b, t0, 0, dt, Wd, Wpd, sW, bias, gx, b, 0, 0, 1, n, 0, GH)


@njit(**RECURRENT)
def _gates_batch(x, t, h, d, Wd, Rd, Wpd, Rpd, bias, sW, sR, gx, k, acc, fused):
    """``_gates`` for every stream of step t at once, each large recurrent matrix walked once.

    Same arithmetic per stream as ``_gates`` (see ``_panel_acc`` and ``_rows_product``),
    so a stream's result does not depend on how many streams step with it, even where a
    lone stream's step reads W through register tiles. Rows of streams already past their
    length are computed and not read.
    """
    B = gx.shape[0]
    GH = gx.shape[2]
    if fused:
        _rows_product(x, 0, t, 1, 0, Wd, Wpd, sW, bias, gx, 0, k, 1, 0, B, 0, GH)
    _add_hR_all(h, d, Rd, Rpd, sR, gx, k, acc)


@njit(**HELPER)
def _gates(x, t, h, d, Wd, Rd, Wpd, Rpd, bias, sW, sR, gx, k, acc, b, fused):
    """Complete gx[b, k, :] into every gate's pre-activation for step t of stream b.

    Hoisted (``fused`` False): gx already holds x·W + bias. Fused: the input product is
    computed here, per step, with exactly the hoist's arithmetic, so a stream gives the
    same bits whichever path its steps take. Then h·R is added (through ``acc`` when an
    int8 R needs its scales).
    """
    if fused:
        _matvec_p(x, b, t, Wd, Wpd, sW, bias, gx, b, k, 0, gx.shape[2])
    _add_hR(h, b, d, Rd, Rpd, sR, gx, k, acc)


def _add_hR(h, b, d, Rd, Rpd, sR, gx, k, acc):
    """gx[b, k, :] += h[b, d, :] @ Rd (* sR for int8 Rd): int8 through ``acc``, for its scales.

    Which of the two is decided by Rd's type (an overload), not by a branch: numba types
    and compiles both arms of an ``if scaled(...)`` whatever the weights, and a float
    model's kernel then carried the int8 product's code (an eighth of its cold compile).
    """


@overload(_add_hR, inline="always")
def _ol_add_hR(h, b, d, Rd, Rpd, sR, gx, k, acc):
    if scaled_type(Rd.dtype):
        def through_acc(h, b, d, Rd, Rpd, sR, gx, k, acc):
            GH = gx.shape[2]
            _matvec_p(h, b, d, Rd, Rpd, sR, None, acc, b, 0, 0, GH)
            for j in range(GH):
                gx[b, k, j] += acc[b, 0, j]
        return through_acc

    def direct(h, b, d, Rd, Rpd, sR, gx, k, acc):
        _product(h, b, d, Rd, Rpd, gx, b, k, 0, gx.shape[2])
    return direct


def _add_hR_all(h, d, Rd, Rpd, sR, gx, k, acc):
    """``_add_hR`` for every stream b at once, Rd read through its panels (``_gates_batch``)."""


@overload(_add_hR_all, inline="always")
def _ol_add_hR_all(h, d, Rd, Rpd, sR, gx, k, acc):
    if scaled_type(Rd.dtype):
        def through_acc(h, d, Rd, Rpd, sR, gx, k, acc):
            B, _, GH = gx.shape
            _rows_product(h, 0, d, 1, 0, Rd, Rpd, sR, None, acc, 0, 0, 1, 0, B, 0, GH)
            for b in range(B):
                for j in range(GH):
                    gx[b, k, j] += acc[b, 0, j]
        return through_acc

    def direct(h, d, Rd, Rpd, sR, gx, k, acc):
        B, _, GH = gx.shape
        _panels(h, 0, d, 1, 0, Rd, Rpd, gx, 0, k, 1, 0, B, 0, GH)
    return direct


@njit(**HELPER)
def _pad(y, b, t, y_off, n):
    """Zero the outputs of a padding step."""
    out = y[b, t, y_off:y_off + n]
    for j in range(n):
        out[j] = 0.0


@njit(**HELPER)
def _emit(h, b, d, y, t, y_off, n):
    """Copy the new hidden state to the output.

    Through a view: indexed as ``y[b, t, y_off + j]``, numba's negative-index wrap-around
    (``y_off`` is read from the float config) stayed in the loop and kept it scalar.
    """
    out = y[b, t, y_off:y_off + n]
    for j in range(n):
        out[j] = h[b, d, j]


# --- unit loops (inlined; called with a constant ``std`` so the default-activation loop
# compiles without the generic activation switch and vectorises) -------------------------

# Each recurrent kernel exists four times, compiled from one source with two module
# constants changed (see ``_variant``); a model compiles only the ones it uses.
# DEFAULT_ACTS: the cells' default activations (sigmoid/tanh), or (``*_any``) any ONNX
# activation: the generic activation switch is a fifth of an LSTM kernel's compile time,
# and almost no model needs it.
# BATCHED: the loop order. False: streams outside, time steps inside; a stream's views
# are set up once per chunk rather than once per step (a fifth of a per-sample LSTM step's
# instructions went to setting them up every step). True (``*_batched``): time steps
# outside, so that a step's recurrent product is computed for every stream at once, each
# large matrix walked once a step (``_gates_batch``). The plan picks the batched kernel
# for B >= BATCH_BLOCK_MIN streams and a matrix with panels (``batched_order``). Either
# order does the same arithmetic per stream: the same bits.
# HOIST (RNN and LSTM; a GRU always hoists): each chunk's input product computed before
# its steps as one matrix product (``_hoist``, ``*_hoisted``), or step by step inside the
# recurrence. The plan decides (``hoisted``); a streaming step's kernel then never compiles
# the hoisting code (a third of an LSTM kernel's cold compile).
# UNITS, INPUTS (``*_h16_i1`` and the like; 0 in the others): a layer's hidden size and
# input width as compile-time constants rather than read from the arrays. A per-sample
# step (one audio sample or a few sensor values in, tens of units) is small enough that
# loop control and tests on sizes were a fifth to a third of it: the products picking
# their paths, the tile loops' trip counts, the unit loop's remainder. Sized, LLVM folds
# them (LSTM 1->16: 912 -> 708 instructions a step, GRU 1->16 1,035 -> 707; 0.79-0.90x
# the time; the same bits). One variant per size, compiled when a plan needs it, for the
# layers ``sized`` admits; such a layer runs no other kernel, so a model compiles no more.
# PAIRED (sized LSTMs whose H is a multiple of 16, two AVX2 vectors): the unit loop takes
# units j and j + H/2 together (``_lstm_units_paired``; LSTM 1->16: 603 -> 562 kernel
# instructions a step, 0.94-0.96x the time, the same bits).
DEFAULT_ACTS = True
BATCHED = False
HOIST = False
UNITS = 0
INPUTS = 0
PAIRED = False


def sized(std: bool, batched: bool, hoist: bool, H: int, I: int, Rp: np.ndarray, proj_size: int) -> tuple[int, int]:
    """``(UNITS, INPUTS)`` of the sized kernel for a layer's direction, or ``(0, 0)`` for none.

    Sized kernels are made for the per-sample case only: default activations, one stream
    after another, the input product step by step (``FUSE_MAX_INPUT``), R read as it is
    (no panels) and no projection (R has H rows), and H a multiple of 8, one AVX2 vector
    of units, so that the unit loop has no remainder and a test suite's odd sizes do not
    each compile one.
    """
    if std and not batched and not hoist and Rp.shape[1] == 0 and not proj_size and H % 8 == 0 \
            and I <= FUSE_MAX_INPUT:
        return H, I
    return 0, 0


def batched_order(B: int, Rp: np.ndarray) -> bool:
    """Whether B streams over recurrent panels ``Rp`` (D, S, n, P) take the batched kernels."""
    return B >= BATCH_BLOCK_MIN and Rp.shape[1] > 0


def hoisted(T: int, I: int) -> bool:
    """Whether T steps of inputs I wide take the kernels that hoist the input product."""
    return T >= HOIST_MIN_STEPS and I > FUSE_MAX_INPUT


@njit(**HELPER)
def _rnn_units(gx, k, b, d, f, bound, h, yrow, std):
    """New hidden state into h[b, d] and the output row ``yrow`` (see ``_lstm_units``)."""
    H = h.shape[2]
    for j in range(H):
        hn = rnn_unit(gx[b, k, j], f, bound, std)
        h[b, d, j] = hn
        yrow[j] = hn


def _peepholes(peep, d, H, j):
    """Unit j's peephole weights ``(p_i, p_o, p_f)`` from ``peep (D, 3H)``, or Nones when it is None."""


@overload(_peepholes, inline="always")
def _ol_peepholes(peep, d, H, j):
    if isinstance(peep, nbtypes.NoneType):
        return lambda peep, d, H, j: (None, None, None)
    return lambda peep, d, H, j: (peep[d, j], peep[d, H + j], peep[d, 2 * H + j])


@njit(**HELPER)
def _lstm_units(gx, k, b, d, c, out, out2, peep, fa, ga, ha, bound, coupled, std):
    """New cell state into c[b, d], new (unprojected) hidden values into ``out`` and ``out2``.

    Two outputs: see ``lstm_sequence`` for which rows they are. ``peep``: (D, 3H) or None.
    """
    H = c.shape[2]
    for j in range(H):
        _lstm_unit_at(gx, k, b, d, c, out, out2, peep, fa, ga, ha, bound, coupled, std, j)


@njit(**HELPER)
def _lstm_units_paired(gx, k, b, d, c, out, out2, peep, fa, ga, ha, bound, coupled, std):
    """``_lstm_units`` with units j and j + H/2 side by side (H even): the same values.

    In a vectorised loop each iteration then computes two blocks of units, and every
    constant of the activations' polynomials, broadcast once, serves both: there are more
    of them than vector registers, so they are broadcast again in every iteration
    (``PAIRED``).
    """
    half = c.shape[2] // 2
    for j in range(half):
        _lstm_unit_at(gx, k, b, d, c, out, out2, peep, fa, ga, ha, bound, coupled, std, j)
        _lstm_unit_at(gx, k, b, d, c, out, out2, peep, fa, ga, ha, bound, coupled, std, j + half)


@njit(**HELPER)
def _lstm_unit_at(gx, k, b, d, c, out, out2, peep, fa, ga, ha, bound, coupled, std, j):
    """Unit j of ``_lstm_units``."""
    H = c.shape[2]
    p_i, p_o, p_f = _peepholes(peep, d, H, j)
    hn, cn = lstm_unit(
        gx[b, k, j], gx[b, k, H + j], gx[b, k, 2 * H + j], gx[b, k, 3 * H + j],
        c[b, d, j], p_i, p_o, p_f, fa, ga, ha, bound, coupled, std,
    )
    c[b, d, j] = cn
    out[j] = hn
    out2[j] = hn


@njit(**HELPER)
def _gru_gates_lbr(gx, k, acc, b, rbh, fa, bound, std):
    """linear_before_reset=1: acc[b, 0, :H] <- z, acc[b, 0, H:2H] <- candidate pre-activation."""
    H = rbh.shape[0]
    for j in range(H):
        z = gru_gate(gx[b, k, j] + acc[b, 0, j], fa, bound, std)
        r = gru_gate(gx[b, k, H + j] + acc[b, 0, H + j], fa, bound, std)
        acc[b, 0, H + j] = gx[b, k, 2 * H + j] + r * (acc[b, 0, 2 * H + j] + rbh[j])
        acc[b, 0, j] = z


@njit(**HELPER)
def _gru_gates_zr(gx, k, acc, b, d, h, rh, fa, bound, std):
    """linear_before_reset=0, first half: acc[b, 0, :H] <- z, rh[b, 0] <- r * h."""
    H = h.shape[2]
    for j in range(H):
        z = gru_gate(gx[b, k, j] + acc[b, 0, j], fa, bound, std)
        r = gru_gate(gx[b, k, H + j] + acc[b, 0, H + j], fa, bound, std)
        acc[b, 0, j] = z
        rh[b, 0, j] = r * h[b, d, j]


@njit(**HELPER)
def _gru_units(acc, b, d, ga, bound, h, yrow, std):
    """New hidden state into h[b, d] and ``yrow``; acc[b, 0, :H] holds z, acc[b, 0, H:2H] the candidate."""
    H = h.shape[2]
    for j in range(H):
        hn = gru_unit(acc[b, 0, j], acc[b, 0, H + j], h[b, d, j], ga, bound, std)
        h[b, d, j] = hn
        yrow[j] = hn


@njit(**HELPER)
def _fix_sizes(x, W, Wp, R, Rp, h, gx, acc, m, G, H, I):
    """The arrays of a kernel sized for H units and I inputs, with those sizes as constants.

    Only for layers ``sized`` admits: W (D, I, GH) and R (D, H, GH) unpacked (empty panels),
    no projection. ``G``, ``H``, ``I`` must be compile-time constants (``UNITS``, ``INPUTS``).
    """
    GH = G * H
    # R's row count stays a run-time value unless its columns are whole register tiles:
    # the tile loop (``simd.tile_matvec``) then walks them with one-vector passes, and
    # with the rows known LLVM unrolls each pass and hoists every row's broadcast of h out
    # of the loop over passes, into spilled registers (RNN 1->32: 1.2x the time, where a
    # run-time count gives 0.8x). Whole tiles (LSTM 1->16, 1->32) gain from the constant.
    rows = H if GH % (TILE * LANES) == 0 else R.shape[1]
    return (assume_shape(x, (x.shape[0], x.shape[1], I)),
            assume_shape(W, (W.shape[0], I, GH)),
            assume_shape(Wp, (Wp.shape[0], 0, I, Wp.shape[3])),
            assume_shape(R, (R.shape[0], rows, GH)),
            assume_shape(Rp, (Rp.shape[0], 0, H, Rp.shape[3])),
            assume_shape(h, (h.shape[0], h.shape[1], H)),
            assume_shape(gx, (gx.shape[0], gx.shape[1], GH)),
            assume_shape(acc, (acc.shape[0], 1, GH)),
            assume_shape(m, (m.shape[0], 1, H)))


def _variant(kernel, name, **constants):
    """A second dispatcher compiled from ``kernel``'s source with some module constants changed.

    Numba reads module globals as compile-time constants and prunes an ``if`` on one
    before typing, so the copy never types, let alone compiles, the branch it cannot take.
    """
    fn = kernel.py_func
    scope = dict(fn.__globals__, **constants)
    copy = types.FunctionType(fn.__code__, scope, name, fn.__defaults__, fn.__closure__)
    copy.__qualname__ = name  # the numba cache is keyed by it: the copies must not collide
    copy.__doc__ = fn.__doc__
    return njit(**RECURRENT)(copy)


# --- recurrent kernels ------------------------------------------------------------------


@njit(**RECURRENT)
def rnn_sequence(x, lengths, W, R, Wp, Rp, V, cfg, d, h, y, gx, acc, m):
    """Elman RNN over x for one direction ``d``; see the module docstring for shapes."""
    if UNITS:  # a sized variant
        x, W, Wp, R, Rp, h, gx, acc, m = _fix_sizes(x, W, Wp, R, Rp, h, gx, acc, m, 1, UNITS, INPUTS)
    B, T, _ = x.shape
    Hr = R.shape[1]
    GH = R.shape[2]
    H = GH
    cf = cfg[d]
    f = cf[CFG_F:CFG_F + 3]
    bound = cf[CFG_CLIP]
    reverse = cf[CFG_REVERSE] != 0
    y_off = int(cf[CFG_YOFF])
    v = V[d]
    bias = v[0:GH]
    sW = v[GH + 4 * H:2 * GH + 4 * H]
    sR = v[2 * GH + 4 * H:3 * GH + 4 * H]
    Wd = W[d]
    Rd = R[d]
    Wpd = Wp[d]
    Rpd = Rp[d]
    TC = gx.shape[1]
    fused = not HOIST
    for s0 in range(0, T, TC):
        n = min(TC, T - s0)
        if HOIST:
            _hoist(x, Wd, Wpd, bias, sW, lengths, s0, n, reverse, gx)
        for o in range(n if BATCHED else B):  # the loop order: see BATCHED
            if BATCHED:
                _gates_batch(x, _time(s0 + o, T, reverse), h, d, Wd, Rd, Wpd, Rpd, bias, sW, sR, gx, o, acc,
                             fused)
            for i in range(B if BATCHED else n):
                b, k = (i, o) if BATCHED else (o, i)
                t = _time(s0 + k, T, reverse)
                if t >= lengths[b]:
                    _pad(y, b, t, y_off, Hr)
                    continue
                if not BATCHED:
                    _gates(x, t, h, d, Wd, Rd, Wpd, Rpd, bias, sW, sR, gx, k, acc, b, fused)
                _rnn_units(gx, k, b, d, f, bound, h, y[b, t, y_off:y_off + Hr], DEFAULT_ACTS)


@njit(**RECURRENT)
def lstm_sequence(x, lengths, W, R, Wp, Rp, proj, peep, V, cfg, d, h, c, y, gx, acc, m):
    """LSTM (peepholes, coupled gates, clip, projection) over x for direction ``d``."""
    if UNITS:  # a sized variant
        x, W, Wp, R, Rp, h, gx, acc, m = _fix_sizes(x, W, Wp, R, Rp, h, gx, acc, m, 4, UNITS, INPUTS)
        c = assume_shape(c, (c.shape[0], c.shape[1], UNITS))
    B, T, _ = x.shape
    Hr = R.shape[1]
    GH = R.shape[2]
    H = GH // 4
    cf = cfg[d]
    fa = cf[CFG_F:CFG_F + 3]
    ga = cf[CFG_G:CFG_G + 3]
    ha = cf[CFG_H:CFG_H + 3]
    bound = cf[CFG_CLIP]
    coupled = cf[CFG_COUPLED] != 0
    reverse = cf[CFG_REVERSE] != 0
    y_off = int(cf[CFG_YOFF])
    v = V[d]
    bias = v[0:GH]
    sW = v[GH + 4 * H:2 * GH + 4 * H]
    sR = v[2 * GH + 4 * H:3 * GH + 4 * H]
    sP = v[3 * GH + 4 * H:3 * GH + 4 * H + Hr]
    Wd = W[d]
    Rd = R[d]
    Wpd = Wp[d]
    Rpd = Rp[d]
    TC = gx.shape[1]
    fused = not HOIST
    # The unit loop writes each hidden value twice: without a projection into h and the
    # output row at once (a separate copy loop is a call to memcpy); with one into m and
    # into a row of acc, dead by then, before m is projected into h and h copied to y.
    # Not into m twice: LLVM's run-time overlap check would then fail every step and
    # send the loop to its scalar version (a projected LSTM ran 2-4x slower).
    # ``proj is None`` is decided by the argument's type, before typing (numba prunes the
    # branches), so a model without a projection compiles none of its code (an eighth of
    # the kernel's cold compile; benchmarks/compile_cost.py). ``peep`` None likewise
    # compiles the unit loop without peephole terms (``cells.math.peephole``).
    hm = h if proj is None else m
    hm_d = d if proj is None else 0
    for s0 in range(0, T, TC):
        n = min(TC, T - s0)
        if HOIST:
            _hoist(x, Wd, Wpd, bias, sW, lengths, s0, n, reverse, gx)
        for o in range(n if BATCHED else B):  # the loop order: see BATCHED
            if BATCHED:
                _gates_batch(x, _time(s0 + o, T, reverse), h, d, Wd, Rd, Wpd, Rpd, bias, sW, sR, gx, o, acc,
                             fused)
            for i in range(B if BATCHED else n):
                b, k = (i, o) if BATCHED else (o, i)
                t = _time(s0 + k, T, reverse)
                if t >= lengths[b]:
                    _pad(y, b, t, y_off, Hr)
                    continue
                if not BATCHED:
                    _gates(x, t, h, d, Wd, Rd, Wpd, Rpd, bias, sW, sR, gx, k, acc, b, fused)
                out2 = y[b, t, y_off:y_off + Hr] if proj is None else acc[b, 0, 0:H]
                if PAIRED:
                    _lstm_units_paired(gx, k, b, d, c, hm[b, hm_d], out2, peep, fa, ga, ha, bound, coupled,
                                       DEFAULT_ACTS)
                else:
                    _lstm_units(gx, k, b, d, c, hm[b, hm_d], out2, peep, fa, ga, ha, bound, coupled, DEFAULT_ACTS)
                if proj is not None:
                    _matvec(m, b, 0, proj[d], sP, None, h, b, d, 0, Hr)
                    _emit(h, b, d, y, t, y_off, Hr)


@njit(**RECURRENT)
def gru_sequence(x, lengths, W, R, Wp, Rp, V, cfg, d, h, y, gx, acc, m):
    """GRU (linear_before_reset 0 or 1, clip) over x for direction ``d``."""
    if UNITS:  # a sized variant
        x, W, Wp, R, Rp, h, gx, acc, m = _fix_sizes(x, W, Wp, R, Rp, h, gx, acc, m, 3, UNITS, INPUTS)
    B, T, _ = x.shape
    Hr = R.shape[1]
    GH = R.shape[2]
    H = GH // 3
    cf = cfg[d]
    fa = cf[CFG_F:CFG_F + 3]
    ga = cf[CFG_G:CFG_G + 3]
    bound = cf[CFG_CLIP]
    lbr = cf[CFG_LBR] != 0
    reverse = cf[CFG_REVERSE] != 0
    y_off = int(cf[CFG_YOFF])
    v = V[d]
    bias = v[0:GH]
    rbh = v[GH:GH + H]
    sW = v[GH + 4 * H:2 * GH + 4 * H]
    sR = v[2 * GH + 4 * H:3 * GH + 4 * H]
    Wd = W[d]
    Rd = R[d]
    Wpd = Wp[d]
    Rpd = Rp[d]
    TC = gx.shape[1]
    rh = m  # r * h, shaped like h for _matvec_p
    for s0 in range(0, T, TC):
        n = min(TC, T - s0)
        _hoist(x, Wd, Wpd, bias, sW, lengths, s0, n, reverse, gx)
        for o in range(n if BATCHED else B):  # the loop order: see BATCHED
            if BATCHED:
                # each phase for all streams at once, each walking R once (see _panel_acc)
                t = _time(s0 + o, T, reverse)
                _rows_product(h, 0, d, 1, 0, Rd, Rpd, sR, None, acc, 0, 0, 1, 0, B, 0, GH if lbr else 2 * H)
                for b in range(B):
                    if t < lengths[b]:
                        if lbr:
                            _gru_gates_lbr(gx, o, acc, b, rbh, fa, bound, DEFAULT_ACTS)
                        else:
                            _gru_gates_zr(gx, o, acc, b, d, h, rh, fa, bound, DEFAULT_ACTS)
                if not lbr:
                    _rows_product(rh, 0, 0, 1, 0, Rd, Rpd, sR, None, acc, 0, 0, 1, 0, B, 2 * H, H)
            for i in range(B if BATCHED else n):
                b, k = (i, o) if BATCHED else (o, i)
                t = _time(s0 + k, T, reverse)
                if t >= lengths[b]:
                    _pad(y, b, t, y_off, Hr)
                    continue
                if lbr:
                    # every gate's recurrent product at once; r scales (h·Rh + Rbh)
                    if not BATCHED:
                        _matvec_p(h, b, d, Rd, Rpd, sR, None, acc, b, 0, 0, GH)
                        _gru_gates_lbr(gx, k, acc, b, rbh, fa, bound, DEFAULT_ACTS)
                else:
                    # z and r first, then (r * h)·Rh
                    if not BATCHED:
                        _matvec_p(h, b, d, Rd, Rpd, sR, None, acc, b, 0, 0, 2 * H)
                        _gru_gates_zr(gx, k, acc, b, d, h, rh, fa, bound, DEFAULT_ACTS)
                        _matvec_p(rh, b, 0, Rd, Rpd, sR, None, acc, b, 0, 2 * H, H)
                    for j in range(H):
                        acc[b, 0, H + j] = gx[b, k, 2 * H + j] + acc[b, 0, 2 * H + j]
                _gru_units(acc, b, d, ga, bound, h, y[b, t, y_off:y_off + Hr], DEFAULT_ACTS)


# (cell, default activations?, batched order?, hoisted?) -> the kernel a layer's direction
# runs; a GRU hoists always, so its two "hoisted" entries are the same kernels.
SEQUENCE_KERNELS = {}
for _cell, _kernel in (("rnn", rnn_sequence), ("lstm", lstm_sequence), ("gru", gru_sequence)):
    for _std, _batched, _hoist_it in itertools.product((True, False), (False, True), (False, True)):
        if _cell == "gru" and _hoist_it:
            SEQUENCE_KERNELS[_cell, _std, _batched, True] = SEQUENCE_KERNELS[_cell, _std, _batched, False]
            continue
        _name = (_kernel.__name__ + ("" if _std else "_any") + ("_batched" if _batched else "")
                 + ("_hoisted" if _hoist_it else ""))
        SEQUENCE_KERNELS[_cell, _std, _batched, _hoist_it] = (
            _kernel if _std and not (_batched or _hoist_it)
            else _variant(_kernel, _name, DEFAULT_ACTS=_std, BATCHED=_batched, HOIST=_hoist_it))
del _cell, _kernel, _std, _batched, _hoist_it, _name
_SIZED = {}  # (cell, UNITS, INPUTS) -> a sized variant, made on first use


def sequence_kernel(cell: str, std: bool, batched: bool, hoist: bool, units: int = 0, inputs: int = 0):
    """The recurrent kernel for a layer's direction: ``SEQUENCE_KERNELS``' entry, or with
    ``units`` the variant sized for ``units`` and ``inputs`` (from ``sized``; see UNITS)."""
    if not units:
        return SEQUENCE_KERNELS[cell, std, batched, hoist]
    key = (cell, units, inputs)
    if key not in _SIZED:
        base = SEQUENCE_KERNELS[cell, True, False, False]
        _SIZED[key] = _variant(base, f"{base.__name__}_h{units}_i{inputs}", UNITS=units, INPUTS=inputs,
                               PAIRED=cell == "lstm" and units % 16 == 0)
    return _SIZED[key]


# --- feed-forward kernels ---------------------------------------------------------------


@njit(**KERNEL)
def dense(x, W, bias, scale, y):
    """y (N, O) = x (N, I) @ W (I, O) * scale + bias; scale is used for int8 W only."""
    N, I = x.shape
    O = y.shape[1]
    x3 = x.reshape((N, 1, I))
    y3 = y.reshape((N, 1, O))
    for n in range(N):
        _matvec(x3, n, 0, W, scale, bias, y3, n, 0, 0, O)


@njit(**KERNEL)
def embedding(ids, table, scale, y):
    """y (N, D) = table[ids] (N,), each row times its scale for int8 tables."""
    D = y.shape[1]
    for n in range(ids.shape[0]):
        src = table[ids[n]]
        dst = y[n]
        if scaled(table[0, 0]):
            s = scale[ids[n]]
            for j in range(D):
                dst[j] = load(src[j]) * s
        else:
            for j in range(D):
                dst[j] = load(src[j])


@njit(**KERNEL)
def activation(x, a, y):
    """y = activation a ([code, alpha, beta]) of x, both flat float32."""
    for i in range(x.shape[0]):
        y[i] = act(x[i], a)


@njit(**KERNEL)
def softmax(x, log, y):
    """Row-wise softmax (or log-softmax) of x (N, F) into y (N, F), max-subtracted."""
    N, F = x.shape
    for n in range(N):
        xr = x[n]
        yr = y[n]
        mx = xr[0]
        for j in range(1, F):
            if xr[j] > mx:
                mx = xr[j]
        total = np.float32(0.0)
        for j in range(F):
            e = np.exp(xr[j] - mx)
            yr[j] = e
            total += e
        if log:
            lt = np.log(total)
            for j in range(F):
                yr[j] = xr[j] - mx - lt
        else:
            inv = np.float32(1.0) / total
            for j in range(F):
                yr[j] *= inv
