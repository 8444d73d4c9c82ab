"""The CUDA backend: the same plans as ``tinyrnn.backends.cpu``, run by ``numba.cuda`` kernels.

This is the only module of the runtime that imports ``numba.cuda``; ``backends.load_cuda``
imports it when a user asks for ``device="cuda"``, never before.

What lives where:

* weights: the backend-neutral arrays of ``packing.prepare`` (float16 as uint16 bits, int8
  with float32 scales), uploaded once per model and cached on it;
* state: device arrays ``h (B, D, Hr)``, ``c (B, D, H)``, updated in place by the kernels;
* a plan's ``input`` and ``lengths`` are host arrays the caller fills (as on the CPU);
  ``run`` uploads them, launches one kernel per layer (per direction), and returns the
  device output, which ``to_host`` copies back.

Kernel design. One launch runs all T steps of a recurrent layer: a block owns up to ``SB``
streams, keeps their hidden state in shared memory (double-buffered through a second
shared row, so no thread reads a value another is overwriting) and loops over time with
``syncthreads`` between steps, so ``process`` and ``run`` never return to Python per step.
Threads take hidden units ``j`` (strided by the block size): thread j reads column j of
each gate's weights, so a warp's weight loads are coalesced, and each loaded weight serves
all of the block's streams from registers (register blocking over streams: the weight
traffic per step is divided by ``SB``). The gate math is the shared scalar code of
``tinyrnn.cells.math`` and ``weights.load`` (the same ``@njit`` functions the CPU kernels
call), applied in the product's epilogue: pre-activations never go to memory.

What this first version does not do (measure first, on a GPU): hoist the input product
out of the time loop as one matrix product for long ``run`` sequences, split a single
stream's hidden units over several blocks (for B = 1 one block does all the work), or keep
weight tiles in shared memory.

Sharing the math. The ``@njit(inline="always", error_model="numpy", cache=True)`` functions
of ``cells.math`` need no change to be called from ``@cuda.jit`` code: numba-cuda inlines
them at numba-IR level like the CPU does (``activate`` is compiled as a CUDA device
function), and the ``weights.load`` overload and its float16 intrinsic lower to NVVM as they
are (``fpext half`` becomes ``cvt.f32.f16``). The one exception is ``peephole``, whose CPU
overload is inlined at numba-IR level, which numba-cuda cannot lower: this module registers
the same implementation for the CUDA target (below), and a fast test compiles the cell math
through the real CUDA compiler (tests/test_cuda.py), since the simulator never does.
Kernels run under the CUDA simulator too (``NUMBA_ENABLE_CUDASIM=1``): there arrays inside
a kernel are Python objects numba's CPU ``@njit`` functions cannot take, which is why the
activation triples are copied into local arrays before the math is called.

Costs to know. Kernels compile on first use per weight dtype and are not cached on disk:
compiling to PTX took 20-30 s for the LSTM kernel and 15-20 s for the GRU one on the
2-core development machine (the RNN one 4 s). Layer types without a kernel here raise
``DeviceError`` when the plan is built (run those models with ``device="cpu"``).
"""

from __future__ import annotations

import math

import numpy as np

try:
    from numba import cuda, float32
except ImportError as e:  # pragma: no cover - depends on the machine
    raise ImportError(f"numba-cuda is not installed (pip install 'tinyrnn[cuda]'): {e}") from None

from numba.extending import overload

from ..cells.math import activate, gru_gate, gru_unit, lstm_unit, peephole, peephole_for, rnn_unit
from ..errors import DeviceError, InputError, NonFiniteError
from ..layers import Activation, Dense, Embedding, Recurrent, Softmax
from .packing import CFG_CLIP, CFG_COUPLED, CFG_F, CFG_G, CFG_H, CFG_LBR, CFG_PROJ, CFG_REVERSE, CFG_STD, CFG_YOFF
from .packing import prepare
from .weights import load

# ``lstm_unit``'s peephole terms on this target (see ``cells.math.peephole_for``)
overload(peephole, target="cuda")(peephole_for)

name = "cuda"

SB = 8  # most streams one block steps together (each weight read serves all of them)
MAX_THREADS = 256  # threads per block of a recurrent kernel
SHARED_BYTES = 48 * 1024  # shared memory a block may use without opting in to more
FLAT_THREADS = 128  # threads per block of the elementwise kernels
# The simulator runs every thread as a Python thread: launch no more than the work needs.
try:
    from numba.cuda.core.config import ENABLE_CUDASIM as SIMULATOR
except ImportError:  # pragma: no cover - older numba-cuda layouts
    from numba.core.config import ENABLE_CUDASIM as SIMULATOR
if SIMULATOR:
    FLAT_THREADS = 16


def check_available() -> None:
    """Raise ``DeviceError`` unless a CUDA GPU (or the simulator) can run kernels."""
    try:
        ok = cuda.is_available()
    except Exception as e:  # pragma: no cover - a broken driver install
        raise DeviceError(f"device='cuda': numba-cuda is installed but the CUDA driver failed: {e}") from None
    if not ok:
        raise DeviceError("device='cuda': numba-cuda is installed, but no CUDA GPU and driver were found on "
                          "this machine")


# --- recurrent kernels ------------------------------------------------------------------
# Shapes as in cpu_kernels' docstring: x (B, T, I) float32, lengths (B,) int64, W (D, I, GH),
# R (D, Hr, GH), proj (D, H, Hr), V (D, K), cfg (D, CFG_SIZE), h (B, D, Hr), c (B, D, H),
# y (B, T, Dout). ``nsb`` streams per block; dynamic shared memory as noted per kernel.


@cuda.jit(device=True)
def _triple(cfg, d, off, dst):
    """Copy the activation triple at cfg[d, off:off+3] into a local array (see module doc)."""
    dst[0] = cfg[d, off]
    dst[1] = cfg[d, off + 1]
    dst[2] = cfg[d, off + 2]


@cuda.jit(device=True)
def _load_state(h, d, b0, nb, sh, Hr):
    """Shared hs[s, :] <- h[b0 + s, d, :]."""
    for s in range(nb):
        for k in range(cuda.threadIdx.x, Hr, cuda.blockDim.x):
            sh[s * Hr + k] = h[b0 + s, d, k]


@cuda.jit(device=True)
def _commit(sh, o_new, n_new, h, d, b0, nb, lengths, y, t, y_off, Hr):
    """hs[s] <- new values (shared at o_new, row length n_new == Hr) and emit y; zeros for padding."""
    for r in range(cuda.threadIdx.x, Hr, cuda.blockDim.x):
        for s in range(nb):
            b = b0 + s
            if t < lengths[b]:
                v = sh[o_new + s * n_new + r]
                sh[s * Hr + r] = v
                y[b, t, y_off + r] = v
            else:
                y[b, t, y_off + r] = 0.0


@cuda.jit(device=True)
def _store_state(h, d, b0, nb, sh, Hr):
    for s in range(nb):
        for k in range(cuda.threadIdx.x, Hr, cuda.blockDim.x):
            h[b0 + s, d, k] = sh[s * Hr + k]


@cuda.jit
def rnn_kernel(x, lengths, W, R, V, cfg, d, h, y, nsb):
    """Elman RNN, one direction, all T steps. Shared: hs (nsb, H), new h (nsb, H)."""
    B = h.shape[0]
    T = x.shape[1]
    I = x.shape[2]
    H = R.shape[2]
    b0 = cuda.blockIdx.x * nsb
    nb = min(nsb, B - b0)
    sh = cuda.shared.array(0, float32)
    fa = cuda.local.array(3, float32)
    _triple(cfg, d, CFG_F, fa)
    bound = cfg[d, CFG_CLIP]
    reverse = cfg[d, CFG_REVERSE] != 0
    std = cfg[d, CFG_STD] != 0
    y_off = int(cfg[d, CFG_YOFF])
    o_sW = H + 4 * H
    o_sR = 2 * H + 4 * H
    o_new = nsb * H
    ax = cuda.local.array(SB, float32)
    ah = cuda.local.array(SB, float32)
    _load_state(h, d, b0, nb, sh, H)
    cuda.syncthreads()
    for step in range(T):
        t = T - 1 - step if reverse else step
        for j in range(cuda.threadIdx.x, H, cuda.blockDim.x):
            for s in range(SB):
                ax[s] = 0.0
                ah[s] = 0.0
            for i in range(I):
                w = load(W[d, i, j])
                for s in range(SB):
                    if s < nb:
                        ax[s] += x[b0 + s, t, i] * w
            for k in range(H):
                r = load(R[d, k, j])
                for s in range(SB):
                    if s < nb:
                        ah[s] += sh[s * H + k] * r
            for s in range(SB):
                if s < nb and t < lengths[b0 + s]:
                    pre = ax[s] * V[d, o_sW + j] + V[d, j] + ah[s] * V[d, o_sR + j]
                    sh[o_new + s * H + j] = rnn_unit(pre, fa, bound, std)
        cuda.syncthreads()
        _commit(sh, o_new, H, h, d, b0, nb, lengths, y, t, y_off, H)
        cuda.syncthreads()
    _store_state(h, d, b0, nb, sh, H)


@cuda.jit
def lstm_kernel(x, lengths, W, R, proj, V, cfg, d, h, c, y, nsb):
    """LSTM (peepholes, coupled, clip, projection), one direction, all T steps.

    Shared: hs (nsb, Hr), m (nsb, H) the unprojected new hidden values, new h (nsb, Hr)
    when projecting. The cell state stays in global memory: each thread owns its units'.
    """
    B = h.shape[0]
    T = x.shape[1]
    I = x.shape[2]
    Hr = R.shape[1]
    GH = R.shape[2]
    H = GH // 4
    b0 = cuda.blockIdx.x * nsb
    nb = min(nsb, B - b0)
    sh = cuda.shared.array(0, float32)
    fa = cuda.local.array(3, float32)
    ga = cuda.local.array(3, float32)
    ha = cuda.local.array(3, float32)
    _triple(cfg, d, CFG_F, fa)
    _triple(cfg, d, CFG_G, ga)
    _triple(cfg, d, CFG_H, ha)
    bound = cfg[d, CFG_CLIP]
    coupled = cfg[d, CFG_COUPLED] != 0
    has_proj = cfg[d, CFG_PROJ] != 0
    reverse = cfg[d, CFG_REVERSE] != 0
    std = cfg[d, CFG_STD] != 0
    y_off = int(cfg[d, CFG_YOFF])
    o_peep = GH + H
    o_sW = GH + 4 * H
    o_sR = 2 * GH + 4 * H
    o_sP = 3 * GH + 4 * H
    o_m = nsb * Hr
    o_new = o_m + nsb * H
    ax = cuda.local.array((SB, 4), float32)
    ah = cuda.local.array((SB, 4), float32)
    _load_state(h, d, b0, nb, sh, Hr)
    cuda.syncthreads()
    for step in range(T):
        t = T - 1 - step if reverse else step
        for j in range(cuda.threadIdx.x, H, cuda.blockDim.x):
            for s in range(SB):
                for g in range(4):
                    ax[s, g] = 0.0
                    ah[s, g] = 0.0
            for i in range(I):
                w0 = load(W[d, i, j])
                w1 = load(W[d, i, H + j])
                w2 = load(W[d, i, 2 * H + j])
                w3 = load(W[d, i, 3 * H + j])
                for s in range(SB):
                    if s < nb:
                        xv = x[b0 + s, t, i]
                        ax[s, 0] += xv * w0
                        ax[s, 1] += xv * w1
                        ax[s, 2] += xv * w2
                        ax[s, 3] += xv * w3
            for k in range(Hr):
                r0 = load(R[d, k, j])
                r1 = load(R[d, k, H + j])
                r2 = load(R[d, k, 2 * H + j])
                r3 = load(R[d, k, 3 * H + j])
                for s in range(SB):
                    if s < nb:
                        hv = sh[s * Hr + k]
                        ah[s, 0] += hv * r0
                        ah[s, 1] += hv * r1
                        ah[s, 2] += hv * r2
                        ah[s, 3] += hv * r3
            for s in range(SB):
                if s < nb and t < lengths[b0 + s]:
                    b = b0 + s
                    p_i = ax[s, 0] * V[d, o_sW + j] + V[d, j] + ah[s, 0] * V[d, o_sR + j]
                    p_o = ax[s, 1] * V[d, o_sW + H + j] + V[d, H + j] + ah[s, 1] * V[d, o_sR + H + j]
                    p_f = ax[s, 2] * V[d, o_sW + 2 * H + j] + V[d, 2 * H + j] + ah[s, 2] * V[d, o_sR + 2 * H + j]
                    p_c = ax[s, 3] * V[d, o_sW + 3 * H + j] + V[d, 3 * H + j] + ah[s, 3] * V[d, o_sR + 3 * H + j]
                    hn, cn = lstm_unit(p_i, p_o, p_f, p_c, c[b, d, j], V[d, o_peep + j], V[d, o_peep + H + j],
                                       V[d, o_peep + 2 * H + j], fa, ga, ha, bound, coupled, std)
                    c[b, d, j] = cn
                    sh[o_m + s * H + j] = hn
        cuda.syncthreads()
        if has_proj:
            for r in range(cuda.threadIdx.x, Hr, cuda.blockDim.x):
                for s in range(SB):
                    ax[s, 0] = 0.0
                for j in range(H):
                    p = load(proj[d, j, r])
                    for s in range(SB):
                        if s < nb:
                            ax[s, 0] += sh[o_m + s * H + j] * p
                for s in range(SB):
                    if s < nb:
                        sh[o_new + s * Hr + r] = ax[s, 0] * V[d, o_sP + r]
            cuda.syncthreads()
            _commit(sh, o_new, Hr, h, d, b0, nb, lengths, y, t, y_off, Hr)
        else:
            _commit(sh, o_m, H, h, d, b0, nb, lengths, y, t, y_off, Hr)
        cuda.syncthreads()
    _store_state(h, d, b0, nb, sh, Hr)


@cuda.jit
def gru_kernel(x, lengths, W, R, V, cfg, d, h, y, nsb):
    """GRU (linear_before_reset 0 or 1, clip), one direction, all T steps.

    Shared: hs, new h, and for linear_before_reset=0 also z, the candidate's input part
    and r * h, each (nsb, H).
    """
    B = h.shape[0]
    T = x.shape[1]
    I = x.shape[2]
    GH = R.shape[2]
    H = GH // 3
    b0 = cuda.blockIdx.x * nsb
    nb = min(nsb, B - b0)
    sh = cuda.shared.array(0, float32)
    fa = cuda.local.array(3, float32)
    ga = cuda.local.array(3, float32)
    _triple(cfg, d, CFG_F, fa)
    _triple(cfg, d, CFG_G, ga)
    bound = cfg[d, CFG_CLIP]
    lbr = cfg[d, CFG_LBR] != 0
    reverse = cfg[d, CFG_REVERSE] != 0
    std = cfg[d, CFG_STD] != 0
    y_off = int(cfg[d, CFG_YOFF])
    o_rbh = GH
    o_sW = GH + 4 * H
    o_sR = 2 * GH + 4 * H
    n = nsb * H
    o_new = n
    o_z = 2 * n
    o_xn = 3 * n
    o_rh = 4 * n
    ax = cuda.local.array((SB, 3), float32)
    ah = cuda.local.array((SB, 3), float32)
    _load_state(h, d, b0, nb, sh, H)
    cuda.syncthreads()
    for step in range(T):
        t = T - 1 - step if reverse else step
        for j in range(cuda.threadIdx.x, H, cuda.blockDim.x):
            for s in range(SB):
                for g in range(3):
                    ax[s, g] = 0.0
                    ah[s, g] = 0.0
            for i in range(I):
                w0 = load(W[d, i, j])
                w1 = load(W[d, i, H + j])
                w2 = load(W[d, i, 2 * H + j])
                for s in range(SB):
                    if s < nb:
                        xv = x[b0 + s, t, i]
                        ax[s, 0] += xv * w0
                        ax[s, 1] += xv * w1
                        ax[s, 2] += xv * w2
            for k in range(H):
                r0 = load(R[d, k, j])
                r1 = load(R[d, k, H + j])
                r2 = load(R[d, k, 2 * H + j]) if lbr else float32(0.0)
                for s in range(SB):
                    if s < nb:
                        hv = sh[s * H + k]
                        ah[s, 0] += hv * r0
                        ah[s, 1] += hv * r1
                        ah[s, 2] += hv * r2
            for s in range(SB):
                if s < nb and t < lengths[b0 + s]:
                    z = gru_gate(ax[s, 0] * V[d, o_sW + j] + V[d, j] + ah[s, 0] * V[d, o_sR + j], fa, bound, std)
                    r = gru_gate(ax[s, 1] * V[d, o_sW + H + j] + V[d, H + j] + ah[s, 1] * V[d, o_sR + H + j],
                                 fa, bound, std)
                    xn = ax[s, 2] * V[d, o_sW + 2 * H + j] + V[d, 2 * H + j]
                    hp = sh[s * H + j]
                    if lbr:
                        npre = xn + r * (ah[s, 2] * V[d, o_sR + 2 * H + j] + V[d, o_rbh + j])
                        sh[o_new + s * H + j] = gru_unit(z, npre, hp, ga, bound, std)
                    else:
                        sh[o_z + s * H + j] = z
                        sh[o_xn + s * H + j] = xn
                        sh[o_rh + s * H + j] = r * hp
        cuda.syncthreads()
        if not lbr:
            # the candidate needs (r * h)·Rh over every unit: a second pass after a barrier
            for j in range(cuda.threadIdx.x, H, cuda.blockDim.x):
                for s in range(SB):
                    ah[s, 2] = 0.0
                for k in range(H):
                    r2 = load(R[d, k, 2 * H + j])
                    for s in range(SB):
                        if s < nb:
                            ah[s, 2] += sh[o_rh + s * H + k] * r2
                for s in range(SB):
                    if s < nb and t < lengths[b0 + s]:
                        npre = sh[o_xn + s * H + j] + ah[s, 2] * V[d, o_sR + 2 * H + j]
                        sh[o_new + s * H + j] = gru_unit(sh[o_z + s * H + j], npre, sh[s * H + j], ga, bound, std)
            cuda.syncthreads()
        _commit(sh, o_new, H, h, d, b0, nb, lengths, y, t, y_off, H)
        cuda.syncthreads()
    _store_state(h, d, b0, nb, sh, H)


# --- feed-forward kernels (one thread per output value) ---------------------------------


@cuda.jit
def dense_kernel(x, W, bias, scale, y):
    """y (N, O) = x (N, I) @ W (I, O) * scale + bias (scale is ones for float W)."""
    idx = cuda.grid(1)
    N = y.shape[0]
    O = y.shape[1]
    if idx < N * O:
        n = idx // O
        o = idx - n * O
        acc = float32(0.0)
        for i in range(x.shape[1]):
            acc += x[n, i] * load(W[i, o])
        y[n, o] = acc * scale[o] + bias[o]


@cuda.jit
def embedding_kernel(ids, table, scale, y):
    """y (N, D) = table[ids] * scale[ids]; ids were range-checked on the host."""
    idx = cuda.grid(1)
    N = y.shape[0]
    D = y.shape[1]
    if idx < N * D:
        n = idx // D
        j = idx - n * D
        t = ids[n]
        if 0 <= t < table.shape[0]:  # never read outside the table, whatever reached us
            y[n, j] = load(table[t, j]) * scale[t]
        else:
            y[n, j] = math.nan


@cuda.jit
def activation_kernel(x, a, y):
    """y = activation [code, alpha, beta] of x, both flat."""
    i = cuda.grid(1)
    if i < x.shape[0]:
        y[i] = activate(x[i], int(a[0]), a[1], a[2])


@cuda.jit
def softmax_kernel(x, log, y):
    """Row-wise softmax (log-softmax when ``log``) of x (N, F), one thread per row."""
    n = cuda.grid(1)
    if n < x.shape[0]:
        F = x.shape[1]
        mx = x[n, 0]
        for j in range(1, F):
            if x[n, j] > mx:
                mx = x[n, j]
        total = float32(0.0)
        for j in range(F):
            e = math.exp(x[n, j] - mx)
            y[n, j] = e
            total += e
        if log:
            lt = math.log(total)
            for j in range(F):
                y[n, j] = x[n, j] - mx - lt
        else:
            inv = float32(1.0) / total
            for j in range(F):
                y[n, j] *= inv


# --- plans ------------------------------------------------------------------------------


def _blocks(n: int, per: int) -> int:
    return max(1, (n + per - 1) // per)


def recurrent_launch(layer, batch: int) -> tuple[int, int, int, int]:
    """``(blocks, threads, shared_bytes, nsb)`` for a recurrent layer over ``batch`` streams.

    Raises ``DeviceError`` when even one stream's state does not fit in shared memory.
    """
    H, Hr = layer.hidden_size, layer.recurrent_size
    if layer.cell == "lstm":
        per = Hr + H + (Hr if layer.proj_size else 0)
    elif layer.cell == "gru":
        per = 2 * H if layer.linear_before_reset else 5 * H
    else:
        per = 2 * H
    nsb = min(SB, batch, SHARED_BYTES // (4 * per))
    if nsb < 1:
        raise DeviceError(f"layer {layer.name!r}: hidden size {H} needs {4 * per} bytes of shared memory per "
                          f"stream; the CUDA kernels support at most {SHARED_BYTES}")
    # whole warps on a GPU; the simulator gets exactly one thread per unit
    threads = min(MAX_THREADS, max(H, Hr) if SIMULATOR else max(32, -(-max(H, Hr) // 32) * 32))
    return _blocks(batch, nsb), threads, 4 * per * nsb, nsb


def _upload(prep: dict) -> dict:
    return {k: cuda.to_device(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v for k, v in prep.items()}


def prepared(model) -> list[dict]:
    """Device copies of every layer's kernel arrays, uploaded once per model."""
    cache = model._backend_cache
    if "cuda" not in cache:
        cache["cuda"] = [_upload(prepare(layer)) for layer in model.layers]
    return cache["cuda"]


class Plan:
    """Device buffers and configured launches for B streams and T steps.

    ``input`` and ``lengths`` are host arrays the caller fills; ``output`` is a device array.
    """

    __slots__ = ("calls", "input", "output", "lengths", "batch", "steps", "d_input", "d_lengths", "_sent")

    def __init__(self, calls, input, d_input, output, lengths, d_lengths, batch, steps):
        self.calls = [(kernel[grid, block, 0, shared], args) for kernel, grid, block, shared, args in calls]
        self.input = input  # host (B, T, *F) float32 or (B, T) int64
        self.d_input = d_input  # its device twin
        self.output = output  # device (B, T, *out) float32
        self.lengths = lengths  # host (B,) int64
        self.d_lengths = d_lengths
        self._sent = lengths.copy()  # what the device holds, to upload lengths only on change
        self.batch = batch
        self.steps = steps

    def run(self, upload: bool = True):
        """Upload the input (unless the caller already put it on the device), launch every
        kernel, return the device output (overwritten by the next run)."""
        if upload:
            self.d_input.copy_to_device(self.input)
        if not np.array_equal(self._sent, self.lengths):
            self.d_lengths.copy_to_device(self.lengths)
            self._sent[:] = self.lengths
        for launch, args in self.calls:
            launch(*args)
        return self.output


def new_state(model, batch: int) -> dict:
    """Zero device state for every recurrent layer: ``{layer: {"h": (B, D, Hr), "c": ...}}``."""
    return {
        layer.name: {k: cuda.to_device(np.zeros((batch, *shape), np.float32))
                     for k, shape in layer.state_shapes().items()}
        for layer in model.layers if layer.stateful
    }


def build_plan(model, batch: int, steps: int, state: dict) -> Plan:
    """Allocate device buffers and configure launches for ``batch`` streams over ``steps``
    steps; ``state`` comes from ``new_state`` and is updated in place. Raises
    ``DeviceError`` for a layer the CUDA backend cannot run."""
    B, T = batch, steps
    # page-locked, so the per-step upload is one DMA without a staging copy
    if model.input.tokens:
        inp = cuda.pinned_array((B, T), np.int64)
    else:
        inp = cuda.pinned_array((B, T, *model.input.shape), np.float32)
    inp.fill(0)
    d_inp = cuda.to_device(inp)
    lengths = np.full(B, T, np.int64)
    d_lengths = cuda.to_device(lengths)
    values = {"input": d_inp}
    calls = []
    for layer, prep in zip(model.layers, prepared(model)):
        x = values[layer.inputs[0]]
        feat = model.shapes[layer.name]
        y = cuda.device_array((B, T, *feat), np.float32)
        values[layer.name] = y
        width = int(np.prod(feat, dtype=np.int64))
        N = B * T
        if isinstance(layer, Recurrent):
            st = state[layer.name]
            grid, threads, shared, nsb = recurrent_launch(layer, B)
            for d in range(layer.num_directions):
                if layer.cell == "lstm":
                    args = (x, d_lengths, prep["W"], prep["R"], prep["proj"], prep["V"], prep["cfg"], d,
                            st["h"], st["c"], y, nsb)
                    calls.append((lstm_kernel, grid, threads, shared, args))
                elif layer.cell == "gru":
                    args = (x, d_lengths, prep["W"], prep["R"], prep["V"], prep["cfg"], d, st["h"], y, nsb)
                    calls.append((gru_kernel, grid, threads, shared, args))
                else:
                    args = (x, d_lengths, prep["W"], prep["R"], prep["V"], prep["cfg"], d, st["h"], y, nsb)
                    calls.append((rnn_kernel, grid, threads, shared, args))
        elif isinstance(layer, Dense):
            args = (x.reshape(N, layer.in_features), prep["W"], prep["b"], prep["scale"], y.reshape(N, width))
            calls.append((dense_kernel, _blocks(N * width, FLAT_THREADS), FLAT_THREADS, 0, args))
        elif isinstance(layer, Embedding):
            args = (x.reshape(N), prep["table"], prep["scale"], y.reshape(N, width))
            calls.append((embedding_kernel, _blocks(N * width, FLAT_THREADS), FLAT_THREADS, 0, args))
        elif isinstance(layer, Activation):
            args = (x.reshape(N * width), prep["a"], y.reshape(N * width))
            calls.append((activation_kernel, _blocks(N * width, FLAT_THREADS), FLAT_THREADS, 0, args))
        elif isinstance(layer, Softmax):
            F = feat[-1]
            rows = N * width // F
            args = (x.reshape(rows, F), bool(prep["log"]), y.reshape(rows, F))
            calls.append((softmax_kernel, _blocks(rows, FLAT_THREADS), FLAT_THREADS, 0, args))
        else:
            raise DeviceError(f"layer {layer.name!r} of type {layer.type!r} has no CUDA kernel; run this model "
                              f"with device='cpu'")
    return Plan(calls, inp, d_inp, values[model.output], lengths, d_lengths, B, T)


# --- the rest of the backend interface (what Model and Stream call) ----------------------


def run_plan(plan: Plan):
    """Run a plan; returns its device output buffer."""
    return plan.run()


def run_plan_into(plan: Plan, out: np.ndarray) -> None:
    """Run a plan, copying its output into host array ``out`` (shaped like the plan's output)."""
    out[...] = to_host(run_plan(plan), copy=False)


def to_host(arr, copy: bool) -> np.ndarray:
    """A numpy copy of device array ``arr`` (always a new array, whatever ``copy`` says)."""
    if isinstance(arr, np.ndarray):
        return arr.copy() if copy else arr
    return arr.copy_to_host()


def copy_in(dst, src: np.ndarray) -> None:
    """Overwrite device array ``dst`` with host array ``src`` (same shape)."""
    dst.copy_to_device(np.ascontiguousarray(src, np.float32))


def zero(arr, i: int | None) -> None:
    """Zero a device state array, or only stream ``i``'s slice of it."""
    part = arr if i is None else arr[i]
    part.copy_to_device(np.zeros(part.shape, np.float32))


# --- device arrays in and out of Stream.step ----------------------------------------------


def is_device_array(a) -> bool:
    """True for a GPU array: anything exposing ``__cuda_array_interface__`` (numba, CuPy,
    PyTorch), or one of numba's device arrays (the simulator's have no such interface)."""
    return hasattr(a, "__cuda_array_interface__") or type(a).__module__.startswith(_DEVICE_ARRAY_MODULES)


_DEVICE_ARRAY_MODULES = ("numba.cuda.cudadrv.devicearray", "numba.cuda.simulator.cudadrv.devicearray")


def _as_device(a):
    """A numba device-array view of GPU array ``a`` (no copy)."""
    if type(a).__module__.startswith(_DEVICE_ARRAY_MODULES):
        return a
    return cuda.as_cuda_array(a)


def load_device_input(plan: Plan, x, shape: tuple, model, check_finite: bool) -> None:
    """Put device array ``x`` (the step input, ``shape`` in the caller's layout) into the
    plan's device input with one device-to-device copy; the host is not involved.

    Float inputs must be float32 of exactly ``shape`` and C-contiguous. Token ids (and any
    input when ``check_finite``) are copied to the host to be validated first: an id out of
    range must not reach a kernel. Raises ``InputError``.
    """
    xa = _as_device(x)
    if tuple(xa.shape) != tuple(shape):
        raise InputError(f"step expected a device array of shape {tuple(shape)}, found {tuple(xa.shape)}")
    if model.input.tokens:
        ids = xa.copy_to_host()
        if ids.dtype.kind not in "iu" or (ids.size and (ids.min() < 0 or ids.max() >= model.input.vocab_size)):
            raise InputError(f"token ids must be integers in [0, {model.input.vocab_size}), found {ids.dtype} "
                             f"in [{ids.min()}, {ids.max()}]")
        plan.d_input.copy_to_device(ids.astype(np.int64).reshape(plan.d_input.shape))
        return
    if xa.dtype != np.float32:
        raise InputError(f"step expected a float32 device array, found {xa.dtype}")
    if not xa.is_c_contiguous():
        raise InputError("step expected a C-contiguous device array, found a strided one")
    if check_finite and not np.isfinite(xa.copy_to_host()).all():
        raise NonFiniteError("input holds NaN or infinity (check_finite=True refuses it)")
    plan.d_input.copy_to_device(xa.reshape(*plan.d_input.shape))


def device_output(plan: Plan, shape: tuple, out=None):
    """The step output as a device array of ``shape``: a new one, or written into ``out``
    (any ``__cuda_array_interface__`` float32 array of that shape) and ``out`` returned.
    One device-to-device copy either way, so the result survives the next step."""
    src = plan.output.reshape(*shape)
    if out is None:
        res = cuda.device_array(shape, np.float32)
        res.copy_to_device(src)
        return res
    oa = _as_device(out)
    if tuple(oa.shape) != tuple(shape) or oa.dtype != np.float32 or not oa.is_c_contiguous():
        raise InputError(f"out must be a C-contiguous float32 device array of shape {tuple(shape)}, found "
                         f"{oa.dtype} {tuple(oa.shape)}")
    oa.copy_to_device(src)
    return out
