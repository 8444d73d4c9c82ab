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
    for cmd in ("info", "run", "score"):
        assert cmd in r.stdout


# --- many files and text scoring in this process (--workers 0); the Dask path is in test_dask.py


def test_run_reduce_one_file(model_file, tmp_path, rng):
    path, m = model_file
    x = rng.normal(0, 1, (3, 5, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "len.npy", np.array([5, 2, 4]))
    assert main(["run", str(path), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"),
                 "--lengths", str(tmp_path / "len.npy"), "--reduce", "last"]) == 0
    want = np.stack([m.run(x[i, :n])[-1] for i, n in enumerate([5, 2, 4])])
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want)


def test_run_many_files_in_process(model_file, tmp_path, rng, capsys):
    path, m = model_file
    (tmp_path / "in").mkdir()
    xs = {f"f{i}.npy": rng.normal(0, 1, (t, 3)).astype(np.float32) for i, t in enumerate([4, 1, 9, 3])}
    xs["batch.npy"] = rng.normal(0, 1, (2, 6, 3)).astype(np.float32)
    for name, x in xs.items():
        np.save(tmp_path / "in" / name, x)
    assert main(["run", str(path), "-i", str(tmp_path / "in" / "*.npy"), "-o", str(tmp_path / "out"),
                 "--workers", "0", "--reduce", "mean", "--batch-size", "2"]) == 0
    for name, x in xs.items():
        np.testing.assert_array_equal(np.load(tmp_path / "out" / name), m.run(x).mean(axis=-2, dtype=np.float32))
    assert "5 files ->" in capsys.readouterr().err


def test_run_many_files_errors(model_file, tmp_path, capsys):
    path, _ = model_file
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        np.save(tmp_path / d / "x.npy", np.zeros((2, 3), np.float32))
    np.save(tmp_path / "a" / "bad.npy", np.zeros((2, 4), np.float32))
    cases = [
        (["-i", str(tmp_path / "nothing*.npy"), "-o", str(tmp_path / "o")], "no input files match"),
        (["-i", str(tmp_path / "*" / "x.npy"), "-o", str(tmp_path / "o")], "would both write"),
        (["-i", str(tmp_path / "a"), "-o", str(tmp_path / "a")], "would overwrite its input"),
        (["-i", str(tmp_path / "a" / "x.npy"), "-o", str(tmp_path / "y.npy"), "--workers", "2"],
         "--workers and --scheduler run many files"),
        (["-i", str(tmp_path / "a"), "-o", str(tmp_path / "o"), "--workers", "0"], "bad.npy: expected input of shape"),
        (["-i", str(tmp_path / "a"), "-o", str(tmp_path / "o"), "--batch-size", "0"], "batch_size must be"),
    ]
    for argv, message in cases:
        assert main(["run", str(path), *argv]) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("tinyrnn run: error: ") and message in err, err


def test_score_in_process(tmp_path, rng, capsys):
    from builders import random_text_model
    from tinyrnn.batching import bits_per_character

    m = random_text_model(rng, "xy z\n")
    m.save(tmp_path / "t.trnn")
    (tmp_path / "c.txt").write_bytes("xy z\r\n\nzz\n".encode())
    assert main(["score", str(tmp_path / "t.trnn"), str(tmp_path / "c.txt"), "--workers", "0",
                 "-o", str(tmp_path / "bpc.txt")]) == 0
    got = (tmp_path / "bpc.txt").read_text().split()
    want = bits_per_character(m, ["xy z", "", "zz"])
    assert got[1] == "nan"
    np.testing.assert_allclose([float(got[0]), float(got[2])], [want[0][0] / 4, want[2][0] / 2], rtol=1e-6)
    assert "3 lines, 6 characters scored" in capsys.readouterr().err
    (tmp_path / "bad.txt").write_text("xy\nxq\n")
    assert main(["score", str(tmp_path / "t.trnn"), str(tmp_path / "bad.txt"), "--workers", "0"]) == 1
    assert "line 2 'xq': character 'q' at position 1" in capsys.readouterr().err


def test_bench_reports_every_figure(model_file, capsys):
    path, m = model_file
    assert main(["bench", str(path), "--batch", "2", "--steps", "20", "--budget", "0.05", "--json"]) == 0
    import json

    r = json.loads(capsys.readouterr().out)
    assert r["batch"] == 2 and r["steps"] == 20
    assert 0 < r["step_s"] < 1 and 0 < r["process_step_s"] < 1 and r["run_steps_per_s"] > 0
    assert main(["bench", str(path), "--steps", "0"]) == 1
