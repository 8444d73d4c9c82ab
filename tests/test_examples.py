"""Every script in examples/ runs and does what it says.

The scripts are imported and their ``main`` called in-process (the compiled kernels are
shared with the other tests); ``train_char_lm.py`` is checked on a few steps and on its
export path, not trained to the end.
"""

from __future__ import annotations

import importlib.util
import math
import os

import numpy as np
import pytest

import tinyrnn

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(EXAMPLES, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generate_text(capsys):
    text = load_example("generate_text").main(["The ", "-n", "60", "--seed", "3"])
    cap = capsys.readouterr()
    assert len(text) == 60 and cap.out.startswith("The " + text)
    assert "bits/char" in cap.err and "60 characters in" in cap.err
    want = "".join(tinyrnn.generate(tinyrnn.default_model(), "The ", max_tokens=60, temperature=0.7, seed=3))
    assert text == want


def test_sensor_stream(tmp_path, capsys):
    result = load_example("sensor_stream").main(["--save", str(tmp_path / "sensor.trnn")])
    out = capsys.readouterr().out
    # every injected fault is flagged, the spike at once, and nothing else is
    assert all(t is not None for t in result["caught"].values()), result["caught"]
    assert result["caught"]["spike"] == 300
    assert result["caught"]["loose connector"] <= 610
    assert result["false_alarms"] == 0
    assert "<- anomaly" in out and (tmp_path / "sensor.trnn").stat().st_size > 0


def test_sensor_stream_steps_match_offline_run():
    """The example's step-by-step stream gives what an offline run of the model gives."""
    ex = load_example("sensor_stream")
    model, _ = ex.fit(np.random.default_rng(0))
    x = ((ex.sensor(200, np.random.default_rng(1)) - ex.MEAN) / ex.SPREAD)[:, None]  # (T, 1)
    s = model.stream()
    stepped = np.stack([s.step(v) for v in x])
    np.testing.assert_allclose(stepped, model.run(x), rtol=0, atol=1e-5)


def test_convert_and_run(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    worst = load_example("convert_and_run").main(["--out", str(tmp_path)])
    assert worst < 1e-4
    assert (tmp_path / "model.onnx").exists() and (tmp_path / "model.trnn").exists()
    assert "streamed" in capsys.readouterr().out


def test_train_char_lm_smoke(tmp_path):
    """Two training steps and the export: the exported .trnn matches PyTorch and carries its facts."""
    pytest.importorskip("torch")
    ex = load_example("train_char_lm")
    out = tmp_path / "run"
    ex.main(["--out", str(out), "--steps", "2", "--batch", "2", "--seq", "16", "--eval-every", "2",
             "--threads", "1", "--valid-chars", "3000"])
    assert "valid_bpc" in (out / "train.log").read_text()
    ex.export(str(out), str(tmp_path / "m.trnn"))  # checks tinyrnn against torch itself (<= 1e-3)
    m = tinyrnn.load(tmp_path / "m.trnn")
    meta = m.metadata
    assert meta["name"] == "pydoc-char-lstm" and meta["training"]["steps"] == 2
    assert math.log2(len(m.vocab)) - 0.5 < meta["valid_bits_per_char"] < 8  # untrained: about log2(V)
    from pydoc_data.topics import topics

    seen, valid = ex.topic_splits()  # whole topics held out, nothing lost or shared
    assert len(seen) + len(valid) == sum(map(len, topics.values())) and len(valid) > 20000
    # the training text: those topics, then standard-library docstrings, none of them from
    # the outside modules the report scores on, spelled in the topics' characters
    train, valid2 = ex.corpus_splits()
    assert valid2 == valid and train.startswith(seen) and len(train) > len(seen) + 300_000
    assert set(train) <= set(seen + valid)
    docs = train[len(seen):]
    outside = ex.outside_text()
    assert all(para not in docs for para in outside.split("\n\n") if len(para) > 80)
    assert "Abstract Base Classes" in docs  # abc's module docstring


def test_shipped_model_scores_what_it_states_outside_its_corpus():
    """Issue 4's aim: at most 2.0 bits per character on technical English the model never
    trained on (docstrings of the outside modules), measured here, not copied."""
    ex = load_example("train_char_lm")
    m = tinyrnn.default_model()
    vocab = set(m.vocab)
    text = "".join(ch for ch in ex.outside_text() if ch in vocab)
    stated = m.metadata["outside_bits_per_char"]
    assert stated <= 2.0 and len(text) > 30_000
    # the docstrings vary a little between Python versions; on the one that trained it (3.11)
    # this is the stated number to the fourth decimal
    assert abs(ex.tinyrnn_bpc(m, text) - stated) < 0.1
