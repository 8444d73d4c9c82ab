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
