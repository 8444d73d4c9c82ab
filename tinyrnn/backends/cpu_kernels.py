"""Numba CPU kernels: the loops. The math they call lives in ``tinyrnn.cells.math``.

One kernel per recurrent cell covers all three entry shapes of the architecture page: one
step for B streams (``T == 1``), T steps for B streams in one call (a stream's ``process``),
and whole sequences for ``run``. Each kernel hoists the input projection ``x·W + b`` out of
the recurrence, ``CHUNK`` time steps at a time, so the hoisted rows stay in cache; the
recurrence then only adds ``h·R``.

Shapes (per call; ``d`` selects one direction of a layer's stacked weights)::

    x        (B, T, I)    float32   input rows
    lengths  (B,)         int64     steps valid per stream; t >= lengths[b] is padding
    W        (D, I, GH)   f32/u16/i8   input weights, ONNX's W transposed per direction
    R        (D, Hr, GH)  f32/u16/i8   recurrent weights, ONNX's R transposed
    proj     (D, H, Hr)   f32/u16/i8   LSTM projection (a (D, 1, 1) dummy when absent)
    V        (D, K)       float32   packed vectors, see ``packing.vector_layout``
    cfg      (D, 16)      float32   activations and flags, see ``packing.CFG_*``
    h        (B, D, Hr)   float32   hidden state, updated in place
    c        (B, D, H)    float32   LSTM cell state, updated in place
    y        (B, T, Dout) float32   outputs; this direction writes columns y_off:y_off+Hr
    work     (n,)         float32   scratch, ``work_size`` floats

Kernels do no bounds checking: ``tinyrnn.backends.cpu`` validates and sizes every array
before a kernel sees it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .. import _cache  # noqa: F401  (before any cache=True function is defined)
from ..cells.math import act, gru_gate, gru_unit, lstm_unit, rnn_unit
from .packing import (CFG_CLIP, CFG_COUPLED, CFG_F, CFG_G, CFG_H, CFG_LBR, CFG_PEEPHOLES, CFG_PROJ,
                      CFG_REVERSE, CFG_YOFF)
from .weights import load, scaled

# "contract" lets LLVM fuse multiply-adds, "reassoc" lets it vectorise reductions. No
# "nnan"/"ninf": NaN and infinity must propagate as IEEE says (the NaN policy relies on it).
FASTMATH = {"contract", "reassoc", "nsz"}
KERNEL = dict(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
HELPER = dict(KERNEL, inline="always")

CHUNK = 32  # time steps whose input projection is hoisted together


def work_size(B: int, T: int, G: int, H: int, Hr: int) -> int:
    """Scratch floats a recurrent kernel needs for B streams and T steps."""
    return B * min(T, CHUNK) * G * H + B * G * H + H + Hr


# --- shared loops -----------------------------------------------------------------------


@njit(**HELPER)
def _vecmat(v, M, out):
    """out[:] = v @ M with M read through ``load``; no scale applied."""
    out[:] = 0.0
    for i in range(v.shape[0]):
        vi = v[i]
        row = M[i]
        for j in range(out.shape[0]):
            out[j] += vi * load(row[j])


@njit(**HELPER)
def _vecmat_cols(v, M, col0, out):
    """out[:] = v @ M[:, col0:col0+len(out)] (a gate block of a transposed weight)."""
    out[:] = 0.0
    n = out.shape[0]
    for i in range(v.shape[0]):
        vi = v[i]
        row = M[i]
        for j in range(n):
            out[j] += vi * load(row[col0 + j])


@njit(**HELPER)
def _time(s, T, reverse):
    """The time index of processing step s."""
    return T - 1 - s if reverse else s


@njit(**HELPER)
def _hoist(x, Wd, bias, sW, lengths, s0, n, reverse, gx):
    """gx[b, k] = x[b, t(s0+k)] @ Wd * sW + bias for the chunk's active rows."""
    B, T, _ = x.shape
    GH = gx.shape[2]
    for b in range(B):
        for k in range(n):
            t = _time(s0 + k, T, reverse)
            if t >= lengths[b]:
                continue
            row = gx[b, k]
            _vecmat(x[b, t], Wd, row)
            if scaled(Wd[0, 0]):
                for j in range(GH):
                    row[j] = row[j] * sW[j] + bias[j]
            else:
                for j in range(GH):
                    row[j] += bias[j]


@njit(**HELPER)
def _recurrent(hb, Rd, sR, acc):
    """acc[:] = hb @ Rd * sR (the recurrent term of every gate)."""
    _vecmat(hb, Rd, acc)
    if scaled(Rd[0, 0]):
        for j in range(acc.shape[0]):
            acc[j] *= sR[j]


# --- recurrent kernels ------------------------------------------------------------------


@njit(**KERNEL)
def rnn_sequence(x, lengths, W, R, V, cfg, d, h, y, work):
    """Elman RNN over x for one direction ``d``; see the module docstring for shapes."""
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
    TC = min(T, CHUNK)
    gx = work[:B * TC * GH].reshape((B, TC, GH))
    acc_all = work[B * TC * GH:B * TC * GH + B * GH].reshape((B, GH))
    for s0 in range(0, T, TC):
        n = min(TC, T - s0)
        _hoist(x, Wd, bias, sW, lengths, s0, n, reverse, gx)
        for k in range(n):
            t = _time(s0 + k, T, reverse)
            for b in range(B):
                yb = y[b, t]
                if t >= lengths[b]:
                    for j in range(Hr):
                        yb[y_off + j] = 0.0
                    continue
                hb = h[b, d]
                acc = acc_all[b]
                _recurrent(hb, Rd, sR, acc)
                g = gx[b, k]
                for j in range(H):
                    hb[j] = rnn_unit(g[j] + acc[j], f, bound)
                    yb[y_off + j] = hb[j]


@njit(**KERNEL)
def lstm_sequence(x, lengths, W, R, proj, V, cfg, d, h, c, y, work):
    """LSTM (peepholes, coupled gates, clip, projection) over x for direction ``d``."""
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
    peepholes = cf[CFG_PEEPHOLES] != 0
    has_proj = cf[CFG_PROJ] != 0
    reverse = cf[CFG_REVERSE] != 0
    y_off = int(cf[CFG_YOFF])
    v = V[d]
    bias = v[0:GH]
    peep = v[GH + H:GH + 4 * H]
    sW = v[GH + 4 * H:2 * GH + 4 * H]
    sR = v[2 * GH + 4 * H:3 * GH + 4 * H]
    sP = v[3 * GH + 4 * H:3 * GH + 4 * H + Hr]
    Wd = W[d]
    Rd = R[d]
    Pd = proj[d]
    TC = min(T, CHUNK)
    o_acc = B * TC * GH
    o_m = o_acc + B * GH
    gx = work[:o_acc].reshape((B, TC, GH))
    acc_all = work[o_acc:o_m].reshape((B, GH))
    m = work[o_m:o_m + H]
    zero = np.float32(0.0)
    for s0 in range(0, T, TC):
        n = min(TC, T - s0)
        _hoist(x, Wd, bias, sW, lengths, s0, n, reverse, gx)
        for k in range(n):
            t = _time(s0 + k, T, reverse)
            for b in range(B):
                yb = y[b, t]
                if t >= lengths[b]:
                    for j in range(Hr):
                        yb[y_off + j] = 0.0
                    continue
                hb = h[b, d]
                cb = c[b, d]
                acc = acc_all[b]
                _recurrent(hb, Rd, sR, acc)
                g = gx[b, k]
                for j in range(H):
                    if peepholes:
                        p_i = peep[j]
                        p_o = peep[H + j]
                        p_f = peep[2 * H + j]
                    else:
                        p_i = zero
                        p_o = zero
                        p_f = zero
                    hn, cn = lstm_unit(
                        g[j] + acc[j], g[H + j] + acc[H + j], g[2 * H + j] + acc[2 * H + j],
                        g[3 * H + j] + acc[3 * H + j], cb[j], p_i, p_o, p_f,
                        fa, ga, ha, bound, coupled,
                    )
                    cb[j] = cn
                    m[j] = hn
                if has_proj:
                    _vecmat(m, Pd, hb)
                    if scaled(Pd[0, 0]):
                        for j in range(Hr):
                            hb[j] *= sP[j]
                else:
                    for j in range(H):
                        hb[j] = m[j]
                for j in range(Hr):
                    yb[y_off + j] = hb[j]


@njit(**KERNEL)
def gru_sequence(x, lengths, W, R, V, cfg, d, h, y, work):
    """GRU (linear_before_reset 0 or 1, clip) over x for direction ``d``."""
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
    TC = min(T, CHUNK)
    o_acc = B * TC * GH
    o_tmp = o_acc + B * GH
    gx = work[:o_acc].reshape((B, TC, GH))
    acc_all = work[o_acc:o_tmp].reshape((B, GH))
    rh = work[o_tmp:o_tmp + H]
    scaled_r = scaled(Rd[0, 0])
    for s0 in range(0, T, TC):
        n = min(TC, T - s0)
        _hoist(x, Wd, bias, sW, lengths, s0, n, reverse, gx)
        for k in range(n):
            t = _time(s0 + k, T, reverse)
            for b in range(B):
                yb = y[b, t]
                if t >= lengths[b]:
                    for j in range(Hr):
                        yb[y_off + j] = 0.0
                    continue
                hb = h[b, d]
                acc = acc_all[b]
                g = gx[b, k]
                if lbr:
                    # every gate's recurrent product at once; r scales (h·Rh + Rbh)
                    _recurrent(hb, Rd, sR, acc)
                    for j in range(H):
                        z = gru_gate(g[j] + acc[j], fa, bound)
                        r = gru_gate(g[H + j] + acc[H + j], fa, bound)
                        n_pre = g[2 * H + j] + r * (acc[2 * H + j] + rbh[j])
                        acc[j] = z  # keep z; h must not change until every unit is done
                        acc[H + j] = n_pre
                else:
                    # z and r first, then (r * h)·Rh
                    zr = acc[0:2 * H]
                    _vecmat_cols(hb, Rd, 0, zr)
                    for j in range(H):
                        if scaled_r:
                            zr[j] *= sR[j]
                            zr[H + j] *= sR[H + j]
                        z = gru_gate(g[j] + zr[j], fa, bound)
                        r = gru_gate(g[H + j] + zr[H + j], fa, bound)
                        zr[j] = z
                        rh[j] = r * hb[j]
                    nn = acc[2 * H:3 * H]
                    _vecmat_cols(rh, Rd, 2 * H, nn)
                    for j in range(H):
                        if scaled_r:
                            nn[j] *= sR[2 * H + j]
                        acc[H + j] = g[2 * H + j] + nn[j]
                for j in range(H):
                    hb[j] = gru_unit(acc[j], acc[H + j], hb[j], ga, bound)
                    yb[y_off + j] = hb[j]


# --- feed-forward kernels ---------------------------------------------------------------


@njit(**KERNEL)
def dense(x, W, bias, scale, y):
    """y (N, O) = x (N, I) @ W (I, O) * scale + bias; scale is used for int8 W only."""
    N = x.shape[0]
    O = y.shape[1]
    for n in range(N):
        row = y[n]
        _vecmat(x[n], W, row)
        if scaled(W[0, 0]):
            for o in range(O):
                row[o] = row[o] * scale[o] + bias[o]
        else:
            for o in range(O):
                row[o] += bias[o]


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
