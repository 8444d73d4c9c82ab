"""Fit the rational tanh approximation used by ``tinyrnn.cells.math.tanh``.

    python tools/fit_tanh.py

tanh(x) ~ x * P(x^2) / Q(x^2) on [-C, C] (P of degree 5 and Q of degree 4 in x^2, both
with constant term 1), clamped to +-C outside. The coefficients come from iteratively
reweighted least squares (Lawson's method) aiming at a near-minimax error that is
relative near zero and absolute elsewhere; the fit runs on x^2 / C^2 for conditioning.
The script prints the coefficients rounded to float32 and the error of the float32
evaluation against float64 ``np.tanh`` over a dense grid; tests/test_math.py checks the
same bounds on the shipped coefficients.

It also picks the clamp the kernels use (``saturation_clamp``): the first float32 at or
past C where the evaluation is exactly 1.0 however the compiler fuses its multiply-adds,
with no fusion giving more than 1 below it. At that clamp tanh saturates at exactly +-1
and sigmoid (the same evaluation at x/2) at exactly 1 and 0 with no select after the
division; a select per end cost a 16-unit LSTM step 8% of its time.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

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


# --- the clamp: exact saturation under every multiply-add fusion -----------------------


class _Op:
    """A node of ``_ratio``'s expression, recorded by running its Python body on these."""

    __array_ufunc__ = None  # numpy scalars defer to the reflected operators below

    def __init__(self, op, a=None, b=None):
        self.op, self.a, self.b = op, a, b

    def __mul__(self, o): return _Op("*", self, o)
    def __rmul__(self, o): return _Op("*", o, self)
    def __add__(self, o): return _Op("+", self, o)
    def __radd__(self, o): return _Op("+", o, self)
    def __truediv__(self, o): return _Op("/", self, o)


def _sites(node, seen=None):
    """Every sum of a product and something: where a compiler may fuse a multiply-add."""
    seen = {} if seen is None else seen
    if isinstance(node, _Op) and id(node) not in seen:
        seen[id(node)] = node
        _sites(node.a, seen)
        _sites(node.b, seen)
    return [n for n in seen.values() if n.op == "+" and any(isinstance(o, _Op) and o.op == "*" for o in (n.a, n.b))]


def contractions(p, q):
    """(expression, choices): ``_ratio`` with coefficients p, q as a recorded expression of
    ``x``, and every way LLVM (or NVVM) may contract it, as {sum node: product operand fused
    into it, or None}. Contraction is the only freedom IEEE arithmetic leaves a compiler;
    the CPU kernels also allow reassociation (``cpu_kernels.FASTMATH``), which is not
    enumerated here: tests/test_math.py and tests/test_cpu_kernels.py check the compiled
    code's saturation directly."""
    f = np.float32
    x = _Op("x")
    expr = _ratio.py_func(x, *(f(c) for c in p), *(f(c) for c in q[1:]))
    sites = _sites(expr)
    options = [[None] + [o for o in (n.a, n.b) if isinstance(o, _Op) and o.op == "*"] for n in sites]
    return expr, [dict(zip(sites, pick)) for pick in itertools.product(*options)]


def evaluate_contracted(node, x, fused, exact=False):
    """float32 value of ``node`` (from ``contractions``) at x (a float32 or an array of them) under one contraction
    choice. ``exact``: x one float, every rounding done from exact rationals (this checks
    the float64 emulation of a fused multiply-add, which can round twice at a tie)."""
    if not isinstance(node, _Op):
        return Fraction(float(node)) if exact else np.float32(node)
    if node.op == "x":
        return Fraction(float(x)) if exact else x
    m = fused.get(node) if node.op == "+" else None
    if m is not None:  # a * b + c, rounded once
        c = node.b if m is node.a else node.a
        a, b, c = (evaluate_contracted(n, x, fused, exact) for n in (m.a, m.b, c))
        if exact:
            return _round_exact(a * b + c)
        f64 = [np.asarray(v, np.float64) for v in (a, b, c)]  # float32 products are exact in float64
        return (f64[0] * f64[1] + f64[2]).astype(np.float32)
    a, b = evaluate_contracted(node.a, x, fused, exact), evaluate_contracted(node.b, x, fused, exact)
    r = {"*": lambda: a * b, "+": lambda: a + b, "/": lambda: a / b}[node.op]()
    return _round_exact(r) if exact else r


def _round_exact(v: Fraction) -> Fraction:
    """v rounded to the nearest float32, ties to even, kept as a Fraction."""
    f = np.float32(float(v))
    near = [np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))]
    best = min(near, key=lambda c: (abs(Fraction(float(c)) - v), int(np.array([c]).view(np.int32)[0]) & 1))
    return Fraction(float(best))


def saturation_clamp(p, q, start: float = C, stop: float = 8.5, below: float = 7.0) -> np.float32:
    """The first float32 x >= ``start`` where every contraction of the evaluation is exactly
    1.0, checked again in exact arithmetic, and where no contraction exceeds 1 on [below, x).
    (Below ``below``, tanh < 1 - 1e-6 leaves the evaluation's few 1e-7 of error far from 1.)"""
    expr, choices = contractions(p, q)
    lo, hi = (np.array([v], np.float32).view(np.int32)[0] for v in (below, stop))
    xs = np.arange(lo, hi, dtype=np.int32).view(np.float32)
    all_one = np.ones(xs.size, bool)
    most = np.full(xs.size, -np.inf, np.float32)
    for fused in choices:
        r = evaluate_contracted(expr, xs, fused)
        all_one &= r == 1
        most = np.maximum(most, r)
    exceeded = np.maximum.accumulate(most > 1)
    for i in np.flatnonzero(all_one & (xs >= np.float32(start)) & ~exceeded):
        if all(evaluate_contracted(expr, float(xs[i]), fused, exact=True) == 1 for fused in choices):
            return xs[i]
    raise ValueError(f"no float32 in [{start}, {stop}) saturates exactly under every contraction")


if __name__ == "__main__":
    p, q = fit()
    print("P =", ", ".join(f"{c:.9g}" for c in p))
    print("Q =", ", ".join(f"{c:.9g}" for c in q))
    clamp = saturation_clamp(p, q)
    print(f"clamp {clamp!r} ({len(contractions(p, q)[1])} contractions, all exactly 1.0 there)")
    xs = np.linspace(-12, 12, 8_000_001).astype(np.float32)
    ref = np.tanh(xs.astype(np.float64))
    y = evaluate(p, q, xs, clamp)
    small = (np.abs(xs) < 0.5) & (xs != 0)
    print(f"with that clamp: max abs error {np.abs(y - ref).max():.3g}, max rel error for |x| < 0.5 "
          f"{(np.abs(y - ref)[small] / np.abs(ref[small])).max():.3g}, max |tanh| {np.abs(y).max()}")
