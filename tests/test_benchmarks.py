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
