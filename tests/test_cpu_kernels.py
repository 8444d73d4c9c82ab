"""What the CPU kernels' compile options promise the machine code: no reference counting in
the loops, and (where numba has the flag) array arguments that LLVM may treat as disjoint.

These pin the two causes of a per-sample LSTM step costing ~1,900 instead of ~1,400
instructions (benchmarks/RESULTS.md, "Instructions per step"); the kernels' values are
checked against the oracle in tests/test_layers.py and tests/test_stream.py.
"""

from __future__ import annotations

import re

import numpy as np
from numba import njit
from numba.core.compiler import Flags

from tinyrnn.backends import cpu_kernels as K

UNCACHED = dict(K.KERNEL, cache=False)


@njit(**dict(K.HELPER, cache=False))
def _scale_row(src, i, dst, j, s):
    for k in range(src.shape[1]):
        dst[j, k] = src[i, k] * s


def _llvm(fn, *args) -> str:
    fn(*args)
    return fn.inspect_llvm(fn.signatures[0])


def test_arrays_passed_to_inlined_helpers_are_not_reference_counted():
    def body(src, dst):
        for t in range(src.shape[0]):
            row = dst[t]  # a view inside the loop: free without numba's runtime
            row[0] = 0.0
            _scale_row(src, t, dst, t, np.float32(2.0))

    src = np.arange(12, dtype=np.float32).reshape(3, 4)
    plain, counted = njit(**UNCACHED)(body), njit(**dict(UNCACHED, _nrt=True))(body)
    dst = np.zeros_like(src)
    ir = _llvm(plain, src, dst)
    np.testing.assert_array_equal(dst, 2 * src)
    assert "NRT_incref" not in ir and "NRT_decref" not in ir
    # the control: numba's default does count them, so the check above can fail
    assert "NRT_decref" in _llvm(counted, src, np.zeros_like(src))


def test_recurrent_kernels_mark_their_arrays_noalias():
    if not hasattr(Flags, "noalias"):  # pragma: no cover - a numba without the flag
        assert "noalias" not in K.RECURRENT
        return
    assert K.RECURRENT["noalias"] is True

    def body(a, b):
        for i in range(a.shape[0]):
            b[i] = a[i] + 1.0

    fn = njit(**dict(K.RECURRENT, cache=False))(body)
    a = np.arange(4, dtype=np.float32)
    b = np.empty_like(a)
    ir = _llvm(fn, a, b)
    np.testing.assert_array_equal(b, a + 1)
    define = next(line for line in ir.splitlines() if line.startswith("define") and "body" in line)
    # argument 4 of numba's array struct is its data pointer
    for name in ("a", "b"):
        assert re.search(rf"ptr noalias [^%]*%arg\.{name}\.4\b", define), define
