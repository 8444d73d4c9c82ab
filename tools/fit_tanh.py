"""Fit the rational tanh approximation used by ``tinyrnn.cells.math.tanh``.

    python tools/fit_tanh.py

tanh(x) ~ x * P(x^2) / Q(x^2) on [-C, C] (P of degree 5 and Q of degree 4 in x^2, both
with constant term 1), clamped to +-C outside. The coefficients come from iteratively
reweighted least squares (Lawson's method) aiming at a near-minimax error that is
relative near zero and absolute elsewhere; the fit runs on x^2 / C^2 for conditioning.
The script prints the coefficients rounded to float32 and the error of the float32
evaluation against float64 ``np.tanh`` over a dense grid; tests/test_math.py checks the
same bounds on the shipped coefficients.
"""

from __future__ import annotations

import numpy as np

from tinyrnn.cells.math import _ratio

C = 7.9  # beyond this float32 tanh is within 1.2e-7 of +-1


def fit(p_degree: int = 5, q_degree: int = 4, clamp: float = C, iters: int = 60):
    x = np.concatenate([np.linspace(0, clamp, 60000), np.geomspace(1e-5, 1, 3000)])
    t = np.tanh(x)
    s = clamp * clamp
    w = np.ones_like(x)
    for _ in range(iters):
        z = x * x / s
        A = np.concatenate([np.stack([x * z**k for k in range(p_degree + 1)], 1),
                            np.stack([-t * z**k for k in range(1, q_degree + 1)], 1)], 1)
        sol, *_ = np.linalg.lstsq(A * w[:, None], t * w, rcond=None)
        p, q = sol[:p_degree + 1], np.concatenate([[1.0], sol[p_degree + 1:]])
        approx = x * np.polyval(p[::-1], z) / np.polyval(q[::-1], z)
        err = np.abs(approx - t) / np.maximum(t, 0.25)
        w = w * (err / err.max() + 1e-3) ** 0.5
        w /= w.max()
    p = p / s ** np.arange(p_degree + 1)
    q = q / s ** np.arange(q_degree + 1)
    return [float(np.float32(c)) for c in p], [float(np.float32(c)) for c in q]


def evaluate(p, q, x, clamp: float = C):
    """The float32 evaluation the kernels perform: ``tinyrnn.cells.math._ratio`` itself,
    its Python body run by numpy on float32 arrays (without the multiply-adds LLVM fuses)."""
    f = np.float32
    x = np.clip(np.asarray(x, f), -f(clamp), f(clamp))
    return _ratio.py_func(x, *(f(c) for c in p), *(f(c) for c in q[1:])).astype(f)


if __name__ == "__main__":
    p, q = fit()
    xs = np.linspace(-12, 12, 8_000_001).astype(np.float32)
    ref = np.tanh(xs.astype(np.float64))
    y = evaluate(p, q, xs)
    small = (np.abs(xs) < 0.5) & (xs != 0)
    print("P =", ", ".join(f"{c:.9g}" for c in p))
    print("Q =", ", ".join(f"{c:.9g}" for c in q))
    print(f"max abs error {np.abs(y - ref).max():.3g}, max rel error for |x| < 0.5 "
          f"{(np.abs(y - ref)[small] / np.abs(ref[small])).max():.3g}, max |tanh| {np.abs(y).max()}")
