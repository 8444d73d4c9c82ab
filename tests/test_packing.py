"""Packing for the CPU kernels: cache-line-aligned weights and panels, same values."""

from __future__ import annotations

import numpy as np
import pytest
from builders import random_recurrent, single_layer_model

from tinyrnn.backends import cpu
from tinyrnn.backends.packing import ALIGN, aligned, empty_aligned, pack_panels


def _offset_copy(a: np.ndarray, offset: int) -> np.ndarray:
    """A copy of ``a`` starting ``offset`` bytes past a cache line (as mmapped tensors may)."""
    buf = np.empty(a.nbytes + 2 * ALIGN, np.uint8)
    start = -buf.ctypes.data % ALIGN + offset
    out = buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


@pytest.mark.parametrize("shape", [(3, 5), (0, 4), (2, 0, 7, 16)])
def test_empty_aligned_starts_on_a_cache_line(shape):
    a = empty_aligned(shape, np.float32)
    assert a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous
    assert a.size == 0 or a.ctypes.data % ALIGN == 0  # an empty array has no bytes to load


@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.int8])
@pytest.mark.parametrize("offset", [0, 8, 16, 40])
@pytest.mark.parametrize("writeable", [True, False])
def test_aligned_copies_only_what_is_off_a_cache_line(rng, dtype, offset, writeable):
    src = _offset_copy(rng.integers(-100, 100, (2, 9, 24)).astype(dtype), offset)
    src.flags.writeable = writeable
    out = aligned(src)
    assert out.ctypes.data % ALIGN == 0
    assert out.dtype == src.dtype and out.shape == src.shape
    np.testing.assert_array_equal(out, src)
    assert out.flags.writeable == writeable  # numba types read-only arrays apart
    assert (out is src) == (offset == 0)


def test_panels_start_on_a_cache_line(rng):
    M = _offset_copy(rng.standard_normal((2, 40, 160)).astype(np.float32), 8)
    P = pack_panels(M, small=0)
    assert P.ctypes.data % ALIGN == 0 and P.shape == (2, 10, 40, 16)
    np.testing.assert_array_equal(P[1, 3], M[1, :, 48:64])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_unaligned_weights_reach_the_kernels_aligned_with_the_same_results(rng, cell):
    """Tensors memory-mapped from a .trnn start 8 bytes apart: the tiles' matrices get copied."""
    layer, _ = random_recurrent(rng, cell, 3, 16)
    x = rng.standard_normal((2, 20, 3)).astype(np.float32)
    expected = single_layer_model(layer).run(x)
    for name in ("W", "R"):
        layer.params[name] = _offset_copy(layer.params[name], 8)
    model = single_layer_model(layer)
    prep = cpu.prepared(model)[0]
    for name in ("W", "R"):
        assert prep[name].ctypes.data % ALIGN == 0
        np.testing.assert_array_equal(prep[name], layer.params[name])
    np.testing.assert_array_equal(model.run(x), expected)
    s = model.stream(batch=2)
    np.testing.assert_array_equal(np.stack([s.step(x[:, t]) for t in range(20)], 1), expected)
