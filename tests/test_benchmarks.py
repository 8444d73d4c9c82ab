"""The benchmark suites still run: every benchmark once, untimed.

The test run skips them (``--benchmark-skip`` in pyproject's pytest options), so nothing
else would notice a benchmark that stopped working, as ``benchmarks/test_speed.py``'s
batched onnxruntime case once did (its ONNX graph had a fixed batch of 1). pytest-benchmark's
``--benchmark-disable`` runs each body once without timing it: about 25 s here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_speed_suite_runs_every_benchmark_once():
    suite = ROOT / "benchmarks" / "test_speed.py"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
           "--benchmark-disable", str(suite)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-4000:]}\n{r.stderr[-2000:]}"
    assert " passed" in r.stdout.splitlines()[-1] and "skipped" not in r.stdout.splitlines()[-1]


def _floors_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import floors
    finally:
        sys.path.pop(0)
    return floors


def test_floors_judges_each_target_and_whether_its_floor_allows_it():
    floors = _floors_module()
    raw = {
        "step LSTM 128": {"tinyrnn": 6.6e-6, "torch": 36e-6, "onnxruntime": 18e-6},
        "batch threads": {"one thread": 1.0, "two threads": 0.6, "speed-up": 1.66},
        "startup": {"tinyrnn": (0.5, 110.0), "tinyrnn, cold cache": (11.0, 180.0), "torch": (1.8, 300.0),
                    "onnxruntime": (0.2, 60.0)},
        "quant 1024": {"float32": 1.0, "fp16": 0.6, "int8": 0.4},
        "process LSTM 1->16": {"tinyrnn": 60e-9, "torch": 380e-9, "onnxruntime": 215e-9},
    }
    rows = {r[0]: r[1:] for r in floors.targets(raw, {"step LSTM 128": 5.85e-6,
                                                       "process LSTM 1->16, per step": 32e-9})}
    # 6.6 / 36 = 0.18x, over 0.10x; the floor 5.85 / 36 = 0.16x is over it too
    assert rows["step LSTM 128 <= 0.1x torch"] == ("0.18x", "0.16x", "no", "no")
    # 6.6 / 18 = 0.37x, over 0.35x; the floor 5.85 / 18 = 0.325x is within it
    assert rows["step LSTM 128 <= 0.35x onnxruntime"] == ("0.37x", "0.33x", "no", "yes")
    assert rows["64 streams on 2 threads >= 1.7x of one"] == ("1.66x", "-", "no", "-")  # a lower bound
    assert rows["start-up (warm cache) <= 0.6 s"] == ("0.50 s", "-", "yes", "-")
    assert rows["start-up, cold cache <= 10 s"] == ("11.00 s", "-", "no", "-")
    assert rows["start-up RSS <= 150 MB"] == ("110 MB", "-", "yes", "-")
    assert rows["start-up <= 3x onnxruntime's"] == ("2.50x", "-", "yes", "-")
    assert rows["int8 step <= 0.5x float32, LSTM 1024 (issue 5)"] == ("0.40x", "-", "yes", "-")
    # a per-sample floor leaves out the step's chain: marked, as an optimistic one
    assert rows["process LSTM 1->16 <= 0.1x torch"] == ("0.16x", "0.08x", "no", "yes*")
    assert rows["process LSTM 1->16 <= 120 ns a step"] == ("60 ns", "32 ns", "yes", "yes*")
    # workloads the numbers lack are left out, not guessed
    assert not any(name.startswith(("run", "step LSTM 32", "process LSTM 1->32")) for name in rows)
