"""Numba CPU kernels for the feed-forward graph layers of ``tinyrnn.graph_layers``.

Every kernel sees a value as a 3-D view ``(P, L, Q)``: ``P`` rows before the axis it works
on (batch, steps and leading feature axes flattened), the axis itself, and ``Q`` trailing
elements; conv1d sees ``(N, C, L)`` with ``N = B * T``. Shapes are checked and buffers
sized by ``tinyrnn.backends.cpu`` before any kernel runs: no bounds checks here.

Conv1d gathers the receptive fields of up to ``RB`` output positions (of any streams and
steps: row r is position l of row n of the batch) into the rows of ``patch`` (zeros where
the padding is), then takes dot products of two weight rows with four patch rows at once
(eight sums in registers: each load feeds two or four multiply-adds)::

    patch[r, ic * K + k] = x[n, g * Cg + ic, l * stride - pad_l + k * dilation]   (0 outside)
    y[n, oc, l]          = b[oc] + scale[oc] * sum_j W[oc, j] * patch[r, j]
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .. import _cache  # noqa: F401  (before any cache=True function is defined)
from ..cells.math import activate
from .cpu_kernels import HELPER, KERNEL
from .weights import load

# kinds of a fused activation (a row [kind, code, alpha, beta] of ``graph_plan.fuse``'s ``acts``):
# none; an Elementwise unary op (code: graph_layers.UNARY); an Activation layer's triple
ACT_NONE, ACT_UNARY, ACT_TRIPLE = 0, 1, 2
CV_PRE, CV_POST, CV_B = 5, 9, 13  # where conv1d's ``vec`` holds its pieces

# --- conv1d -----------------------------------------------------------------------------


@njit(**HELPER)
def _put(y, row, L_out, oc, v, vec):
    n = row // L_out
    y[n, oc, row - n * L_out] = _fused(vec, CV_POST, v)


@njit(**HELPER)
def _put_rows4(y, row, L_out, oc, a0, a1, a2, a3, vec, bo_, so_):
    """Output channel oc of rows row..row+3 from their sums: scaled, biased, activated."""
    sc = vec[so_ + oc]
    bo = vec[bo_ + oc]
    _put(y, row, L_out, oc, a0 * sc + bo, vec)
    _put(y, row + 1, L_out, oc, a1 * sc + bo, vec)
    _put(y, row + 2, L_out, oc, a2 * sc + bo, vec)
    _put(y, row + 3, L_out, oc, a3 * sc + bo, vec)


@njit(**HELPER)
def _fused(vec, o, v):
    """The fused activation ``vec[o:o + 4]`` = [kind, code, alpha, beta] applied to ``v``."""
    kind = vec[o]
    if kind == ACT_NONE:
        return v
    if kind == ACT_UNARY:
        return _unary(int(vec[o + 1]), v)
    return np.float32(activate(v, int(vec[o + 1]), vec[o + 2], vec[o + 3]))


@njit(**KERNEL)
def conv1d(x, W, vec, y, patch):
    """x (N, C_in, L_in) -> y (N, C_out, L_out). W (C_out, Cg*K) stored dtype; patch
    (RB, Cg*K) scratch; vec float32, everything else in one array (one argument to unbox
    per call instead of four): ``[stride, pad_l, dilation, groups, K]`` (small integers,
    exact in float32), the activation fused on every input value read (before the zero
    padding) and the one on every output (``[kind, code, alpha, beta]`` each, ``ACT_*``
    kinds), then b (C_out,) and scale (C_out,). ``graph_plan.conv_vec`` builds it.

    Output positions of all N rows are gathered RB at a time, so one pass over the weights
    serves many streams and steps. Register tiles: two output channels by four patch rows
    share each load (eight sums in flight), and a lone row takes four channels at once.
    """
    stride, pad_l, dil, groups, K = int(vec[0]), int(vec[1]), int(vec[2]), int(vec[3]), int(vec[4])
    N, C_in, L_in = x.shape
    C_out, L_out = y.shape[1], y.shape[2]
    Cg = C_in // groups
    Og = C_out // groups
    CK = Cg * K
    rows = N * L_out
    RB = patch.shape[0]
    pre = vec[CV_PRE] != ACT_NONE
    bo_ = CV_B
    so_ = CV_B + C_out
    for g in range(groups):
        o0 = g * Og
        o1 = o0 + Og
        for r0 in range(0, rows, RB):
            nr = min(RB, rows - r0)
            for r in range(nr):
                n = (r0 + r) // L_out
                base = (r0 + r - n * L_out) * stride - pad_l
                # one tap k at a time: the bounds test leaves the inner loop, which is then
                # a plain strided copy (a third of a conv's time when done per element)
                for k in range(K):
                    pos = base + k * dil
                    if pos < 0 or pos >= L_in:
                        for ic in range(Cg):
                            patch[r, ic * K + k] = np.float32(0.0)
                    elif pre:
                        for ic in range(Cg):
                            patch[r, ic * K + k] = _fused(vec, CV_PRE, x[n, g * Cg + ic, pos])
                    else:
                        for ic in range(Cg):
                            patch[r, ic * K + k] = x[n, g * Cg + ic, pos]
            rq = nr - nr % 4
            for r in range(0, rq, 4):
                oc = o0
                while oc + 2 <= o1:
                    a0 = np.float32(0.0)
                    a1 = np.float32(0.0)
                    a2 = np.float32(0.0)
                    a3 = np.float32(0.0)
                    c0 = np.float32(0.0)
                    c1 = np.float32(0.0)
                    c2 = np.float32(0.0)
                    c3 = np.float32(0.0)
                    for j in range(CK):
                        w = load(W[oc, j])
                        v = load(W[oc + 1, j])
                        p0 = patch[r, j]
                        p1 = patch[r + 1, j]
                        p2 = patch[r + 2, j]
                        p3 = patch[r + 3, j]
                        a0 += w * p0
                        a1 += w * p1
                        a2 += w * p2
                        a3 += w * p3
                        c0 += v * p0
                        c1 += v * p1
                        c2 += v * p2
                        c3 += v * p3
                    _put_rows4(y, r0 + r, L_out, oc, a0, a1, a2, a3, vec, bo_, so_)
                    _put_rows4(y, r0 + r, L_out, oc + 1, c0, c1, c2, c3, vec, bo_, so_)
                    oc += 2
                if oc < o1:
                    a0 = np.float32(0.0)
                    a1 = np.float32(0.0)
                    a2 = np.float32(0.0)
                    a3 = np.float32(0.0)
                    for j in range(CK):
                        w = load(W[oc, j])
                        a0 += w * patch[r, j]
                        a1 += w * patch[r + 1, j]
                        a2 += w * patch[r + 2, j]
                        a3 += w * patch[r + 3, j]
                    _put_rows4(y, r0 + r, L_out, oc, a0, a1, a2, a3, vec, bo_, so_)
            for r in range(rq, nr):
                oc = o0
                while oc + 4 <= o1:
                    a0 = np.float32(0.0)
                    a1 = np.float32(0.0)
                    a2 = np.float32(0.0)
                    a3 = np.float32(0.0)
                    for j in range(CK):
                        p = patch[r, j]
                        a0 += load(W[oc, j]) * p
                        a1 += load(W[oc + 1, j]) * p
                        a2 += load(W[oc + 2, j]) * p
                        a3 += load(W[oc + 3, j]) * p
                    _put(y, r0 + r, L_out, oc, a0 * vec[so_ + oc] + vec[bo_ + oc], vec)
                    _put(y, r0 + r, L_out, oc + 1, a1 * vec[so_ + oc + 1] + vec[bo_ + oc + 1], vec)
                    _put(y, r0 + r, L_out, oc + 2, a2 * vec[so_ + oc + 2] + vec[bo_ + oc + 2], vec)
                    _put(y, r0 + r, L_out, oc + 3, a3 * vec[so_ + oc + 3] + vec[bo_ + oc + 3], vec)
                    oc += 4
                while oc < o1:
                    a0 = np.float32(0.0)
                    for j in range(CK):
                        a0 += load(W[oc, j]) * patch[r, j]
                    _put(y, r0 + r, L_out, oc, a0 * vec[so_ + oc] + vec[bo_ + oc], vec)
                    oc += 1


# --- shape ops --------------------------------------------------------------------------

PAD_CONSTANT, PAD_REFLECT, PAD_EDGE = 0, 1, 2


@njit(**KERNEL)
def pad(x, before, mode, value, y):
    """x (P, L, Q) -> y (P, before + L + after, Q); mode: 0 constant, 1 reflect, 2 edge."""
    P, L, Q = x.shape
    L2 = y.shape[1]
    for p in range(P):
        for i in range(L2):
            src = i - before
            if src < 0 or src >= L:
                if mode == PAD_CONSTANT:
                    for q in range(Q):
                        y[p, i, q] = value
                    continue
                if mode == PAD_REFLECT:
                    src = -src if src < 0 else 2 * (L - 1) - src
                else:
                    src = 0 if src < 0 else L - 1
            for q in range(Q):
                y[p, i, q] = x[p, src, q]


@njit(**KERNEL)
def take(x, start, step, y):
    """y[p, i, q] = x[p, start + i * step, q]: a slice, or a copy when step is 1 and L fits."""
    P, Lo, Q = y.shape
    for p in range(P):
        for i in range(Lo):
            s = start + i * step
            for q in range(Q):
                y[p, i, q] = x[p, s, q]


@njit(**KERNEL)
def place(x, offset, y):
    """y[p, offset + i, q] = x[p, i, q]: one input of a concat."""
    P, L, Q = x.shape
    for p in range(P):
        for i in range(L):
            for q in range(Q):
                y[p, offset + i, q] = x[p, i, q]


# --- arithmetic -------------------------------------------------------------------------


@njit(**HELPER)
def _unary(op, v):
    if op == 0:
        return np.float32(math.sqrt(v)) if v >= 0 else np.float32(np.nan)
    if op == 1:
        return abs(v)
    if op == 2:
        return -v
    if op == 3:
        return np.float32(math.exp(v))
    if op == 4:
        if v > 0:
            return np.float32(math.log(v))
        return np.float32(-np.inf) if v == 0 else np.float32(np.nan)
    if op == 5:
        return np.float32(1.0) / v
    if op == 6:
        return v * v
    return np.float32(0.0) if v < 0 else v  # relu; NaN passes through as ONNX says


@njit(**HELPER)
def _binary(op, a, b):
    if op == 0:
        return a + b
    if op == 1:
        return a - b
    if op == 2:
        return a * b
    if op == 3:
        return a / b
    if op == 4:
        if b == 2.0:
            return a * a  # pow(a, 2) rounds exactly like a * a: skip the library call
        return np.float32(math.pow(a, b)) if a >= 0 or b == math.floor(b) else np.float32(np.nan)
    if op == 5:
        return a if a >= b else b
    return a if a <= b else b


@njit(**KERNEL)
def unary(x, op, y):
    """y = f(x) elementwise over flat arrays (op codes: ``graph_layers.UNARY``)."""
    for i in range(x.shape[0]):
        y[i] = _unary(op, x[i])


@njit(**KERNEL)
def binary(a, b, op, y):
    """y = a (op) b over flat arrays of one length (op codes: ``graph_layers.BINARY``)."""
    for i in range(a.shape[0]):
        y[i] = _binary(op, a[i], b[i])


@njit(**KERNEL)
def binary_const(a, c, op, c_first, y):
    """y[p, s] = a[p, s] (op) c[s] (or c[s] (op) a[p, s]); a, y (P, S), c (S,) broadcast."""
    P, S = a.shape
    for p in range(P):
        if c_first:
            for s in range(S):
                y[p, s] = _binary(op, c[s], a[p, s])
        else:
            for s in range(S):
                y[p, s] = _binary(op, a[p, s], c[s])


@njit(**KERNEL)
def reduce(x, op, y):
    """y[p, q] = reduce_i x[p, i, q]; op 0 mean, 1 sum, 2 max, 3 min."""
    P, L, Q = x.shape
    for p in range(P):
        for q in range(Q):
            acc = x[p, 0, q]
            for i in range(1, L):
                v = x[p, i, q]
                if op <= 1:
                    acc += v
                elif op == 2:
                    acc = v if v > acc or v != v else acc
                else:
                    acc = v if v < acc or v != v else acc
            y[p, q] = acc / np.float32(L) if op == 0 else acc


@njit(**KERNEL)
def copy(x, y):
    """y[:] = x over flat arrays (graph state carried to the next step)."""
    for i in range(x.shape[0]):
        y[i] = x[i]


# --- spectral magnitude ---------------------------------------------------------------------


@njit(**KERNEL)
def dft_magnitude(x, src, fill, window, hop, rev, tw, y, re, im, mag):
    """x (N, L_in) -> y (N, bins, frames): |windowed DFT| of each frame.

    The framed signal is ``s[i] = x[n, src[i]]``, or ``fill`` where ``src[i] < 0``: src
    (L,) int64 is the identity for a plain layer, and the index map of a pad folded into
    this call at plan time (reflect, edge or constant). A real frame of n_fft samples is
    packed as n_fft/2 complex values (even samples real, odd imaginary), transformed by a
    radix-2 FFT of half the size and untangled into the n_fft/2 + 1 bins of the real DFT:
    half the butterflies of a complex FFT. ``rev`` (n_fft/2,) int64 bit-reversed indices;
    ``tw`` (2, n_fft - 1) float32: cos and sin of 2 pi k / 2h for k < h at columns h - 1 + k,
    for h = 1, 2, 4, ..., n_fft/2: each FFT stage's twiddles contiguous (so its loop
    vectorises) and, for h = n_fft/2, the untangling's; ``re``/``im`` scratch (n_fft/2,),
    ``mag`` (bins,) scratch.
    """
    N = x.shape[0]
    M = window.shape[0] // 2
    bins, frames = y.shape[1], y.shape[2]
    for n in range(N):
        for f in range(frames):
            off = f * hop
            if M >= 4:
                # gather with the first two stages fused: each run of four bit-reversed
                # entries is a 4-point DFT (twiddles 1 and -i, exact)
                for i in range(0, M, 4):
                    r0, i0 = _sample(x, n, src, off, fill, window, rev[i])
                    r1, i1 = _sample(x, n, src, off, fill, window, rev[i + 1])
                    r2, i2 = _sample(x, n, src, off, fill, window, rev[i + 2])
                    r3, i3 = _sample(x, n, src, off, fill, window, rev[i + 3])
                    ar0, ai0 = r0 + r1, i0 + i1
                    ar1, ai1 = r0 - r1, i0 - i1
                    ar2, ai2 = r2 + r3, i2 + i3
                    ar3, ai3 = r2 - r3, i2 - i3
                    re[i], im[i] = ar0 + ar2, ai0 + ai2
                    re[i + 2], im[i + 2] = ar0 - ar2, ai0 - ai2
                    re[i + 1], im[i + 1] = ar1 + ai3, ai1 - ar3  # a1 + (-i) a3
                    re[i + 3], im[i + 3] = ar1 - ai3, ai1 + ar3
                half = 4
            else:
                for i in range(M):
                    re[i], im[i] = _sample(x, n, src, off, fill, window, rev[i])
                half = 1
            while half < M:
                size = 2 * half
                t0 = half - 1
                if half < 8:  # short stages: butterflies of one twiddle across the blocks
                    for k in range(half):
                        wr = tw[0, t0 + k]
                        wi = tw[1, t0 + k]
                        for a in range(k, M, size):
                            b = a + half
                            tr = re[b] * wr + im[b] * wi
                            ti = im[b] * wr - re[b] * wi
                            re[b] = re[a] - tr
                            im[b] = im[a] - ti
                            re[a] += tr
                            im[a] += ti
                else:  # long stages: contiguous twiddles, a loop LLVM vectorises
                    for start in range(0, M, size):
                        for k in range(half):
                            wr = tw[0, t0 + k]
                            wi = tw[1, t0 + k]
                            # unsigned: no negative-index wraparound select, which would
                            # hide the affine addresses and keep LLVM from vectorising
                            a = np.uint64(start + k)
                            b = np.uint64(a + half)
                            tr = re[b] * wr + im[b] * wi
                            ti = im[b] * wr - re[b] * wi
                            re[b] = re[a] - tr
                            im[b] = im[a] - ti
                            re[a] += tr
                            im[a] += ti
                half = size
            # untangle: bin k of the real DFT from complex bins k and M - k (both mod M),
            # the last stage's twiddles exp(-2 pi i k / n_fft); bins 0 and M (the angle is
            # 0 or pi, both read complex bin 0) apart, so the loop between vectorises
            # (unsigned indices again) into the contiguous ``mag``
            mag[0] = _untangle(re, im, 0, 0, tw[0, M - 1], tw[1, M - 1])
            Mu = np.uint64(M)
            for k in range(1, min(bins, M)):
                ku = np.uint64(k)
                t = Mu - np.uint64(1) + ku
                mag[ku] = _untangle(re, im, ku, Mu - ku, tw[0, t], tw[1, t])
            if bins > M:
                mag[M] = _untangle(re, im, 0, 0, np.float32(-1.0), np.float32(0.0))
            for k in range(bins):
                y[n, k, f] = mag[k]


@njit(**HELPER)
def _sample(x, n, src, off, fill, window, m):
    """Windowed complex sample m of a frame: samples 2m and 2m + 1 as real and imaginary."""
    j = 2 * m
    s0 = src[off + j]
    s1 = src[off + j + 1]
    v0 = x[n, s0] if s0 >= 0 else fill
    v1 = x[n, s1] if s1 >= 0 else fill
    return v0 * window[j], v1 * window[j + 1]


@njit(**HELPER)
def _untangle(re, im, p, q, c, sn):
    """|X[k]| of the real DFT from complex FFT bins p = k and q = M - k (mod M), with
    (c, sn) = (cos, sin)(2 pi k / n_fft)."""
    er = np.float32(0.5) * (re[p] + re[q])  # even samples' DFT at k
    ei = np.float32(0.5) * (im[p] - im[q])
    orr = np.float32(0.5) * (im[p] + im[q])  # odd samples' DFT at k
    oi = np.float32(0.5) * (re[q] - re[p])
    xr = er + c * orr + sn * oi
    xi = ei + c * oi - sn * orr
    return np.float32(math.sqrt(xr * xr + xi * xi))
