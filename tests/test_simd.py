"""The register-tiled matrix-vector product against numpy, for every weight dtype; the
sized kernels' shape hint."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from tinyrnn.backends.cpu_kernels import KERNEL, _matvec, _matvec_acc, _panel_acc
from tinyrnn.backends.packing import pack_panels
from tinyrnn.backends.simd import LANES, assume_shape, panels_matvec, tile_matmat4, tile_matvec


@njit(**KERNEL)
def _acc(src, M, dst, col0, ncols):
    _matvec_acc(src, 0, 1, M, dst, 1, 0, col0, ncols)


@njit(**KERNEL)
def _set(src, M, scale, bias, dst, col0, ncols):
    _matvec(src, 0, 1, M, scale, bias, dst, 1, 0, col0, ncols)


@njit(**KERNEL)
def _tiles4(src, M, dst, col0, ncols):
    # rows src[r, 1] -> dst[1, r] for r < 4: strides on both axes of both arrays
    return tile_matmat4(src, 0, 1, 1, 0, M, dst, 1, 0, 0, 1, col0, ncols)


@njit(**KERNEL)
def _tiles1(src, r, M, dst, col0, ncols):
    return tile_matvec(src, r, 1, 0, 0, M, dst, 1, r, 0, 0, col0, ncols)


@njit(**KERNEL)
def _tiles_only(src, M, dst, col0, ncols):
    return tile_matvec(src, 0, 1, 0, 0, M, dst, 1, 0, 0, 0, col0, ncols)


def _weights(rng, dtype, shape):
    if dtype == "float32":
        w = rng.normal(size=shape).astype(np.float32)
        return w, w
    if dtype == "float16":
        w = rng.normal(size=shape).astype(np.float16)
        return w.view(np.uint16), w.astype(np.float32)
    w = rng.integers(-127, 128, shape).astype(np.int8)
    return w, w.astype(np.float32)


SHAPES = [(16, 64, 0, 64), (3, 50, 0, 50), (17, 130, 2, 128), (1, 16, 0, 16), (32, 200, 8, 192), (5, 7, 0, 7),
          (64, 1024, 0, 1024)]  # the last is above SMALL: the row-wise path


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("rows, cols, col0, n", SHAPES)
def test_matvec_accumulates_like_numpy(rng, dtype, rows, cols, col0, n):
    src = rng.normal(size=(1, 2, rows)).astype(np.float32)
    stored, dense = _weights(rng, dtype, (rows, cols))
    dst = rng.normal(size=(2, 1, cols)).astype(np.float32)
    ref = dst.astype(np.float64)
    ref[1, 0, col0:col0 + n] += src[0, 1].astype(np.float64) @ dense[:, col0:col0 + n]
    _acc(src, stored, dst, col0, n)
    np.testing.assert_allclose(dst, ref, rtol=1e-5, atol=1e-4 * max(1, rows) ** 0.5)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("rows, cols, col0, n", SHAPES)
def test_product_into_a_row(rng, dtype, rows, cols, col0, n, with_bias):
    # _matvec's tiles store fresh sums (tile_matvec_affine), scaled (int8) and with the bias
    # added in registers; the columns past the tiles get the same in passes. Without a bias:
    # the bits of accumulating onto a zeroed row, which the hoisted and fused input products
    # rely on. With one: float weights give exactly (sum) + bias, int8 (sum) * scale + bias
    # as one fused multiply-add.
    src = rng.normal(size=(1, 2, rows)).astype(np.float32)
    stored, _ = _weights(rng, dtype, (rows, cols))
    scale = rng.uniform(0.5, 2.0, cols).astype(np.float32)
    bias = rng.normal(size=cols).astype(np.float32)
    sums = np.zeros((2, 1, cols), np.float32)
    _acc(src, stored, sums, col0, n)
    s, sc, b = sums[1, 0, col0:col0 + n], scale[col0:col0 + n], bias[col0:col0 + n]
    if not with_bias:
        expect = s * sc if dtype == "int8" else s
    elif dtype == "int8":
        expect = (s.astype(np.float64) * sc + b).astype(np.float32)  # the product is exact in float64
    else:
        expect = s + b
    dst = rng.normal(size=(2, 1, cols)).astype(np.float32)  # stale values the product must replace
    before = dst.copy()
    _set(src, stored, scale, bias if with_bias else None, dst, col0, n)
    if with_bias and dtype == "int8":  # float64 then float32 rounds twice; a fused multiply-add once
        np.testing.assert_array_max_ulp(dst[1, 0, col0:col0 + n], expect, maxulp=1)
    else:
        np.testing.assert_array_equal(dst[1, 0, col0:col0 + n], expect)
    outside = np.s_[col0:col0 + n]
    np.testing.assert_array_equal(np.delete(dst[1, 0], outside), np.delete(before[1, 0], outside))
    np.testing.assert_array_equal(dst[0], before[0])


def test_tiles_leave_the_tail_to_the_caller(rng):
    src = rng.normal(size=(1, 2, 8)).astype(np.float32)
    M = rng.normal(size=(8, 40)).astype(np.float32)
    dst = np.zeros((2, 1, 40), np.float32)
    done = _tiles_only(src, M, dst, 0, 40)
    assert done == 40 // LANES * LANES
    np.testing.assert_allclose(dst[1, 0, :done], src[0, 1] @ M[:, :done], rtol=1e-5, atol=1e-5)
    assert not dst[1, 0, done:].any() and not dst[0].any()


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("rows, cols, col0, n", SHAPES)
def test_four_row_tiles_match_numpy(rng, dtype, rows, cols, col0, n):
    """tile_matmat4: four rows share each weight load; it does whole vectors of columns only."""
    src = rng.normal(size=(4, 2, rows)).astype(np.float32)
    stored, dense = _weights(rng, dtype, (rows, cols))
    dst = rng.normal(size=(2, 4, cols)).astype(np.float32)
    ref = dst.astype(np.float64)
    done = _tiles4(src, stored, dst, col0, n)
    assert done == n // LANES * LANES
    ref[1, :, col0:col0 + done] += src[:, 1].astype(np.float64) @ dense[:, col0:col0 + done]
    np.testing.assert_allclose(dst, ref, rtol=1e-5, atol=1e-4 * max(1, rows) ** 0.5)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_grouping_does_not_change_a_row(rng, dtype):
    """A row computed with three others gives the bits of the same row alone."""
    rows, cols = 40, 200
    src = rng.normal(size=(4, 2, rows)).astype(np.float32)
    stored, _ = _weights(rng, dtype, (rows, cols))
    grouped = np.zeros((2, 4, cols), np.float32)
    _tiles4(src, stored, grouped, 0, cols)
    for r in range(4):
        alone = np.zeros((2, 4, cols), np.float32)
        _tiles1(src, r, stored, alone, 0, cols)
        np.testing.assert_array_equal(alone[1, r], grouped[1, r])


@njit(**KERNEL)
def _panels(src, M, P, dst, nrows, col0, ncols):
    # rows r: src[1, T-1-r] (time reversed) -> dst[r, 1]
    _panel_acc(src, 1, src.shape[1] - 1, 0, -1, M, P, dst, 0, 1, 1, 0, nrows, col0, ncols)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("nrows", [1, 4, 7])
@pytest.mark.parametrize("col0,ncols", [(0, 200), (5, 150), (16, 32), (3, 10)])
def test_panel_product_matches_numpy(rng, dtype, nrows, col0, ncols):
    rows, cols = 90, 200  # 12 whole panels of 16 columns and 8 columns past them
    src = rng.normal(size=(2, 9, rows)).astype(np.float32)
    stored, dense = _weights(rng, dtype, (rows, cols))
    P = pack_panels(stored[None])[0]
    assert P.shape == (cols // LANES, rows, LANES)
    dst = rng.normal(size=(nrows, 2, cols)).astype(np.float32)
    ref = dst.astype(np.float64)
    for r in range(nrows):
        ref[r, 1, col0:col0 + ncols] += src[1, 8 - r].astype(np.float64) @ dense[:, col0:col0 + ncols]
    _panels(src, stored, P, dst, nrows, col0, ncols)
    np.testing.assert_allclose(dst, ref, rtol=1e-5, atol=1e-4 * rows ** 0.5)


def test_one_row_and_four_rows_give_the_same_bits(rng):
    src = rng.normal(size=(2, 9, 90)).astype(np.float32)
    M = rng.normal(size=(90, 200)).astype(np.float32)
    P = pack_panels(M[None])[0]
    four = np.zeros((4, 2, 200), np.float32)
    _panels(src, M, P, four, 4, 0, 200)
    for r in range(4):
        one = np.zeros((1, 2, 200), np.float32)
        _panels(src[:, :9 - r], M, P, one, 1, 0, 200)  # src[1, 8 - r] as the first row
        np.testing.assert_array_equal(one[0], four[r])


@njit(**KERNEL)
def _walk(src, P, p0, n, dst, backward):
    panels_matvec(src, 0, 1, P, p0, n, dst, 1, 0, backward)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
@pytest.mark.parametrize("p0,n", [(0, 12), (2, 7), (5, 3), (11, 1)])
def test_panels_walked_backward_give_the_same_bits(rng, dtype, p0, n):
    """Walking the panels last to first (odd steps of a kernel) changes only the reading order."""
    rows, cols = 90, 192  # 12 panels
    src = rng.normal(size=(1, 2, rows)).astype(np.float32)
    stored, dense = _weights(rng, dtype, (rows, cols))
    P = pack_panels(stored[None])[0]
    start = rng.normal(size=(2, 1, cols)).astype(np.float32)
    fwd, back = start.copy(), start.copy()
    _walk(src, P, p0, n, fwd, 0)
    _walk(src, P, p0, n, back, 3)
    np.testing.assert_array_equal(back, fwd)
    c0, c1 = p0 * LANES, (p0 + n) * LANES
    ref = start[1, 0].astype(np.float64)
    ref[c0:c1] += src[0, 1].astype(np.float64) @ dense[:, c0:c1]
    np.testing.assert_allclose(fwd[1, 0], ref, rtol=1e-5, atol=1e-4 * rows ** 0.5)
    np.testing.assert_array_equal(fwd[0], start[0])  # the other row untouched


@njit(**dict(KERNEL, cache=False))
def _reshaped_sum(a, n):
    b = assume_shape(a, (a.shape[0], 3, n))
    total = np.float32(0.0)
    for i in range(b.shape[0]):
        for j in range(b.shape[1]):
            row = b[i, j]
            for k in range(row.shape[0]):
                total += row[k] * np.float32(1 + k)
    return b.shape, b.size, total


def test_assume_shape_gives_the_same_array_with_constant_sizes():
    """``assume_shape`` with the array's own shape changes nothing the code computes: the
    same elements at the same indices (the kernels pass constants, LLVM folds them)."""
    a = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    shape, size, total = _reshaped_sum(a, 5)
    assert shape == (2, 3, 5) and size == 30
    assert total == np.float32((a * np.arange(1, 6, dtype=np.float32)).sum())
    view = np.zeros((4, 3, 8), np.float32)[1:3, :, 2:7]  # strides kept: a strided view too
    view[...] = a
    assert _reshaped_sum(view, 5)[2] == total
