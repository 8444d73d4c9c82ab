"""Silero VAD from the silero-vad wheel's own ONNX files, against onnxruntime.

Signal: a few seconds of silence, white noise, a voiced sound (harmonics of a gliding
pitch under a syllable envelope) and quiet room tone, cut the way silero-vad's wrapper
cuts it: 512 new samples plus the previous 64 as context (576 per step). Every variant's
speech probabilities and final state must equal onnxruntime's within 1e-4 (float32).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyrnn
from tinyrnn import UnsupportedModelError

ort = pytest.importorskip("onnxruntime")
silero_vad = pytest.importorskip("silero_vad")
from tinyrnn_converters.onnx_step import from_onnx_step, pack_state, unpack_state  # noqa: E402

DATA = Path(silero_vad.__file__).parent / "data"
VARIANTS = {
    "silero_vad.onnx": {"sr": 16000},
    "silero_vad_16k_op15.onnx": {"sr": 16000},
    "silero_vad_op18_ifless.onnx": {"sr": 16000},
    "silero_vad_openvino_16k.onnx": None,
    "silero_vad_half.onnx": None,
}
TOL = 1e-4
SR = 16000


def make_signal(seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    """Silence, noise, voiced sound, room tone: float32 samples in [-1, 1] at 16 kHz."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    x = np.zeros(n, np.float32)
    q = n // 4
    x[q:2 * q] = rng.normal(0, 0.05, q)  # noise
    tv = t[2 * q:3 * q] - t[2 * q]
    f0 = 120 + 40 * np.sin(2 * np.pi * 1.5 * tv)  # gliding pitch
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum((0.6 / k) * np.sin(k * phase) for k in range(1, 12))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 3 * tv))  # three syllables
    x[2 * q:3 * q] = 0.4 * voiced * envelope
    x[3 * q:] = rng.normal(0, 0.003, n - 3 * q)  # room tone
    return x.astype(np.float32)


def chunks(audio: np.ndarray, window: int = 512, context: int = 64) -> np.ndarray:
    """(T, context + window) steps exactly as silero-vad's OnnxWrapper builds them."""
    T = -(-len(audio) // window)
    padded = np.zeros(T * window, np.float32)
    padded[:len(audio)] = audio
    frames = padded.reshape(T, window)
    prev = np.concatenate([np.zeros((1, context), np.float32), frames[:-1, -context:]])
    return np.concatenate([prev, frames], axis=1)


def ort_session(name):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(DATA / name), so, providers=["CPUExecutionProvider"])


def ort_stream(sess, X: np.ndarray):
    """onnxruntime step by step over X (B, T, 576): probabilities (B, T) and final state."""
    names = {i.name for i in sess.get_inputs()}
    Bn, T = X.shape[:2]
    st = np.zeros((2, Bn, 128), np.float32)
    out = np.zeros((Bn, T), np.float32)
    for t in range(T):
        feed = {"input": X[:, t], "state": st}
        if "sr" in names:
            feed["sr"] = np.array(SR, np.int64)
        o, st = sess.run(None, feed)
        out[:, t] = o[:, 0]
    return out, st


@pytest.fixture(scope="module")
def signal_chunks():
    return chunks(make_signal())


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request, signal_chunks):
    name = request.param
    model = from_onnx_step(DATA / name, constants=VARIANTS[name])
    ref, st = ort_stream(ort_session(name), signal_chunks[None])
    return name, model, ref[0], st


def test_probabilities_step_by_step(variant, signal_chunks):
    name, model, ref, ref_state = variant
    s = model.stream()
    y = np.array([s.step(x)[0] for x in signal_chunks])
    np.testing.assert_allclose(y, ref, atol=TOL, rtol=0)
    # the cell state c is unbounded (it reaches about 90 here): float32 agrees to ~1e-6 relative
    np.testing.assert_allclose(pack_state(model, s.state)["state"], ref_state, atol=TOL, rtol=1e-5)
    # the signal really exercises the model: speech is found in the voiced part only
    q = len(ref) // 4
    assert ref[2 * q:3 * q].max() > 0.5 and ref[:q].max() < 0.2


def test_probabilities_process(variant, signal_chunks):
    name, model, ref, _ = variant
    s = model.stream()
    y = np.concatenate([s.process(signal_chunks[:37]), s.process(signal_chunks[37:])])[:, 0]
    np.testing.assert_allclose(y, ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(model.run(signal_chunks)[:, 0], ref, atol=TOL, rtol=0)


def test_batched_streams(variant, signal_chunks):
    name, model, ref, _ = variant
    other = chunks(make_signal(seed=1)[::-1].copy())  # another stream: speech first
    X = np.stack([signal_chunks, other, signal_chunks])[:, :60]
    if name == "silero_vad_openvino_16k.onnx":  # exported for batch 1: run each stream alone
        sess = ort_session(name)
        want = np.concatenate([ort_stream(sess, X[i:i + 1])[0] for i in range(3)])
    else:
        want, _ = ort_stream(ort_session(name), X)
    s = model.stream(batch=3)
    np.testing.assert_allclose(s.process(X[:, :25])[..., 0], want[:, :25], atol=TOL, rtol=0)
    steps = np.stack([s.step(X[:, t])[:, 0] for t in range(25, 60)], axis=1)
    np.testing.assert_allclose(steps, want[:, 25:], atol=TOL, rtol=0)


def test_snapshot_restore_mid_stream(signal_chunks):
    model = from_onnx_step(DATA / "silero_vad.onnx", constants={"sr": SR})
    s = model.stream()
    s.process(signal_chunks[:70])
    snap = s.state
    rest = s.process(signal_chunks[70:])
    s.reset()
    s.process(signal_chunks[:5])
    s.state = snap
    np.testing.assert_array_equal(s.process(signal_chunks[70:]), rest)
    # ONNX's packed (2, B, 128) state converts both ways
    packed = pack_state(model, snap)
    assert packed["state"].shape == (2, 1, 128)
    s.state = unpack_state(model, packed)
    np.testing.assert_array_equal(s.process(signal_chunks[70:]), rest)


def test_trnn_round_trip(tmp_path, signal_chunks):
    model = from_onnx_step(DATA / "silero_vad_op18_ifless.onnx", constants={"sr": SR})
    types = [l.type for l in model.layers]
    assert types.count("lstm") == 1  # the written-out cell became one LSTM
    assert types.count("dft_magnitude") == 1 and "conv1d" in types  # the STFT conv + sqrt became an FFT
    path = tmp_path / "vad.trnn"
    model.save(path)
    loaded = tinyrnn.load(path)
    assert loaded.metadata["onnx_state"] == model.metadata["onnx_state"]
    np.testing.assert_array_equal(loaded.stream().process(signal_chunks[:40]),
                                  model.stream().process(signal_chunks[:40]))


def test_from_onnx_and_cli_convert(tmp_path, signal_chunks):
    from tinyrnn.cli import main
    from tinyrnn_converters import from_onnx

    model = from_onnx(str(DATA / "silero_vad.onnx"), constants={"sr": SR})
    want = model.stream().process(signal_chunks[:30])
    out = tmp_path / "vad.trnn"
    assert main(["convert", str(DATA / "silero_vad.onnx"), "--constant", "sr=16000", "-o", str(out)]) == 0
    np.testing.assert_array_equal(tinyrnn.load(out).stream().process(signal_chunks[:30]), want)
    assert main(["convert", str(DATA / "silero_vad.onnx"), "-o", str(tmp_path / "x.trnn")]) == 1  # sr unbound


def test_unbound_sample_rate_names_the_input():
    with pytest.raises(UnsupportedModelError, match=r"If node .* depends on run-time input\(s\) \['sr'\].*constants"):
        from_onnx_step(DATA / "silero_vad.onnx", input_shapes={"input": (576,)})


def test_unknown_constant_is_refused():
    with pytest.raises(UnsupportedModelError, match="not inputs of the graph"):
        from_onnx_step(DATA / "silero_vad_half.onnx", constants={"sr": SR})


def test_eight_khz_branch(signal_chunks):
    audio = make_signal(2.0)[::2].copy()
    X = chunks(audio, 256, 32)
    model = from_onnx_step(DATA / "silero_vad.onnx", constants={"sr": 8000})
    assert model.input.shape == (288,)
    sess = ort_session("silero_vad.onnx")
    st = np.zeros((2, 1, 128), np.float32)
    ref = []
    for x in X:
        o, st = sess.run(None, {"input": x[None], "state": st, "sr": np.array(8000, np.int64)})
        ref.append(o[0, 0])
    np.testing.assert_allclose(model.stream().process(X)[:, 0], ref, atol=TOL, rtol=0)


# --- segments --------------------------------------------------------------------------


def _example():
    path = Path(__file__).resolve().parents[1] / "examples" / "vad_stream.py"
    spec = importlib.util.spec_from_file_location("vad_stream", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["vad_stream"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _resonator(x: np.ndarray, f: float, bw: float) -> np.ndarray:
    """A two-pole resonance at f Hz of bandwidth bw (one formant)."""
    r = np.exp(-np.pi * bw / SR)
    a1, a2, g = -2 * r * np.cos(2 * np.pi * f / SR), r * r, 1 - r
    y = np.zeros_like(x)
    y1 = y2 = 0.0
    for n in range(len(x)):
        y0 = g * x[n] - a1 * y1 - a2 * y2
        y[n], y2, y1 = y0, y1, y0
    return y


VOWELS = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (640, 1190, 2390)]


def _syllable(rng, seconds: float) -> np.ndarray:
    """A vowel: a glottal pulse train at a wandering pitch through three formants."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = rng.uniform(100, 200) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
    pulses = np.diff(np.concatenate([[0.0], (np.cumsum(f0) / SR % 1.0) * 2 - 1])) + 0.02 * rng.normal(size=n)
    y = sum(_resonator(pulses, f, 80 + 40 * k) for k, f in enumerate(VOWELS[rng.integers(len(VOWELS))]))
    y = y * np.minimum(1, np.minimum(t / 0.03, (t[-1] - t) / 0.05))
    return 0.3 * y / np.abs(y).max()


def speechy_signal(seconds=8.0, seed=0) -> np.ndarray:
    """Utterances of a few synthetic syllables separated by pauses of varied length, over
    faint noise (Silero scores these around 0.3 to 0.9)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    x = rng.normal(0, 0.001, n)
    pos = int(0.5 * SR)
    while True:
        words = np.concatenate([_syllable(rng, rng.uniform(0.12, 0.3)) for _ in range(rng.integers(1, 5))])
        if pos + len(words) > n:
            break
        x[pos:pos + len(words)] += words
        pos += len(words) + int(rng.uniform(0.08, 0.8) * SR)
    return x.astype(np.float32)


RULES = dict(threshold=0.3, min_speech_duration_ms=100, min_silence_duration_ms=100, speech_pad_ms=30)


def test_same_segments_as_get_speech_timestamps():
    torch = pytest.importorskip("torch")
    from silero_vad import get_speech_timestamps, load_silero_vad

    audio = speechy_signal()
    want = get_speech_timestamps(torch.from_numpy(audio), load_silero_vad(onnx=True), sampling_rate=SR, **RULES)
    assert len(want) >= 3
    ex = _example()
    model = from_onnx_step(DATA / "silero_vad.onnx", constants={"sr": SR})
    pieces = [audio[i:i + 1000] for i in range(0, len(audio), 1000)]  # not a multiple of the window
    got = [(s.start, s.end) for s in ex.stream_segments(model, pieces, SR, **RULES)]
    assert got == [(w["start"], w["end"]) for w in want]


def test_segmenter_matches_reference_rules_on_random_probabilities():
    from silero_vad.utils_vad import get_speech_timestamps_from_probs

    ex = _example()
    rng = np.random.default_rng(7)
    for trial in range(40):
        # runs of high and low probability with jitter, like a VAD's output
        probs, n = [], int(rng.integers(20, 400))
        while len(probs) < n:
            level = rng.choice([0.05, 0.3, 0.45, 0.6, 0.95])
            probs += list(np.clip(level + rng.normal(0, 0.1, int(rng.integers(1, 30))), 0, 1))
        probs = probs[:n]
        length = n * 512 - int(rng.integers(0, 512))
        kw = dict(threshold=float(rng.uniform(0.3, 0.7)), min_speech_duration_ms=int(rng.integers(0, 400)),
                  min_silence_duration_ms=int(rng.integers(0, 300)), speech_pad_ms=int(rng.integers(0, 100)))
        want = get_speech_timestamps_from_probs(list(probs), sampling_rate=SR, audio_length_samples=length, **kw)
        seg = ex.Segmenter(SR, **kw)
        got = []
        for p in probs:
            got += seg.push(p)
        got += seg.finish(length)
        assert [(s.start, s.end) for s in got] == [(w["start"], w["end"]) for w in want], (trial, kw)


def test_example_runs_on_a_wav(tmp_path):
    import subprocess
    import sys
    import wave

    audio = speechy_signal(4.0)
    path = tmp_path / "speech.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((audio * 32767).astype("<i2").tobytes())
    script = Path(__file__).resolve().parents[1] / "examples" / "vad_stream.py"
    env = dict(os.environ)
    r = subprocess.run([sys.executable, str(script), str(path), "--threshold", "0.3"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("speech")]
    assert lines and all("s" in l for l in lines)
