"""The benchmark suites still run (every benchmark once, untimed), and floors.py judges right.

The test run skips them (``--benchmark-skip`` in pyproject's pytest options), so nothing
else would notice a benchmark that stopped working, as ``benchmarks/test_speed.py``'s
batched onnxruntime case once did (its ONNX graph had a fixed batch of 1). pytest-benchmark's
``--benchmark-disable`` runs each body once without timing it: about 25 s here.
"""

from __future__ import annotations

import importlib.util
import json
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
    """``benchmarks/floors.py`` as a module (it puts ``benchmarks/`` on the path for its imports)."""
    spec = importlib.util.spec_from_file_location("floors", ROOT / "benchmarks" / "floors.py")
    floors = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(floors)
    return floors


def test_floors_judges_a_recorded_run_as_results_md_says():
    # compare.py's numbers from 2026-12-02 02:55 and the floors floors.py printed for them
    # right after (benchmarks/RESULTS.md, "Latest runs"): every target, its value and floor
    floors = _floors_module()
    raw = json.loads((ROOT / "benchmarks" / "compare-2026-12-02d.json").read_text())
    floor = {"step LSTM 32": 2.02e-6, "step LSTM 128": 9.31e-6, "step LSTM 512": 145.23e-6,
             "process LSTM 1->16, per step": 36e-9, "process LSTM 1->32, per step": 194e-9,
             "process GRU 1->16, per step": 33e-9, "process LSTM 64->64, per step": 1.52e-6,
             "run LSTM 256, T=1000": 18.08e-3, "64 streams, one step, LSTM 256": 886.73e-6}
    assert floors.targets(raw, floor) == [
        ("step LSTM 32 <= 0.1x torch", "0.05x", "0.04x", "yes", "yes"),
        ("step LSTM 32 <= 0.25x onnxruntime", "0.08x", "0.07x", "yes", "yes"),
        ("step LSTM 128 <= 0.1x torch", "0.15x", "0.14x", "no", "no"),
        ("step LSTM 128 <= 0.35x onnxruntime", "0.29x", "0.28x", "yes", "yes"),
        ("step LSTM 512 <= 0.5x torch", "0.45x", "0.46x", "yes", "yes"),
        ("step LSTM 512 <= 0.8x onnxruntime", "0.65x", "0.67x", "yes", "yes"),
        ("process LSTM 1->16 <= 0.1x torch", "0.11x", "0.05x", "no", "yes*"),
        ("process LSTM 1->16 <= 120 ns a step", "79 ns", "36 ns", "yes", "yes*"),
        ("process LSTM 1->32 <= RTNeural's 244 ns", "215 ns", "194 ns", "yes", "yes*"),
        ("process GRU 1->16 <= RTNeural's 110 ns", "70 ns", "33 ns", "yes", "yes*"),
        ("process LSTM 64->64 <= RTNeural's 1760 ns", "1.52 µs", "1.52 µs", "yes", "yes*"),
        ("run T=1000 LSTM 256 <= 0.5x torch", "0.75x", "0.61x", "no", "no"),
        ("64 streams LSTM 256 <= 1.0x torch", "0.66x", "0.67x", "yes", "yes"),
        ("64 streams on 2 threads >= 1.7x of one", "1.67x", "-", "no", "-"),
        ("start-up (warm cache) <= 0.6 s", "0.73 s", "-", "no", "-"),
        ("start-up RSS <= 150 MB", "109 MB", "-", "yes", "-"),
        ("start-up <= 1/3 of torch's", "0.20x", "-", "yes", "-"),
        ("start-up <= 3x onnxruntime's", "2.25x", "-", "yes", "-"),
        ("start-up, cold cache <= 10 s", "11.61 s", "-", "no", "-"),
        ("int8 step <= 0.5x float32, LSTM 1024 (issue 5)", "0.27x", "-", "yes", "-"),
    ]


def test_floors_leaves_out_what_a_run_lacks_and_reads_a_lower_bound_as_one():
    floors = _floors_module()
    raw = {"step LSTM 128": {"tinyrnn": 6.6e-6, "torch": 36e-6, "onnxruntime": 18e-6},
           "batch threads": {"one thread": 1.0, "two threads": 0.55, "speed-up": 1.82}}
    rows = {r[0]: r[1:] for r in floors.targets(raw, {"step LSTM 128": 5.8e-6})}
    assert set(rows) == {"step LSTM 128 <= 0.1x torch", "step LSTM 128 <= 0.35x onnxruntime",
                         "64 streams on 2 threads >= 1.7x of one"}
    # 6.6 / 18 = 0.37x misses 0.35x, but its floor 5.8 / 18 = 0.32x is within it
    assert rows["step LSTM 128 <= 0.35x onnxruntime"] == ("0.37x", "0.32x", "no", "yes")
    assert rows["64 streams on 2 threads >= 1.7x of one"] == ("1.82x", "-", "yes", "-")
