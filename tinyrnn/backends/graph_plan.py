"""CPU plan pieces for the graph layers: kernel-ready arrays and the calls of one layer.

``prepare_graph(layer, in_shapes)`` runs once per model; ``graph_calls`` once per plan.
Buffers are ``(B, T, *feature)`` float32, C-contiguous, allocated by the caller.
"""

from __future__ import annotations

import numpy as np

from ..graph_layers import (
    BINARY,
    UNARY,
    Concat,
    Conv1d,
    DftMagnitude,
    Elementwise,
    Pad,
    Reduce,
    Reshape,
    Slice,
    pqr,
)
from . import graph_kernels as G
from .weights import kernel_view

_PAD_MODES = {"constant": G.PAD_CONSTANT, "reflect": G.PAD_REFLECT, "edge": G.PAD_EDGE}


def prepare_graph(layer, in_shapes: list[tuple[int, ...]]) -> dict:
    """Kernel-ready arrays of a graph layer whose inputs have feature shapes ``in_shapes``."""
    p = layer.params
    if isinstance(layer, Conv1d):
        C_out = layer.out_channels
        W = kernel_view(p["W"]).reshape(C_out, -1)  # (C_out, Cg*K): one row per output channel
        b = p["b"] if layer.bias else np.zeros(C_out, np.float32)
        scale = p.get("W_scale", np.ones(C_out, np.float32))
        geom = np.array([layer.stride, layer.padding[0], layer.dilation, layer.groups, layer.kernel_size], np.int64)
        return {"W": W, "b": b, "scale": scale, "geom": geom}
    if isinstance(layer, DftMagnitude):
        n = layer.n_fft
        M = n // 2  # the kernel runs a complex FFT of half the size
        bits = M.bit_length() - 1
        rev = np.array([int(format(i, f"0{bits}b")[::-1], 2) if bits else 0 for i in range(M)], np.int64)
        ang = 2 * np.pi * np.arange(n // 2) / n
        return {"window": p["window"], "rev": rev, "cos": np.cos(ang).astype(np.float32),
                "sin": np.sin(ang).astype(np.float32)}
    if isinstance(layer, Elementwise):
        out = {"code": UNARY.get(layer.op, BINARY.get(layer.op))}
        if layer.has_constant:
            shape = in_shapes[0]
            c = np.broadcast_to(p["c"].astype(np.float32), shape).reshape(-1)
            out["c"] = np.ascontiguousarray(c)  # (S,) one constant per feature element
        return out
    return {}


def graph_calls(layer, prep: dict, xs: list[np.ndarray], y: np.ndarray, in_shapes) -> list:
    """``(kernel, args)`` pairs computing ``y (B, T, *out)`` from inputs ``xs``."""
    B, T = y.shape[0], y.shape[1]
    N = B * T
    x = xs[0]
    s = in_shapes[0]
    if isinstance(layer, Conv1d):
        C_in, L_in = s
        _, C_out, L_out = y.reshape(N, *y.shape[2:]).shape
        # output positions gathered per pass: enough to share each weight load across streams
        # and steps, few enough that the patch rows stay in cache
        patch = np.empty((min(N * L_out, 32), (C_in // layer.groups) * layer.kernel_size), np.float32)
        return [(G.conv1d, (x.reshape(N, C_in, L_in), prep["W"], prep["b"], prep["scale"], prep["geom"],
                            y.reshape(N, C_out, L_out), patch))]
    if isinstance(layer, DftMagnitude):
        n = layer.n_fft
        scratch = np.empty(n // 2, np.float32), np.empty(n // 2, np.float32)
        return [(G.dft_magnitude, (x.reshape(N, s[1]), prep["window"], layer.hop, prep["rev"], prep["cos"],
                                   prep["sin"], y.reshape(N, *y.shape[2:]), *scratch))]
    if isinstance(layer, Pad):
        P, L, Q = pqr(s, layer.axis)
        return [(G.pad, (x.reshape(N * P, L, Q), layer.before, _PAD_MODES[layer.mode], np.float32(layer.value),
                         y.reshape(N * P, -1, Q)))]
    if isinstance(layer, Slice):
        P, L, Q = pqr(s, layer.axis)
        return [(G.take, (x.reshape(N * P, L, Q), layer.start, layer.step, y.reshape(N * P, -1, Q)))]
    if isinstance(layer, Concat):
        out_shape = y.shape[2:]
        P, Lt, Q = pqr(out_shape, layer.axis)
        calls, off = [], 0
        for xi, si in zip(xs, in_shapes):
            Li = si[layer.axis]
            calls.append((G.place, (xi.reshape(N * P, Li, Q), off, y.reshape(N * P, Lt, Q))))
            off += Li
        return calls
    if isinstance(layer, Elementwise):
        if layer.op in UNARY:
            return [(G.unary, (x.reshape(-1), prep["code"], y.reshape(-1)))]
        if layer.has_constant:
            S = prep["c"].shape[0]
            return [(G.binary_const, (x.reshape(N, S), prep["c"], prep["code"], layer.c_first, y.reshape(N, S)))]
        return [(G.binary, (x.reshape(-1), xs[1].reshape(-1), prep["code"], y.reshape(-1)))]
    if isinstance(layer, Reduce):
        P, L, Q = pqr(s, layer.axis)
        return [(G.reduce, (x.reshape(N * P, L, Q), Reduce.OPS[layer.op], y.reshape(N * P, Q)))]
    if isinstance(layer, Reshape):  # pragma: no cover - the plan makes a view instead
        return []
    raise NotImplementedError(layer.type)
