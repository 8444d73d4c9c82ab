"""The scalar cell math: the fast tanh/sigmoid approximations hold their stated bounds."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from numba import njit

from tinyrnn.backends import cpu_kernels as K
from tinyrnn.cells import math as M

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import fit_tanh  # noqa: E402  (the tool that picked the clamp: its contraction enumeration)


def _mapper(**jit):
    @njit(**jit)
    def _map(fn_code, x, out):
        for i in range(x.shape[0]):
            out[i] = M.tanh(x[i]) if fn_code == 0 else M.sigmoid(x[i])
    return _map


# plain IEEE, and the kernels' own flags: they let LLVM fuse multiply-adds and reassociate
_MAPS = {"plain": _mapper(), "kernel flags": _mapper(fastmath=K.FASTMATH, error_model="numpy")}


def _eval(code, x, flags="plain"):
    out = np.empty_like(x)
    _MAPS[flags](code, x, out)
    return out


def _floats_below(c, n=4000):
    """The n float32 values just below c (> 0), nearest first."""
    return (np.array([c], np.float32).view(np.int32)[0] - np.arange(1, n + 1)).astype(np.int32).view(np.float32)


@pytest.mark.parametrize("flags", list(_MAPS))
def test_tanh_error_bound(flags):
    x = np.linspace(-12, 12, 400_001).astype(np.float32)
    y = _eval(0, x, flags)
    ref = np.tanh(x.astype(np.float64))
    assert np.abs(y - ref).max() <= 3.6e-7
    small = (np.abs(x) < 0.5) & (x != 0)
    assert (np.abs(y - ref)[small] / np.abs(ref[small])).max() <= 2.2e-7  # relative near 0
    assert np.abs(y).max() <= 1.0
    assert (np.sign(y) == np.sign(x)).all()


@pytest.mark.parametrize("flags", list(_MAPS))
def test_sigmoid_error_bound(flags):
    x = np.linspace(-40, 40, 400_001).astype(np.float32)
    y = _eval(1, x, flags)
    ref = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    assert np.abs(y - ref).max() <= 2.1e-7
    assert y.min() >= 0.0 and y.max() <= 1.0


@pytest.mark.parametrize("code", [0, 1])
def test_nan_and_infinity(code):
    y = _eval(code, np.array([np.nan, np.inf, -np.inf], np.float32))
    assert np.isnan(y[0])
    lo = -1.0 if code == 0 else 0.0
    np.testing.assert_array_equal(y[1:], [1.0, lo])


@pytest.mark.parametrize("flags", list(_MAPS))
@pytest.mark.parametrize("code", [0, 1])
def test_saturated_values_are_exact(code, flags):
    """From the clamp on, tanh is exactly +-1 and sigmoid exactly 1 and 0, as float32
    references give them far enough out: a forget gate of 1 keeps the cell state as it is.
    Just below the clamp (4,000 floats) nothing exceeds them."""
    c = M._TANH_CLAMP if code == 0 else M._SIG_CLAMP
    x = np.array([c, np.nextafter(c, np.float32(np.inf)), 9.0, 16.0, 17.0, 50.0, 3e38], np.float32)
    x = x[x >= c]
    lo = -1.0 if code == 0 else 0.0
    np.testing.assert_array_equal(_eval(code, x, flags), np.ones(x.size, np.float32))
    np.testing.assert_array_equal(_eval(code, -x, flags), np.full(x.size, lo, np.float32))
    below = _floats_below(c)
    assert _eval(code, below, flags).max() <= 1.0 and _eval(code, -below, flags).min() >= lo


def _shipped(sig: bool):
    if sig:
        return [M._SP0, M._SP1, M._SP2, M._SP3, M._SP4, M._SP5], [M._ONE, M._SQ1, M._SQ2, M._SQ3, M._SQ4]
    return [M._ONE, M._P1, M._P2, M._P3, M._P4, M._P5], [M._ONE, M._Q1, M._Q2, M._Q3, M._Q4]


def test_the_clamp_saturates_exactly_however_the_compiler_fuses_multiply_adds():
    """Why the kernels need no select at the clamp: the ratio there is exactly 1 (tanh) and
    exactly 1/2 (sigmoid, at twice the clamp) under each of its 768 contractions, in exact
    arithmetic too, and none exceeds those just below the clamp. (``python
    tools/fit_tanh.py`` scans [7, 8.5) for the clamp; this re-checks the shipped one.
    The kernels also let LLVM reassociate, which this does not enumerate: the compiled
    kernels are checked directly, above and in tests/test_cpu_kernels.py.)"""
    t_expr, t_choices = fit_tanh.contractions(*_shipped(False))
    s_expr, s_choices = fit_tanh.contractions(*_shipped(True))
    assert len(t_choices) == len(s_choices) == 768
    c = M._TANH_CLAMP
    near = _floats_below(c)
    for fused in t_choices:
        assert fit_tanh.evaluate_contracted(t_expr, c, fused) == 1
        assert fit_tanh.evaluate_contracted(t_expr, near, fused).max() <= 1
    for fused in s_choices:
        assert fit_tanh.evaluate_contracted(s_expr, M._SIG_CLAMP, fused) == 0.5
        assert fit_tanh.evaluate_contracted(s_expr, 2 * near, fused).max() <= 0.5
    for fused in t_choices[::7]:  # the float64 emulation's double rounding, ruled out
        assert fit_tanh.evaluate_contracted(t_expr, float(c), fused, exact=True) == 1
    # sigmoid's ratio at 2x is tanh's at x halved, bit for bit, under the same contraction
    # (the two expressions have one shape, so their choices pair up in order)
    x = np.linspace(-c, c, 10_001).astype(np.float32)
    for ft, fs in zip(t_choices[::31], s_choices[::31]):
        np.testing.assert_array_equal(fit_tanh.evaluate_contracted(s_expr, 2 * x, fs),
                                      fit_tanh.evaluate_contracted(t_expr, x, ft) / 2)


@njit
def _gates(x, bound, out):
    a = np.zeros(3, np.float32)
    for i in range(x.shape[0]):
        out[0, i] = M.gate_f(x[i], a, bound, True)
        out[1, i] = M.sigmoid(M.clip(x[i], bound))
        out[2, i] = M.gate_g(x[i], a, bound, True)
        out[3, i] = M.tanh(M.clip(x[i], bound))


@pytest.mark.parametrize("bound", [0.25, 3.0, 7.9, 15.8, 30.0, np.inf])
def test_gates_fold_the_clip_into_the_clamp_with_the_same_bits(bound):
    """gate_f/gate_g clamp once to the smaller of the clip and the activation's clamp."""
    x = np.concatenate([np.linspace(-40, 40, 20_001), [np.nan, np.inf, -np.inf, 7.9, -15.8, bound, -bound]])
    x = x.astype(np.float32)
    out = np.empty((4, x.size), np.float32)
    _gates(x, np.float32(bound), out)
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[2], out[3])
