"""The math of every cell, written once, as scalar ``@njit`` functions.

CPU kernels (``tinyrnn.backends.cpu``) call these inside their loops; CUDA kernels
(``tinyrnn.backends.cuda``) call the very same functions from ``@cuda.jit`` code. Backends
differ in loop structure and memory only. Notation follows the ONNX operator pages; every
``*_pre`` argument is a gate's pre-activation ``x·W + h·R + Wb + Rb`` for one hidden unit.

RNN::

    H = f(clip(pre))

LSTM (gates i, o, f, c; activations f, g, h; peepholes p_i, p_o, p_f)::

    i = f(clip(i_pre + p_i * C_prev))
    f = 1 - i                                   if coupled (ONNX input_forget=1)
        f(clip(f_pre + p_f * C_prev))           otherwise
    C = f * C_prev + i * g(clip(c_pre))
    o = f(clip(o_pre + p_o * C))
    H = o * h(C)                                (the projection, if any, is applied after)

GRU (gates z, r, h; activations f, g)::

    z = f(clip(z_pre))
    r = f(clip(r_pre))
    linear_before_reset=0:  n = g(clip(x·Wh + (r * H_prev)·Rh + Wbh + Rbh))
    linear_before_reset=1:  n = g(clip(x·Wh + Wbh + r * (H_prev·Rh + Rbh)))
    H = (1 - z) * n + z * H_prev

``clip`` bounds a pre-activation to ``[-clip, clip]``; it is applied to the gates' inputs
only, not to ``C`` before ``h`` (onnxruntime does the same). A clip of ``inf`` is no clip.

Activations are selected by integer code (``tinyrnn.spec.ACTIVATIONS``) with ONNX's
``alpha``/``beta``. An activation triple ``act`` is a float32 array ``[code, alpha, beta]``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .. import _cache  # noqa: F401  (before any cache=True function is defined)

# Activation codes, mirrored from tinyrnn.spec.ACTIVATIONS (numba needs module constants).
RELU = 0
TANH = 1
SIGMOID = 2
AFFINE = 3
LEAKYRELU = 4
THRESHOLDEDRELU = 5
SCALEDTANH = 6
HARDSIGMOID = 7
ELU = 8
SOFTSIGN = 9
SOFTPLUS = 10
IDENTITY = 11
GELU = 12
SILU = 13
EXP = 14
ABS = 15
SQRT = 16
NEG = 17
LOG = 18
SQUARE = 19
RECIPROCAL = 20

_JIT = dict(cache=True, nogil=True)


@njit(**_JIT)
def sigmoid(x):
    """Logistic function, float32 in and out, exact to a few ulp, no overflow."""
    if x >= 0:
        return np.float32(1.0) / (np.float32(1.0) + math.exp(-x))
    e = math.exp(x)
    return e / (np.float32(1.0) + e)


@njit(**_JIT)
def tanh(x):
    """Hyperbolic tangent, float32."""
    return math.tanh(x)


@njit(**_JIT)
def softplus(x):
    """log(1 + e^x) without overflow for large x."""
    if x > 20:
        return x
    return math.log1p(math.exp(x))


@njit(**_JIT)
def activate(x, code, alpha, beta):
    """Apply activation ``code`` with ONNX's ``alpha``/``beta`` to one float32 value."""
    if code == SIGMOID:
        return sigmoid(x)
    if code == TANH:
        return tanh(x)
    if code == RELU:
        return max(x, np.float32(0.0))
    if code == IDENTITY:
        return x
    if code == AFFINE:
        return alpha * x + beta
    if code == LEAKYRELU:
        return x if x >= 0 else alpha * x
    if code == THRESHOLDEDRELU:
        # ONNX's RNN page says "x if x >= alpha", its ThresholdedRelu op says "x > alpha";
        # the two differ only at x == alpha exactly, where onnxruntime returns x.
        return x if x >= alpha else np.float32(0.0)
    if code == SCALEDTANH:
        return alpha * tanh(beta * x)
    if code == HARDSIGMOID:
        return min(max(alpha * x + beta, np.float32(0.0)), np.float32(1.0))
    if code == ELU:
        return x if x >= 0 else alpha * (math.exp(x) - np.float32(1.0))
    if code == SOFTSIGN:
        return x / (np.float32(1.0) + abs(x))
    if code == SOFTPLUS:
        return softplus(x)
    if code == GELU:
        return np.float32(0.5) * x * (np.float32(1.0) + math.erf(x * np.float32(0.7071067811865476)))
    if code == SILU:
        return x * sigmoid(x)
    if code == EXP:
        return math.exp(x)
    if code == ABS:
        return abs(x)
    if code == SQRT:
        return math.sqrt(x) if x >= 0 else np.float32(np.nan)
    if code == NEG:
        return -x
    if code == LOG:
        return math.log(x) if x > 0 else (np.float32(-np.inf) if x == 0 else np.float32(np.nan))
    if code == SQUARE:
        return x * x
    if code == RECIPROCAL:
        return np.float32(1.0) / x
    return np.float32(np.nan)


@njit(**_JIT)
def clip(x, bound):
    """Bound ``x`` to ``[-bound, bound]``; NaN passes through unchanged."""
    if x > bound:
        return bound
    if x < -bound:
        return -bound
    return x


@njit(**_JIT)
def act(x, a):
    """Apply the activation triple ``a = [code, alpha, beta]`` to ``x``."""
    return activate(x, int(a[0]), a[1], a[2])


# --- cell updates, one hidden unit ------------------------------------------------------


@njit(**_JIT)
def rnn_unit(pre, f, bound):
    """Elman RNN: new hidden value from the pre-activation."""
    return act(clip(pre, bound), f)


@njit(**_JIT)
def lstm_unit(i_pre, o_pre, f_pre, c_pre, c_prev, p_i, p_o, p_f, f, g, h, bound, coupled):
    """LSTM: returns ``(h_new, c_new)`` for one hidden unit (before any projection)."""
    i = act(clip(i_pre + p_i * c_prev, bound), f)
    if coupled:
        fg = np.float32(1.0) - i
    else:
        fg = act(clip(f_pre + p_f * c_prev, bound), f)
    c = fg * c_prev + i * act(clip(c_pre, bound), g)
    o = act(clip(o_pre + p_o * c, bound), f)
    return o * act(c, h), c


@njit(**_JIT)
def gru_gate(pre, f, bound):
    """GRU update or reset gate from its pre-activation."""
    return act(clip(pre, bound), f)


@njit(**_JIT)
def gru_unit(z, n_pre, h_prev, g, bound):
    """GRU: new hidden value from the update gate ``z`` and the candidate pre-activation."""
    n = act(clip(n_pre, bound), g)
    return (np.float32(1.0) - z) * n + z * h_prev
