"""Reading stored weights inside kernels (CPU and CUDA): float32, float16 and int8, one source.

Kernels are written once and numba specialises them per weight dtype:

* ``load(w)`` turns one stored weight into float32. float16 weights travel as ``uint16``
  bit patterns (numba's CPU target has no float16 type); the conversion is a single LLVM
  ``fpext`` that vectorises to ``vcvtph2ps`` on x86. The same intrinsic compiles for CUDA
  (NVVM has ``half`` too: it becomes one ``cvt.f32.f16``), so GPU kernels use it unchanged.
* ``scaled(w)`` is a compile-time constant: True for int8 weights, whose per-output-column
  float32 scale is applied once to each finished dot product, outside the inner loop.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from .. import _cache  # noqa: F401  (before any cache=True function is defined)


@intrinsic
def f16_bits_to_f32(typingctx, bits):
    """Reinterpret a uint16 as an IEEE half and widen it to float32."""
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 16):
        return None

    def codegen(context, builder, signature, args):
        half = builder.bitcast(args[0], ir.HalfType())
        return builder.fpext(half, ir.FloatType())

    return types.float32(bits), codegen


def load(w):
    """Stored weight -> float32.

    Compiled code uses the overload below; this Python body runs only where kernels run as
    Python (the CUDA simulator), with numpy scalars.
    """
    if isinstance(w, np.uint16):
        return np.float32(w.view(np.float16))
    return np.float32(w)


def scaled(w):
    """True when weights of this dtype carry per-column scales (int8).

    A compile-time constant in compiled code (the overload below); the Python body serves
    the CUDA simulator.
    """
    return isinstance(w, np.int8)


# Not ``inline="always"``: LLVM inlines these one-instruction functions anyway, while
# numba's IR inlining of every ``load`` in every loop cost a tenth of a cold compile.
@overload(load)
def _load(w):
    if isinstance(w, types.Float):
        return lambda w: np.float32(w)
    if isinstance(w, types.Integer) and w.bitwidth == 8 and w.signed:
        return lambda w: np.float32(w)
    if isinstance(w, types.Integer) and w.bitwidth == 16 and not w.signed:
        return lambda w: f16_bits_to_f32(w)
    return None


def scaled_type(t) -> bool:
    """Whether weights of numba element type ``t`` carry per-column scales (int8): the one
    test behind ``scaled``, ``scale_of`` and the kernels' type-chosen overloads."""
    return isinstance(t, types.Integer) and t.bitwidth == 8


@overload(scaled)
def _scaled(w):
    if scaled_type(w):
        return lambda w: True
    return lambda w: False


def scale_of(w, scale):
    """``scale`` when weights of w's dtype carry per-column scales (int8), else None.

    Decided by the type in compiled code (the overload below), so a caller passes the
    result straight on (``cpu_kernels._finish``) and numba types only the arm it needs,
    where ``if scaled(w)`` types and lowers both; the Python body serves the CUDA simulator.
    """
    return scale if scaled(w) else None


@overload(scale_of)
def _scale_of(w, scale):
    if scaled_type(w):
        return lambda w, scale: scale
    return lambda w, scale: None


def kernel_view(array: np.ndarray) -> np.ndarray:
    """The array a kernel receives for a stored weight: float16 becomes its uint16 bits."""
    if array.dtype == np.float16:
        return array.view(np.uint16)
    return array
