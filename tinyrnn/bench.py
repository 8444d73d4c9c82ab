"""``tinyrnn bench``: how fast one model runs here, with the runtime alone.

The side-by-side comparison with torch and onnxruntime lives in ``benchmarks/compare.py``
(it needs those packages); this module times only tinyrnn, so a user on an edge box with
numpy and numba alone can see what a model costs before wiring it in. Every figure is the
median of several repeats of a loop calibrated to run for ``budget`` seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError


@dataclass
class BenchResult:
    """Timings of one model. Times are seconds; ``rows`` keeps the printable table."""

    first_call_s: float
    step_s: float
    process_step_s: float
    run_steps_per_s: float
    batch: int
    steps: int
    rows: list = field(default_factory=list)

    def format(self) -> str:
        width = max(len(name) for name, _ in self.rows)
        return "\n".join(f"  {name:<{width}}  {value}" for name, value in self.rows)

    def to_json(self) -> dict:
        return {"first_call_s": self.first_call_s, "step_s": self.step_s,
                "process_step_s": self.process_step_s, "run_steps_per_s": self.run_steps_per_s,
                "batch": self.batch, "steps": self.steps}


def sample_input(model, batch: int, steps: int, seed: int = 0) -> np.ndarray:
    """Random input of shape ``(batch, steps, *features)`` (float32) or ``(batch, steps)`` ids."""
    rng = np.random.default_rng(seed)
    if model.input.tokens:
        return rng.integers(0, model.input.vocab_size, (batch, steps))
    return rng.standard_normal((batch, steps, *model.input.shape)).astype(np.float32)


def median_time(fn, budget: float, repeats: int = 5) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` loops of about ``budget / repeats`` s."""
    n = 1
    while True:  # calibrate: double the loop until it takes a measurable slice of the budget
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt > budget / (4 * repeats) or n >= 1 << 20:
            break
        n *= 2
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return float(np.median(times))


def bench(model, batch: int = 16, steps: int = 1000, budget: float = 1.0, seed: int = 0) -> BenchResult:
    """Time ``model``: first call (compilation or cache load), ``step``, ``process``, ``run``.

    ``step`` and ``process`` use one stream; ``run`` uses ``batch`` sequences of ``steps``
    steps. ``budget`` is roughly the seconds spent per figure. Raises ``InputError`` for
    sizes below 1.
    """
    for name, v in (("batch", batch), ("steps", steps)):
        if not isinstance(v, int) or v < 1:
            raise InputError(f"bench {name} must be a positive integer, found {v!r}")
    if not budget > 0:
        raise InputError(f"bench budget must be positive seconds, found {budget!r}")
    x = sample_input(model, batch, steps, seed)
    streams = model.streamable  # a bidirectional model runs offline only
    t0 = time.perf_counter()
    if streams:
        stream = model.stream()
        stream.step(x[0, 0])
        stream.process(x[0, :2])
    model.run(x[:, :2])
    first = time.perf_counter() - t0

    step = process = float("nan")
    if streams:
        x0, xs = x[0, 0], x[0]
        step = median_time(lambda: stream.step(x0), budget)
        process = median_time(lambda: stream.process(xs), budget) / steps
    run = median_time(lambda: model.run(x), budget)
    rate = batch * steps / run
    rows = [("first call (compile or cache)", f"{first:.2f} s")]
    if streams:
        rows += [("stream.step, 1 stream", f"{step * 1e6:.2f} us per step ({1 / step:,.0f} steps/s)"),
                 (f"stream.process, {steps} steps", f"{process * 1e9:.0f} ns per step")]
    else:
        rows.append(("stream", "n/a (bidirectional layers run offline only)"))
    rows.append((f"run, {batch} x {steps} steps", f"{run * 1e3:.2f} ms ({rate:,.0f} steps/s)"))
    return BenchResult(first, step, process, rate, batch, steps, rows)
