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

Speed. The unit functions take a ``std`` flag meaning "the activations are the cell's
defaults" (sigmoid/tanh). Each CPU kernel is compiled twice from one source, with ``std``
a compile-time constant (``cpu_kernels.DEFAULT_ACTS``); the small functions here are
inlined into the kernels at numba's IR level (LLVM does not reliably inline separately
compiled numba functions), so with ``std=True`` the generic activation switch folds away
and the unit loop vectorises. ``tanh`` and ``sigmoid`` are branch-free rational
approximations (fitted by ``tools/fit_tanh.py``): max abs error 3.6e-7 for tanh, 2.1e-7 for
sigmoid, |tanh| <= 1; ``tests/test_math.py`` pins these bounds. A per-sample LSTM step
is a chain of them (gate, cell, output gate), so they are written for latency (see
``_ratio``: 16 cycles of multiply-adds deep instead of 23), and sigmoid with its halvings
folded into its coefficients. Only the generic switch
``activate`` stays an out-of-line call, which keeps compile times short.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

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

# error_model="numpy": a division by zero gives inf/NaN instead of a Python exception, so
# no check is emitted per division (checks would also block vectorisation).
_JIT = dict(cache=True, nogil=True, error_model="numpy")
_INLINE = dict(_JIT, inline="always")

# tanh(x) ~ x * P(x^2) / Q(x^2), clamped at +-7.983416 (see tools/fit_tanh.py): the first
# float32 past 7.9 where x * P / Q is exactly 1.0 under every way the compiler may fuse its
# multiply-adds, and never above 1 before it. So tanh is exactly +-1 from the clamp on, and
# sigmoid, the same evaluation at x/2, exactly 1 and 0, without a select after the division
# (one per end cost a per-sample LSTM step 6-8%: more live constants, spilled registers).
# The kernels' flags also let LLVM reassociate; tests check their compiled saturation.
_TANH_CLAMP = np.float32(7.983416)
_P1 = np.float32(0.137298524)
_P2 = np.float32(0.00393125415)
_P3 = np.float32(2.93021858e-05)
_P4 = np.float32(3.38261152e-08)
_P5 = np.float32(-1.47619035e-11)
_Q1 = np.float32(0.470631868)
_Q2 = np.float32(0.0274752136)
_Q3 = np.float32(0.000405041414)
_Q4 = np.float32(1.37940378e-06)
_ONE = np.float32(1.0)
_HALF = np.float32(0.5)
_ZERO = np.float32(0.0)
_INF = np.float32(np.inf)


# sigmoid(x) = 1/2 + tanh(x/2)/2 = 1/2 + x * (p(x^2/4)/4) / q(x^2/4): the same fit with
# its coefficients scaled by powers of two, clamped at twice tanh's clamp. Every step of
# the evaluation is then tanh's scaled by a power of two, so it rounds the same: sigmoid's
# ratio at 2x is exactly half of tanh's at x (tests/test_math.py checks the bits).
_SIG_CLAMP = np.float32(2) * _TANH_CLAMP
_SP0 = np.float32(0.25)
_SP1, _SP2, _SP3, _SP4, _SP5 = (np.float32(c / 4.0 ** (k + 2)) for k, c in enumerate((_P1, _P2, _P3, _P4, _P5)))
_SQ1, _SQ2, _SQ3, _SQ4 = (np.float32(c / 4.0 ** (k + 1)) for k, c in enumerate((_Q1, _Q2, _Q3, _Q4)))


@njit(**_INLINE)
def _ratio(x, p0, p1, p2, p3, p4, p5, q1, q2, q3, q4):
    """x * p(z) / q(z) for z = x^2, p of degree 5 and q of degree 4 in z (q's constant term 1).

    Written as ``(p0 x + xz (p1 + p2 z + z^2 (p3 + p4 z + p5 z^2))) / (1 + z (q1 + q2 z +
    z^2 (q3 + q4 z)))``: the sub-polynomials run side by side, so the longest chain is
    four multiply-adds after z rather than Horner's six, and each sum still ends in one
    rounding next to its leading term (the relative error near 0 stays that of Horner's).
    """
    z = x * x
    z2 = z * z
    b = (p5 * z2 + (p4 * z + p3)) * z2 + (p2 * z + p1)
    num = (x * z) * b + p0 * x
    den = ((q4 * z + q3) * z2 + (q2 * z + q1)) * z + _ONE
    return num / den


@njit(**_INLINE)
def tanh(x):
    """Hyperbolic tangent of a float32, branch-free (abs error <= 3.6e-7); NaN -> NaN."""
    return _tanh_within(x, _TANH_CLAMP)


@njit(**_INLINE)
def _tanh_within(x, bound):
    """tanh(clip(x, bound)) for ``bound`` <= the clamp: one clamp serves both (see ``gate_g``)."""
    # min/max, not selects: see ``clip``. A NaN passes through (Python's max/min keep the
    # first argument unless the second compares greater/smaller).
    x = min(max(x, -bound), bound)
    # Exactly +-1 at the clamp (true tanh is within 2.3e-7 of it there) by the clamp's choice.
    return _ratio(x, _ONE, _P1, _P2, _P3, _P4, _P5, _Q1, _Q2, _Q3, _Q4)


@njit(**_INLINE)
def sigmoid(x):
    """Logistic function of a float32 (abs error <= 2.1e-7, result in [0, 1]); NaN -> NaN.

    tanh's approximation at x/2, with the two halvings in the coefficients: one multiply
    fewer on a gate's dependency chain, and an add where tanh's result needed a multiply-add.
    """
    return _sigmoid_within(x, _SIG_CLAMP)


@njit(**_INLINE)
def _sigmoid_within(x, bound):
    """sigmoid(clip(x, bound)) for ``bound`` <= the clamp (see ``gate_f``)."""
    x = min(max(x, -bound), bound)
    # At +-the clamp the ratio is exactly +-0.5 (tanh's 1.0, halved exactly), so a saturated
    # gate is exactly 1 or 0, as references compute it: a forget gate of 1 keeps the cell.
    return _HALF + _ratio(x, _SP0, _SP1, _SP2, _SP3, _SP4, _SP5, _SQ1, _SQ2, _SQ3, _SQ4)


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
        return max(x, _ZERO)
    if code == IDENTITY:
        return x
    if code == AFFINE:
        return alpha * x + beta
    if code == LEAKYRELU:
        return x if x >= 0 else alpha * x
    if code == THRESHOLDEDRELU:
        # ONNX's RNN page says "x if x >= alpha", its ThresholdedRelu op says "x > alpha";
        # the two differ only at x == alpha exactly, where onnxruntime returns x.
        return x if x >= alpha else _ZERO
    if code == SCALEDTANH:
        return alpha * tanh(beta * x)
    if code == HARDSIGMOID:
        return min(max(alpha * x + beta, _ZERO), _ONE)
    if code == ELU:
        return x if x >= 0 else alpha * (math.exp(x) - _ONE)
    if code == SOFTSIGN:
        return x / (_ONE + abs(x))
    if code == SOFTPLUS:
        return softplus(x)
    if code == GELU:
        return _HALF * x * (_ONE + math.erf(x * np.float32(0.7071067811865476)))
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
        return _ONE / x
    return np.float32(np.nan)


@njit(**_INLINE)
def clip(x, bound):
    """Bound ``x`` to ``[-bound, bound]``; NaN passes through unchanged."""
    # Written as max then min (numba keeps Python's semantics: ``max(x, b)`` is b only when
    # b > x, so a NaN x stays). Each becomes one vmaxps/vminps in a vectorised unit loop;
    # as comparisons and selects, LLVM merged the clip, the activations' clamps and the
    # coupled-gate choice into mask arithmetic: an LSTM unit loop had 23 blends, now 7.
    return min(max(x, -bound), bound)


@njit(**_INLINE)
def act(x, a):
    """Apply the activation triple ``a = [code, alpha, beta]`` to ``x``."""
    return activate(x, int(a[0]), a[1], a[2])


@njit(**_INLINE)
def gate_f(x, a, bound, std):
    """A cell's gate activation of a clipped pre-activation, ``f(clip(x, bound))``: sigmoid
    when ``std``, else the triple ``a``."""
    # sigmoid clamps its argument anyway: clipping to ``bound`` first is clamping to the
    # smaller of the two (the same value, NaN included), two instructions a gate fewer on
    # its dependency chain. ``min(bound, ...)`` is loop-invariant: LLVM computes it once.
    if std:
        return _sigmoid_within(x, min(bound, _SIG_CLAMP))
    return act(clip(x, bound), a)


@njit(**_INLINE)
def gate_g(x, a, bound, std):
    """A cell's candidate/output activation (``g``, ``h``) of ``clip(x, bound)``: tanh when
    ``std``, else ``a``. ``bound`` inf: no clip (folded away for tanh)."""
    if std:
        return _tanh_within(x, min(bound, _TANH_CLAMP))
    return act(clip(x, bound), a)


# --- cell updates, one hidden unit ------------------------------------------------------


@njit(**_INLINE)
def rnn_unit(pre, f, bound, std):
    """Elman RNN: new hidden value from the pre-activation (``std``: f is tanh)."""
    return gate_g(pre, f, bound, std)


def peephole(pre, p, c):
    """A gate's pre-activation with its peephole term: ``pre + p * c``, or ``pre`` when p is None.

    Compiled code takes the overload below, chosen by p's type, so a cell without
    peepholes computes no term at all: adding ``0 * c`` instead put a multiply-add on the
    output gate's dependency chain (LLVM may not drop it: 0 * inf is NaN). This Python body
    serves the CUDA simulator.
    """
    return pre if p is None else pre + p * c


def peephole_for(pre, p, c):
    """``peephole``'s implementation for these argument types: the choice both targets register.

    The CPU inlines it at numba-IR level (below). The CUDA backend registers it for its
    own target, not inlined (``backends/cuda.py``): numba-cuda (0.30) fails to lower a
    numba-core overload marked ``inline="always"`` (its arguments reach the body as
    omitted defaults), and registering it here for CUDA would import numba-cuda with the
    CPU runtime.
    """
    if isinstance(p, types.NoneType):
        return lambda pre, p, c: pre
    return lambda pre, p, c: pre + p * c


overload(peephole, inline="always", target="cpu")(peephole_for)


@njit(**_INLINE)
def lstm_unit(i_pre, o_pre, f_pre, c_pre, c_prev, p_i, p_o, p_f, f, g, h, bound, coupled, std):
    """LSTM: returns ``(h_new, c_new)`` for one hidden unit (before any projection).

    ``std``: f, g, h are sigmoid, tanh, tanh. ``p_i``, ``p_o``, ``p_f``: the unit's
    peephole weights, or all None without peepholes (see ``peephole``).
    """
    i = gate_f(peephole(i_pre, p_i, c_prev), f, bound, std)
    if coupled:
        fg = _ONE - i
    else:
        fg = gate_f(peephole(f_pre, p_f, c_prev), f, bound, std)
    c = fg * c_prev + i * gate_g(c_pre, g, bound, std)
    o = gate_f(peephole(o_pre, p_o, c), f, bound, std)
    return o * gate_g(c, h, _INF, std), c  # the cell state is not clipped


@njit(**_INLINE)
def gru_gate(pre, f, bound, std):
    """GRU update or reset gate from its pre-activation (``std``: f is sigmoid)."""
    return gate_f(pre, f, bound, std)


@njit(**_INLINE)
def gru_unit(z, n_pre, h_prev, g, bound, std):
    """GRU: new hidden value from the update gate ``z`` and the candidate pre-activation."""
    n = gate_g(n_pre, g, bound, std)
    return (_ONE - z) * n + z * h_prev

