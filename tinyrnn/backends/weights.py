"""Reading stored weights inside CPU kernels: float32, float16 and int8, one source.

Kernels are written once and numba specialises them per weight dtype:

* ``load(w)`` turns one stored weight into float32. float16 weights travel as ``uint16``
  bit patterns (numba's CPU target has no float16 type); the conversion is a single LLVM
  ``fpext`` that vectorises to ``vcvtph2ps`` on x86.
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


def load(w):  # pragma: no cover - replaced by the overload inside compiled code
    """Stored weight -> float32 (compiled code only)."""
    raise NotImplementedError


def scaled(w):  # pragma: no cover - replaced by the overload inside compiled code
    """True when weights of this dtype carry per-column scales (compiled code only)."""
    raise NotImplementedError


@overload(load, inline="always")
def _load(w):
    if isinstance(w, types.Float):
        return lambda w: np.float32(w)
    if isinstance(w, types.Integer) and w.bitwidth == 8 and w.signed:
        return lambda w: np.float32(w)
    if isinstance(w, types.Integer) and w.bitwidth == 16 and not w.signed:
        return lambda w: f16_bits_to_f32(w)
    return None


@overload(scaled, inline="always")
def _scaled(w):
    if isinstance(w, types.Integer) and w.bitwidth == 8:
        return lambda w: True
    return lambda w: False


def kernel_view(array: np.ndarray) -> np.ndarray:
    """The array a kernel receives for a stored weight: float16 becomes its uint16 bits."""
    if array.dtype == np.float16:
        return array.view(np.uint16)
    return array
