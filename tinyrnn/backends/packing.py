"""Layer parameters packed into the arrays every backend's kernels read.

Backend-neutral: the CPU backend passes these arrays to its Numba kernels as they are, the
CUDA backend uploads them once. What a recurrent kernel receives per direction ``d``:

* ``W``, ``R``, ``proj``: the stored matrices (float16 viewed as uint16 bits; a
  ``(D, 1, 1)`` dummy stands in for an absent projection);
* ``V (D, K)`` float32: every vector the cell needs, packed (``vector_layout``);
* ``cfg (D, CFG_SIZE)`` float32: activations and flags (the ``CFG_*`` offsets).
"""

from __future__ import annotations

import math

import numpy as np

from .. import spec
from ..layers import Activation, Dense, Embedding, Layer, Recurrent, Softmax
from .simd import LANES as PANEL
from .simd import SMALL
from .weights import kernel_view

# Input weights packed into panels from this many (8 KiB of float32; see pack_input_panels)
INPUT_PANELS_MIN = 2048
# Bytes on which every weight matrix a CPU kernel reads with vector loads starts: a cache
# line. numpy and memory-mapped .trnn tensors guarantee 16 and 8 bytes; a 32-byte load
# then straddles two lines every other time: an LSTM 1->32 step's recurrent product took
# 1.5x as long with R 16 bytes off a line, the whole step 1.3x (benchmarks/RESULTS.md,
# "Eighth session").
ALIGN = 64

# cfg row layout (per direction)
CFG_F = 0  # activation triples [code, alpha, beta]: f at 0..2, g at 3..5, h at 6..8
CFG_G = 3
CFG_H = 6
CFG_CLIP = 9
CFG_COUPLED = 10
CFG_PEEPHOLES = 11
CFG_PROJ = 12
CFG_REVERSE = 13
CFG_LBR = 14
CFG_YOFF = 15
CFG_STD = 16  # 1 when the activations are the cell's defaults (sigmoid, tanh): fast path
CFG_SIZE = 17


def vector_layout(G: int, H: int, Hr: int) -> dict[str, tuple[int, int]]:
    """Offsets ``(start, stop)`` of each packed vector in a row of ``V``.

    ``bias`` is Wb+Rb per gate (for a GRU with linear_before_reset=1 the h gate holds Wbh
    only, Rbh sits in ``rbh``); ``peep`` is [Pi, Po, Pf]; ``sW``/``sR``/``sP`` are the int8
    scales of W, R and proj (ones for float weights).
    """
    GH = G * H
    return {
        "bias": (0, GH),
        "rbh": (GH, GH + H),
        "peep": (GH + H, GH + 4 * H),
        "sW": (GH + 4 * H, 2 * GH + 4 * H),
        "sR": (2 * GH + 4 * H, 3 * GH + 4 * H),
        "sP": (3 * GH + 4 * H, 3 * GH + 4 * H + Hr),
    }


def _activation_row(a) -> list[float]:
    name, alpha, beta = a
    return [float(spec.ACTIVATIONS[name]), alpha, beta]


def prepare_recurrent(layer: Recurrent) -> dict:
    D, H, G, Hr = layer.num_directions, layer.hidden_size, layer.gates, layer.recurrent_size
    GH = G * H
    p = layer.params
    lay = vector_layout(G, H, Hr)
    V = np.zeros((D, lay["sP"][1]), np.float32)
    for d in range(D):
        wb, rb = p["B"][d, :GH], p["B"][d, GH:]
        bias = wb + rb
        if layer.cell == "gru" and layer.linear_before_reset:
            # Rbh sits inside r * (h·Rh + Rbh): keep it apart from the hoisted bias
            bias[2 * H:] = wb[2 * H:]
            V[d, slice(*lay["rbh"])] = rb[2 * H:]
        V[d, slice(*lay["bias"])] = bias
        if layer.peepholes:
            V[d, slice(*lay["peep"])] = p["P"][d]
        for key, tensor in (("sW", "W"), ("sR", "R"), ("sP", "proj")):
            scale = p.get(tensor + "_scale")
            V[d, slice(*lay[key])] = 1.0 if scale is None else scale[d]
    cfg = np.zeros((D, CFG_SIZE), np.float32)
    for d in range(D):
        for slot, a in zip((CFG_F, CFG_G, CFG_H), layer.activations_for(d)):
            cfg[d, slot:slot + 3] = _activation_row(a)
        cfg[d, CFG_CLIP] = np.inf if layer.clip is None else layer.clip
        cfg[d, CFG_COUPLED] = layer.input_forget
        cfg[d, CFG_PEEPHOLES] = layer.peepholes
        cfg[d, CFG_PROJ] = layer.proj_size > 0
        cfg[d, CFG_REVERSE] = layer.direction == "reverse" or d == 1
        cfg[d, CFG_LBR] = layer.linear_before_reset
        cfg[d, CFG_YOFF] = d * Hr
        default = [[a, *spec.activation_params(a)] for a in spec.CELL_DEFAULT_ACTIVATIONS[layer.cell]]
        cfg[d, CFG_STD] = layer.activations_for(d) == default
    W = kernel_view(p["W"])
    proj = kernel_view(p["proj"]) if layer.proj_size else np.zeros((D, 1, 1), W.dtype)
    return {"W": W, "R": kernel_view(p["R"]), "proj": proj, "V": V, "cfg": cfg}


def empty_aligned(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype`` starting on an ``ALIGN``-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    buf = np.empty(nbytes + ALIGN, np.uint8)
    start = -buf.ctypes.data % ALIGN
    return buf[start:start + nbytes].view(dtype).reshape(shape)


def aligned(a: np.ndarray) -> np.ndarray:
    """``a`` if it is C-contiguous and starts on an ``ALIGN``-byte boundary, else such a copy.

    The copy keeps ``a``'s writeable flag: numba types read-only arrays (memory-mapped
    weights) apart from writable ones, and a kernel should compile once per model either way.
    """
    if a.flags.c_contiguous and a.ctypes.data % ALIGN == 0:
        return a
    out = empty_aligned(a.shape, a.dtype)
    out[...] = a
    out.flags.writeable = a.flags.writeable
    return out


def pack_panels(M: np.ndarray, small: int = SMALL) -> np.ndarray:
    """Recurrent-layer weights ``(D, n, GH)`` -> column panels ``(D, GH // PANEL, n, PANEL)``, a copy.

    A panel holds ``PANEL`` columns (one vector register's worth, ``simd.LANES``) of every
    row, contiguously, so a kernel walks it top to bottom with its sums in registers
    (``cpu_kernels._panel_acc``). Only matrices of more than ``small`` weights are packed
    (by default those too large for L1, ``simd.SMALL``); the others get an empty
    ``(D, 0, n, PANEL)`` array and are read as they are. Columns past the last whole panel
    are read from ``M`` itself. Costs one more copy of the packed matrices in memory (CPU
    backend only). The copy starts on an ``ALIGN``-byte boundary, and so does every panel.
    """
    D, n, GH = M.shape
    if n * GH <= small:
        return np.zeros((D, 0, n, PANEL), M.dtype)
    S = GH // PANEL
    P = empty_aligned((D, S, n, PANEL), M.dtype)
    P[...] = M[:, :, :S * PANEL].reshape(D, n, S, PANEL).transpose(0, 2, 1, 3)
    return P


def pack_input_panels(W: np.ndarray) -> np.ndarray:
    """``pack_panels`` for input weights ``W (D, I, GH)``: packed from ``INPUT_PANELS_MIN`` weights.

    A hoisted input product walks W's panels once per chunk of steps, four steps sharing
    each weight load (``cpu_kernels._hoist``); without panels every step reads all of W.
    That pays for matrices well below L1's size: W and R compete for L1 and L2 (LSTM
    64->64: 64 KiB each, both read every step; 0.77x the time per step with W's panels).
    A step computed on its own still reads a small W through register tiles, which is
    faster for one row and gives the same bits (``cpu_kernels._rows_product``).
    """
    return pack_panels(W, INPUT_PANELS_MIN)


def prepare(layer: Layer) -> dict:
    """Kernel-ready arrays of one layer (see the module docstring)."""
    p = layer.params
    if isinstance(layer, Recurrent):
        return prepare_recurrent(layer)
    if isinstance(layer, Dense):
        scale = p.get("W_scale", np.ones(layer.out_features, np.float32))
        return {"W": kernel_view(p["W"]), "b": p["b"], "scale": scale}
    if isinstance(layer, Embedding):
        scale = p.get("table_scale", np.ones(layer.vocab_size, np.float32))
        return {"table": kernel_view(p["table"]), "scale": scale}
    if isinstance(layer, Activation):
        return {"a": np.array([spec.ACTIVATIONS[layer.fn], layer.alpha, layer.beta], np.float32)}
    if isinstance(layer, Softmax):
        return {"log": layer.log}
    raise NotImplementedError(f"no kernel arrays are defined for layer type {layer.type!r}")


