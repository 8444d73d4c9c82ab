"""The tinyrnn command line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from builders import random_recurrent, single_layer_model
from tinyrnn.cli import main


@pytest.fixture
def model_file(tmp_path, rng):
    layer, _ = random_recurrent(rng, "lstm", 3, 4, name="lstm0")
    m = single_layer_model(layer)
    m.metadata["source"] = "unit test"
    path = tmp_path / "m.trnn"
    m.save(path)
    return path, m


def test_info(model_file, capsys):
    path, m = model_file
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "lstm0" in out and "source: unit test" in out and "bytes" in out


def test_run(model_file, tmp_path, rng):
    path, m = model_file
    x = rng.normal(0, 1, (2, 6, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), m.run(x))


def test_errors_are_one_line(model_file, tmp_path, capsys):
    path, _ = model_file
    np.save(tmp_path / "bad.npy", np.zeros((2, 5), np.float32))
    assert main(["run", str(path), "-i", str(tmp_path / "bad.npy"), "-o", str(tmp_path / "y.npy")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinyrnn run: error: expected input of shape") and err.count("\n") == 1
    assert main(["info", str(tmp_path / "missing.trnn")]) == 1
    assert "cannot open model file" in capsys.readouterr().err


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "tinyrnn", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    for cmd in ("info", "run"):
        assert cmd in r.stdout


def test_bench_reports_every_figure(model_file, capsys):
    path, m = model_file
    assert main(["bench", str(path), "--batch", "2", "--steps", "20", "--budget", "0.05", "--json"]) == 0
    import json

    r = json.loads(capsys.readouterr().out)
    assert r["batch"] == 2 and r["steps"] == 20
    assert 0 < r["step_s"] < 1 and 0 < r["process_step_s"] < 1 and r["run_steps_per_s"] > 0
    assert main(["bench", str(path), "--steps", "0"]) == 1
