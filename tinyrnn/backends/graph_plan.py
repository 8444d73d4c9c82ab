"""CPU plan pieces for the graph layers: kernel-ready arrays, plan-time fusion, the calls.

``prepare_graph(layer, in_shapes)`` and ``fuse(model)`` run once per model; ``graph_calls``
once per plan. Buffers are ``(B, T, *feature)`` float32, C-contiguous, allocated by the
caller.

Fusion (``fuse``) changes no result, bit for bit: it only moves work into the call of a
neighbouring layer, so a step makes fewer compiled calls and fewer passes over buffers.

* an elementwise layer (``Elementwise`` unary op or ``Activation``) whose input is a conv1d
  read by nothing else runs inside the conv, on each output as it is written, and its value
  is the conv's buffer;
* otherwise, such a layer whose only reader is a conv1d runs inside that conv, on each input
  value as it is gathered (the zero padding stays zero, as it pads the activated values);
* a ``Pad`` (optionally viewed through a ``Reshape``) read only by a ``DftMagnitude`` becomes
  the DFT's index map from framed samples to input samples;
* a ``Slice`` that keeps a whole axis and a ``Reduce`` over an axis of length 1 are views.
"""

from __future__ import annotations

from collections import Counter

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
from ..layers import Activation
from ..spec import ACTIVATIONS
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
        # twiddles of the stage of half-size h at columns h-1 .. 2h-2 (h = 1 .. M)
        h = np.concatenate([np.full(k, k) for k in (1 << i for i in range(bits + 1))])
        k = np.arange(h.size) - (h - 1)
        ang = np.pi * k / h  # 2 pi k / (2h), in float64
        tw = np.stack([np.cos(ang), np.sin(ang)]).astype(np.float32)
        return {"window": p["window"], "rev": rev, "tw": tw}
    if isinstance(layer, Elementwise):
        out = {"code": UNARY.get(layer.op, BINARY.get(layer.op))}
        if layer.has_constant:
            shape = in_shapes[0]
            c = np.broadcast_to(p["c"].astype(np.float32), shape).reshape(-1)
            out["c"] = np.ascontiguousarray(c)  # (S,) one constant per feature element
        return out
    return {}


def graph_calls(layer, prep: dict, xs: list[np.ndarray], y: np.ndarray, in_shapes, fused: dict | None = None) -> list:
    """``(kernel, args)`` pairs computing ``y (B, T, *out)`` from inputs ``xs``.

    ``fused``: this layer's entry of ``fuse(model)`` (``acts`` of a conv1d, ``src``/``fill``
    of a DFT), if any; ``xs``/``in_shapes`` are then the values the fused call reads.
    """
    fused = fused or {}
    B, T = y.shape[0], y.shape[1]
    N = B * T
    x = xs[0]
    s = in_shapes[0]
    if isinstance(layer, Conv1d):
        C_in, L_in = s
        _, C_out, L_out = y.reshape(N, *y.shape[2:]).shape
        # output positions gathered per pass: enough to share each weight load across streams
        # and steps (the kernel's inner loops touch four patch rows at a time, so more rows
        # cost no L1 room, only fewer passes over the weights)
        patch = np.empty((min(N * L_out, 32), (C_in // layer.groups) * layer.kernel_size), np.float32)
        vec = conv_vec(prep, fused.get("acts", _NO_ACTS))
        return [(G.conv1d, (x.reshape(N, C_in, L_in), prep["W"], vec, y.reshape(N, C_out, L_out), patch))]
    if isinstance(layer, DftMagnitude):
        n = layer.n_fft
        scratch = np.empty(n // 2, np.float32), np.empty(n // 2, np.float32), np.empty(layer.bins, np.float32)
        L = int(np.prod(s))
        src = fused.get("src", np.arange(L, dtype=np.int64))
        return [(G.dft_magnitude, (x.reshape(N, L), src, np.float32(fused.get("fill", 0.0)), prep["window"],
                                   layer.hop, prep["rev"], prep["tw"], y.reshape(N, *y.shape[2:]), *scratch))]
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


def conv_vec(prep: dict, acts: np.ndarray) -> np.ndarray:
    """conv1d's float32 ``vec``: geometry, fused activations (pre, post), bias, scale."""
    assert G.CV_B == 5 + acts.size  # the kernel's offsets match this layout
    return np.concatenate([prep["geom"].astype(np.float32), acts.reshape(-1), prep["b"], prep["scale"]]).astype(
        np.float32)


# --- plan-time fusion ---------------------------------------------------------------------

_NO_ACTS = np.zeros((2, 4), np.float32)  # G.ACT_NONE in both rows


def _act_row(layer) -> np.ndarray | None:
    """``[kind, code, alpha, beta]`` of a layer a conv can apply per value, else None."""
    if isinstance(layer, Elementwise) and layer.op in UNARY:
        return np.array([G.ACT_UNARY, UNARY[layer.op], 0, 0], np.float32)
    if isinstance(layer, Activation):
        return np.array([G.ACT_TRIPLE, ACTIVATIONS[layer.fn], layer.alpha, layer.beta], np.float32)
    return None


def _pad_map(pad: Pad, L: int) -> np.ndarray:
    """Input index of each padded position along the padded axis (-1: the constant)."""
    i = np.arange(L + pad.before + pad.after) - pad.before
    out = i < 0
    past = i >= L
    if pad.mode == "constant":
        i[out | past] = -1
    elif pad.mode == "reflect":
        i[out] = -i[out]
        i[past] = 2 * (L - 1) - i[past]
    else:  # edge
        i = np.clip(i, 0, L - 1)
    return i.astype(np.int64)


def fuse(model) -> dict[str, dict]:
    """Plan-time rewrites of ``model`` (see the module docstring), cached on the model.

    Returns ``{layer name: entry}``: ``{"alias": name}`` (no call; the value is that
    layer's buffer, viewed in this layer's shape), ``{"drop": True}`` (no call and no
    value: its only reader computes it), or for a fused call ``{"reads": name}`` (the first
    input it reads instead of its own) with ``"acts"`` (conv1d) or ``"src"``/``"fill"``
    (DFT). Layers not named run as they are.
    """
    cache = model._backend_cache
    if "cpu_fuse" in cache:
        return cache["cpu_fuse"]
    uses = Counter(i for layer in model.layers for i in layer.inputs)
    uses[model.output] += 1
    for st in model.states.values():
        uses[st["next"]] += 1
    by_name = {layer.name: layer for layer in model.layers}
    readers: dict[str, list] = {}
    for layer in model.layers:
        for i in layer.inputs:
            readers.setdefault(i, []).append(layer)
    out: dict[str, dict] = {}

    def conv_entry(conv) -> dict:
        return out.setdefault(conv.name, {"acts": _NO_ACTS.copy()})

    for layer in model.layers:
        shape_in = model.shapes[layer.inputs[0]] if layer.inputs else None
        src = by_name.get(layer.inputs[0]) if layer.inputs else None
        row = _act_row(layer)
        if row is not None:
            if isinstance(src, Conv1d) and uses[src.name] == 1 and conv_entry(src)["acts"][1, 0] == G.ACT_NONE:
                conv_entry(src)["acts"][1] = row
                out[layer.name] = {"alias": src.name}
                continue
            rd = readers.get(layer.name, [])
            if (uses[layer.name] == 1 and len(rd) == 1 and isinstance(rd[0], Conv1d)
                    and rd[0].inputs[0] == layer.name):
                e = conv_entry(rd[0])
                e["acts"][0] = row
                e["reads"] = layer.inputs[0]
                out[layer.name] = {"drop": True}
            continue
        if isinstance(layer, Slice) and layer.start == 0 and layer.step == 1 and layer.stop == shape_in[layer.axis]:
            out[layer.name] = {"alias": layer.inputs[0]}
        elif isinstance(layer, Reduce) and shape_in[layer.axis] == 1:
            out[layer.name] = {"alias": layer.inputs[0]}  # mean, sum, max, min of one value: the value
        elif isinstance(layer, DftMagnitude):
            chain = [src]
            if isinstance(src, Reshape) and uses[src.name] == 1:
                chain.append(by_name.get(src.inputs[0]))
            pad = chain[-1]
            if isinstance(pad, Pad) and all(uses[c.name] == 1 for c in chain):
                s = model.shapes[pad.inputs[0]]
                L = s[pad.axis]
                if int(np.prod(s)) == L:  # one signal: the padded axis is its only long one
                    for c in chain:
                        out[c.name] = {"drop": True}
                    out[layer.name] = {"reads": pad.inputs[0], "src": _pad_map(pad, L), "fill": pad.value}
    cache["cpu_fuse"] = out
    return out
