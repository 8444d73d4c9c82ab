"""The scalar cell math: the fast tanh/sigmoid approximations hold their stated bounds."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from tinyrnn.cells import math as M


@njit
def _map(fn_code, x, out):
    for i in range(x.shape[0]):
        out[i] = M.tanh(x[i]) if fn_code == 0 else M.sigmoid(x[i])


def _eval(code, x):
    out = np.empty_like(x)
    _map(code, x, out)
    return out


def test_tanh_error_bound():
    x = np.linspace(-12, 12, 400_001).astype(np.float32)
    y = _eval(0, x)
    ref = np.tanh(x.astype(np.float64))
    assert np.abs(y - ref).max() <= 3.6e-7
    small = (np.abs(x) < 0.5) & (x != 0)
    assert (np.abs(y - ref)[small] / np.abs(ref[small])).max() <= 2.2e-7  # relative near 0
    assert np.abs(y).max() <= 1.0
    assert (np.sign(y) == np.sign(x)).all()


def test_sigmoid_error_bound():
    x = np.linspace(-40, 40, 400_001).astype(np.float32)
    y = _eval(1, x)
    ref = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    assert np.abs(y - ref).max() <= 2.1e-7
    assert y.min() >= 0.0 and y.max() <= 1.0


@pytest.mark.parametrize("code", [0, 1])
def test_nan_and_infinity(code):
    y = _eval(code, np.array([np.nan, np.inf, -np.inf], np.float32))
    assert np.isnan(y[0])
    lo = -1.0 if code == 0 else 0.0
    np.testing.assert_allclose(y[1:], [1.0, lo], atol=2e-7)


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
