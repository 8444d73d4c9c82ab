"""Quantized weights: the math, every layer kind against float32, files and streams.

The bounds asserted here come from the quantization step. int8 rounds each weight to the
nearest multiple of its column's scale ``s_j = max_i |w_ij| / 127``, so the weight moves by
at most ``s_j / 2``; fp16 moves a weight by at most ``2**-11 * |w|`` (or ``2**-25``,
half its smallest step, for weights too small for float16's normal range). A dot product over
``x`` therefore moves by at most ``s_j / 2 * |x|_1`` (int8) or ``2**-11 * sum_i |x_i w_ij|``
(fp16): asserted as such for Dense and Embedding.

For a recurrent layer every pre-activation, at every step, moves by at most

    e = u * (max|W| * |x|_1 + max|R| * |h|_1 + max|proj| * H)    u = 1/254 (int8), 2**-11 (fp16)

(the proj term only with a projection, whose input ``o * tanh(c)`` is below 1). What is
asserted is ``max |y_q - y| <= K * e`` after T = 7 steps with ``K = 2``: the activations
are about 1-Lipschitz, and over a few steps the recurrence feeds earlier errors back. Over
every variant, direction and both schemes (several random draws each) the observed ratio
``max |y_q - y| / e`` peaked at 1.0 (fp16, softplus RNN); its median is about 0.1 (int8)
and 0.05 (fp16). ThresholdedRelu is
left out of that test: it jumps by alpha at its threshold, so no bound proportional to the
step exists for it. Its kernels, like every variant's, are checked exactly: a quantized
model answers like the float32 model holding its dequantized weights.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

import tinyrnn
from builders import oracle_recurrent, random_recurrent, random_state, single_layer_model
from test_cells import TOL, VARIANTS
from tinyrnn import InputSpec, Model, QuantizationError
from tinyrnn.cli import main
from tinyrnn.backends.weights import kernel_view
from tinyrnn.layers import Dense, Embedding, Softmax
from tinyrnn.quantize import (FP16_UNIT, INT8_LEVELS, accuracy_report, dequantize_model, file_size,
                              quantize_fp16, quantize_int8)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

SCHEMES = ("int8", "fp16")
UNIT = {"int8": 1 / (2 * INT8_LEVELS), "fp16": FP16_UNIT}  # largest weight error / max|w|
K = 2.0  # see the module docstring
I, H, B, T = 4, 5, 3, 7


def text_model(rng, V=6, vocab=None, log=True, head_only=False):
    """Embedding -> LSTM (peepholes, projection) -> GRU -> Dense -> (log-)softmax."""
    emb = Embedding("emb", None, {"table": rng.normal(0, 1, (V, 3)).astype(np.float32)}, V, 3)
    lstm, _ = random_recurrent(rng, "lstm", 3, 4, name="lstm", peepholes=True, proj=2)
    gru, _ = random_recurrent(rng, "gru", 2, 3, name="gru", linear_before_reset=True)
    head = Dense("head", None, {"W": rng.normal(0, 2, (3, V)).astype(np.float32),
                                "b": rng.normal(0, 1, V).astype(np.float32)}, 3, V)
    layers = [emb, lstm, gru, head] + ([] if head_only else [Softmax("probs", None, log=log)])
    return Model(layers, InputSpec.token_ids(V), vocab=vocab, metadata={"source": "test"})


# --- the math -----------------------------------------------------------------------------


def test_int8_scales_are_per_column_and_error_is_half_a_step(rng):
    w = rng.normal(0, 1, (3, 40, 6)) * np.array([1e-3, 0.1, 1, 10, 0, 1e3])  # (D, I, GH)
    q, scale = quantize_int8(w, axis=1)
    assert q.dtype == np.int8 and q.shape == w.shape
    assert scale.dtype == np.float32 and scale.shape == (3, 6)
    np.testing.assert_allclose(scale[:, [0, 1, 2, 3, 5]], np.abs(w).max(1)[:, [0, 1, 2, 3, 5]] / 127, rtol=1e-7)
    np.testing.assert_array_equal(scale[:, 4], 1.0)  # all-zero column: any scale, zeros stay zeros
    np.testing.assert_array_equal(q[:, :, 4], 0)
    assert np.abs(q.astype(int)).max() == 127 and q.min() >= -127  # -128 is never used
    np.testing.assert_array_equal(np.abs(q.astype(int)).max(1)[:, [0, 1, 2, 3, 5]], 127)
    err = np.abs(q * scale[:, None, :].astype(np.float64) - w)
    assert (err <= scale[:, None, :] / 2 * (1 + 1e-6)).all()


def test_int8_other_axes(rng):
    dense = rng.normal(0, 1, (7, 3))  # (in, out): one scale per output column
    q, s = quantize_int8(dense, axis=0)
    np.testing.assert_allclose(s, np.abs(dense).max(0) / 127, rtol=1e-7)
    table = rng.normal(0, 1, (5, 4))  # (V, dim): one scale per row
    q, s = quantize_int8(table, axis=1)
    np.testing.assert_allclose(s, np.abs(table).max(1) / 127, rtol=1e-7)
    assert (np.abs(q * s[:, None] - table) <= s[:, None] / 2 * (1 + 1e-6)).all()


def test_fp16_rounding_and_range(rng):
    w = rng.normal(0, 1, 1000) * 10.0 ** rng.integers(-3, 4, 1000)
    h = quantize_fp16(w)
    assert h.dtype == np.float16
    # relative 2**-11 in float16's normal range; below 2**-14 the absolute step is 2**-24
    assert (np.abs(h.astype(np.float64) - w) <= np.maximum(FP16_UNIT * np.abs(w), 2.0 ** -25)).all()
    with pytest.raises(QuantizationError, match=r"tensor x\.W holds values up to 70000 .* at most 65504"):
        quantize_fp16(np.array([1.0, -7e4]), "tensor x.W")


# --- models -------------------------------------------------------------------------------


def test_unknown_scheme(rng):
    model = text_model(rng)
    with pytest.raises(QuantizationError, match=r"one of \['fp16', 'int8'\], found 'int4'"):
        model.quantize("int4")
    assert isinstance(QuantizationError("x"), tinyrnn.TinyRNNError)


def test_fp16_refuses_weights_beyond_its_range(rng):
    layer, _ = random_recurrent(rng, "gru", 2, 3, scale=1e5)
    with pytest.raises(QuantizationError, match=r"tensor rec\.W holds values up to .*Use scheme 'int8'"):
        single_layer_model(layer).quantize("fp16")


def test_int8_layout_of_every_layer_kind(rng):
    model = text_model(rng)
    q = model.quantize("int8")
    emb, lstm, gru, head, probs = q.layers
    shapes = {k: (v.dtype.name, v.shape) for layer in q.layers for k, v in
              ((f"{layer.name}.{n}", a) for n, a in layer.params.items())}
    assert shapes == {
        "emb.table": ("int8", (6, 3)), "emb.table_scale": ("float32", (6,)),
        "lstm.W": ("int8", (1, 3, 16)), "lstm.W_scale": ("float32", (1, 16)),
        "lstm.R": ("int8", (1, 2, 16)), "lstm.R_scale": ("float32", (1, 16)),
        "lstm.proj": ("int8", (1, 4, 2)), "lstm.proj_scale": ("float32", (1, 2)),
        "lstm.B": ("float32", (1, 32)), "lstm.P": ("float32", (1, 12)),
        "gru.W": ("int8", (1, 2, 9)), "gru.W_scale": ("float32", (1, 9)),
        "gru.R": ("int8", (1, 3, 9)), "gru.R_scale": ("float32", (1, 9)),
        "gru.B": ("float32", (1, 18)),
        "head.W": ("int8", (3, 6)), "head.W_scale": ("float32", (6,)), "head.b": ("float32", (6,)),
    }
    # biases and peepholes are carried over untouched; scales follow the stated axes
    for name in ("lstm.B", "lstm.P", "gru.B", "head.b"):
        np.testing.assert_array_equal(q.tensors()[name], model.tensors()[name])
    src = model.tensors()
    np.testing.assert_allclose(q.tensors()["lstm.R_scale"], np.abs(src["lstm.R"]).max(1) / 127, rtol=1e-6)
    np.testing.assert_allclose(q.tensors()["head.W_scale"], np.abs(src["head.W"]).max(0) / 127, rtol=1e-6)
    np.testing.assert_allclose(q.tensors()["emb.table_scale"], np.abs(src["emb.table"]).max(1) / 127, rtol=1e-6)
    assert q.dtype == "int8" and model.dtype == "float32"
    assert q.metadata == {"source": "test", "quantization": {"scheme": "int8", "source_dtype": "float32"}}
    assert model.metadata == {"source": "test"}  # the source model is not touched
    assert q.num_params() == model.num_params()


def test_fp16_layout(rng):
    model = text_model(rng)
    q = model.quantize("fp16")
    t = q.tensors()
    assert not any(k.endswith("_scale") for k in t)
    for name in ("emb.table", "lstm.W", "lstm.R", "lstm.proj", "gru.W", "gru.R", "head.W"):
        assert t[name].dtype == np.float16
        np.testing.assert_array_equal(t[name], model.tensors()[name].astype(np.float16))
    assert t["lstm.P"].dtype == np.float32 and q.dtype == "float16"
    assert q.metadata["quantization"] == {"scheme": "fp16", "source_dtype": "float32"}


def test_quantizing_again_starts_from_the_stored_weights(rng):
    q = text_model(rng).quantize("int8")
    again = q.quantize("int8")
    for k, v in q.tensors().items():  # symmetric int8 is idempotent
        np.testing.assert_array_equal(again.tensors()[k], v, err_msg=k)
    half = q.quantize("fp16")
    assert half.metadata["quantization"] == {"scheme": "fp16", "source_dtype": "int8"}
    back = dequantize_model(q)
    assert back.dtype == "float32"
    np.testing.assert_array_equal(back.tensors()["head.W"],
                                  q.tensors()["head.W"] * q.tensors()["head.W_scale"])


# --- every cell kind against float32 ------------------------------------------------------


def _run_both(rng, variant, direction, scheme):
    cell, opts = VARIANTS[variant]
    layer, w = random_recurrent(rng, cell, I, H, direction=direction, **opts)
    x = rng.normal(0, 1, (B, T, I)).astype(np.float32)
    state = random_state(rng, layer, B)
    q = single_layer_model(layer).quantize(scheme)
    return layer, w, x, state, q


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_quantized_kernels_match_dequantized_float32(rng, variant, direction, scheme):
    """The kernels' int8/fp16 paths compute exactly what the stored weights stand for."""
    layer, w, x, state, q = _run_both(rng, variant, direction, scheme)
    lengths = np.array([T, 4, 1])
    y, st = q.run(x, lengths=lengths, state=state, return_state=True)
    y_ref, st_ref = dequantize_model(q).run(x, lengths=lengths, state=state, return_state=True)
    np.testing.assert_allclose(y, y_ref, **TOL)
    for k in st_ref:
        np.testing.assert_allclose(st[k], st_ref[k], **TOL, err_msg=k)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("variant", sorted(v for v in VARIANTS if v != "rnn-thresholdedrelu"))
def test_quantization_error_within_bound(rng, variant, direction, scheme):
    """Quantized outputs stay within K * e of the float32 weights' (see the docstring)."""
    layer, w, x, state, q = _run_both(rng, variant, direction, scheme)
    y = q.run(x, state=state)
    y_ref, _ = oracle_recurrent(layer, w, x, state=state)  # the original weights, float64
    x1 = np.abs(x).sum(-1).max()
    h1 = layer.recurrent_size * max(np.abs(y_ref).max(), np.abs(state["rec.h"]).max())
    e = UNIT[scheme] * (np.abs(w["W"]).max() * x1 + np.abs(w["R"]).max() * h1)
    if w["proj"] is not None:
        e += UNIT[scheme] * np.abs(w["proj"]).max() * layer.hidden_size
    err = np.abs(y - y_ref).max()
    assert err <= K * e, f"error {err:.3g} exceeds {K} * e = {K * e:.3g}"
    assert err > 0  # the weights did change


@pytest.mark.parametrize("scheme", SCHEMES)
def test_dense_error_bound(rng, scheme):
    W = rng.normal(0, 1, (30, 8)).astype(np.float32) * np.linspace(0.01, 3, 8, dtype=np.float32)
    b = rng.normal(0, 1, 8).astype(np.float32)
    model = Model([Dense("d", None, {"W": W, "b": b}, 30, 8)], InputSpec.features(30))
    q = model.quantize(scheme)
    x = rng.normal(0, 1, (50, 30)).astype(np.float32)
    err = np.abs(q.run(x).astype(np.float64) - (x.astype(np.float64) @ W + b))
    if scheme == "int8":
        bound = np.abs(x).sum(-1, keepdims=True) * (np.abs(W).max(0) / 127 / 2)  # (N, out)
    else:
        bound = FP16_UNIT * (np.abs(x) @ np.abs(W))
    assert (err <= bound + 1e-5).all()
    assert err.max() > bound.max() / 100  # and the bound is not vacuous


@pytest.mark.parametrize("scheme", SCHEMES)
def test_embedding_error_bound(rng, scheme):
    table = (rng.normal(0, 1, (9, 5)) * np.linspace(0.1, 5, 9)[:, None]).astype(np.float32)
    model = Model([Embedding("e", None, {"table": table}, 9, 5)], InputSpec.token_ids(9))
    q = model.quantize(scheme)
    ids = np.arange(9)
    err = np.abs(q.run(ids).astype(np.float64) - table)  # (9, 5)
    if scheme == "int8":
        bound = np.abs(table).max(1, keepdims=True) / 127 / 2  # one step per row (token)
    else:
        bound = FP16_UNIT * np.abs(table)
    assert (err <= bound * (1 + 1e-6)).all()


# --- files and streams --------------------------------------------------------------------


def _header(path):
    raw = Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_save_load_round_trip(tmp_path, rng, scheme):
    model = text_model(rng, vocab=list("abcde "))
    q = model.quantize(scheme)
    path = tmp_path / "q.trnn"
    q.save(path)
    loaded = tinyrnn.load(path)
    assert loaded.architecture() == q.architecture() and loaded.dtype == q.dtype
    for name, arr in q.tensors().items():
        assert loaded.tensors()[name].dtype == arr.dtype
        np.testing.assert_array_equal(loaded.tensors()[name], arr)
    ids = rng.integers(0, 6, (2, 9))
    np.testing.assert_array_equal(loaded.run(ids), q.run(ids))
    header = _header(path)
    want = {"int8": "I8", "fp16": "F16"}[scheme]
    for name in ("emb.table", "lstm.W", "lstm.R", "lstm.proj", "gru.W", "gru.R", "head.W"):
        assert header[name]["dtype"] == want, name
        assert (name + "_scale" in header) == (scheme == "int8")
        if scheme == "int8":
            assert header[name + "_scale"]["dtype"] == "F32"
    assert header["lstm.B"]["dtype"] == "F32"
    arch = json.loads(header["__metadata__"]["tinyrnn"])
    assert arch["metadata"]["quantization"]["scheme"] == scheme
    assert {l["weights"] for l in arch["layers"] if "weights" in l} == {q.dtype}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_safetensors_opens_the_quantized_file(tmp_path, rng, scheme):
    from safetensors.numpy import load_file

    q = text_model(rng).quantize(scheme)
    q.save(tmp_path / "q.trnn")
    tensors = load_file(str(tmp_path / "q.trnn"))
    assert set(tensors) == set(q.tensors())
    for k, v in tensors.items():
        assert v.dtype == q.tensors()[k].dtype
        np.testing.assert_array_equal(v, q.tensors()[k])


def test_file_sizes(tmp_path, rng):
    """Weights dominate a real model's file: int8 is about a quarter, fp16 a half."""
    emb = Embedding("emb", None, {"table": rng.normal(0, 1, (64, 32)).astype(np.float32)}, 64, 32)
    lstm, _ = random_recurrent(rng, "lstm", 32, 128, name="lstm", scale=0.1)
    head = Dense("head", None, {"W": rng.normal(0, 1, (128, 64)).astype(np.float32),
                                "b": np.zeros(64, np.float32)}, 128, 64)
    model = Model([emb, lstm, head], InputSpec.token_ids(64))
    sizes = {}
    for name, m in (("float32", model), ("int8", model.quantize("int8")), ("fp16", model.quantize("fp16"))):
        m.save(tmp_path / f"{name}.trnn")
        sizes[name] = (tmp_path / f"{name}.trnn").stat().st_size
        assert sizes[name] == file_size(m)
    # the rest is float32 biases and int8 scales (one per output column), and the header
    assert 0.25 < sizes["int8"] / sizes["float32"] < 0.28
    assert 0.50 < sizes["fp16"] / sizes["float32"] < 0.52


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("variant", ["rnn-tanh", "lstm-peepholes", "lstm-proj", "gru", "gru-lbr"])
def test_stream_equals_run(rng, variant, scheme):
    cell, opts = VARIANTS[variant]
    layer, _ = random_recurrent(rng, cell, I, H, **opts)
    q = single_layer_model(layer).quantize(scheme)
    x = rng.normal(0, 1, (B, T, I)).astype(np.float32)
    batched = q.stream(batch=B)
    y_step = np.stack([batched.step(x[:, t]) for t in range(T)], axis=1)
    np.testing.assert_array_equal(q.stream(batch=B).process(x), y_step)
    single = q.stream()
    y0 = np.stack([single.step(x[0, t]) for t in range(T)])
    np.testing.assert_array_equal(y0, y_step[0])
    np.testing.assert_array_equal(q.run(x[0]), y0)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_kernels_get_the_stored_weights_not_a_float32_copy(rng, scheme):
    """The contract: quantized weights are read as stored, never expanded in memory."""
    from tinyrnn.backends import cpu

    emb = Embedding("emb", None, {"table": rng.normal(0, 1, (50, 32)).astype(np.float32)}, 50, 32)
    lstm, _ = random_recurrent(rng, "lstm", 32, 64, name="lstm", proj=48)
    head = Dense("head", None, {"W": rng.normal(0, 1, (48, 50)).astype(np.float32),
                                "b": np.zeros(50, np.float32)}, 48, 50)
    q = Model([emb, lstm, head], InputSpec.token_ids(50)).quantize(scheme)
    q.run(np.arange(5))
    preps = cpu.prepared(q)
    # each array once (a large R's panels serve the batched kernels too: one object)
    kernel_arrays = list({id(a): a for prep in preps for a in prep.values() if isinstance(a, np.ndarray)}.values())
    # column panels (packing.pack_panels) are a rearranged copy at the stored dtype; besides
    # them, float32 copies of the weights would make this about 4x (int8) or 2x (fp16) larger
    panels = list({id(prep[k]): prep[k] for prep in preps for k in ("Wp", "Rp", "Rp_batched") if k in prep}.values())
    for P, M in ((prep[k], prep[k[0]]) for prep in preps for k in ("Wp", "Rp", "Rp_batched") if k in prep):
        assert P.dtype == M.dtype and P.size <= M.size
    assert sum(a.nbytes for a in kernel_arrays) - sum(P.nbytes for P in panels) < 1.2 * q.nbytes()
    for layer in q.layers:
        for name in layer.matrices:
            if name in layer.params:
                # the stored array itself, or its cache-line-aligned copy (packing.aligned):
                # the same dtype and bytes
                stored = kernel_view(layer.params[name])
                assert any(np.shares_memory(a, stored) or (a.dtype == stored.dtype and a.shape == stored.shape
                                                           and np.array_equal(a, stored))
                           for a in kernel_arrays), name


def test_text_model_streams_tokens(rng):
    q = text_model(rng).quantize("int8")
    ids = rng.integers(0, 6, 12)
    s = q.stream()
    np.testing.assert_array_equal(np.stack([s.step(int(i)) for i in ids]), q.run(ids))


# --- long streams ---------------------------------------------------------------------------


def test_long_stream_error_stays_bounded():
    """5k steps of the drift study (benchmarks/quant_drift.py runs 100k): no growth."""
    from quant_drift import contraction, drift, drift_lstm, perturbation_decay

    model = drift_lstm(hidden=64, gain=1.0)
    d = drift(model, steps=5000, window=1000)
    for scheme, limit in (("int8", 0.05), ("fp16", 0.003)):
        h = d[f"{scheme}_h"]  # max |h_q - h_f32| per 1000-step window
        assert h.max() < limit and d[f"{scheme}_c"].max() < limit, (scheme, h, d[f"{scheme}_c"])
        assert h[-1] <= 2 * h[0], f"{scheme} error grows: {h}"
    # why: an error put into the state at one step dies out (forget gates < 1, saturation)
    decay = perturbation_decay(model)
    assert contraction(decay) < 0.95
    assert decay[49] < decay[0] / 100


# --- the accuracy report --------------------------------------------------------------------

VOCAB = ["a", "b", "c", "d", "ab", " "]
TEXT = "ab cab dab cad bad abba cab dad " * 4


def _expected_bits(model, ids):
    """Bits per character computed here from scratch: -log2 p(next token) per character."""
    y = model.run(ids).astype(np.float64)  # (T, V)
    layer = model.layers[-1]
    if isinstance(layer, Dense):
        y = y - np.log(np.exp(y - y.max(-1, keepdims=True)).sum(-1, keepdims=True)) - y.max(-1, keepdims=True)
    elif not layer.log:
        y = np.log(y)
    nats = -sum(y[t, ids[t + 1]] for t in range(len(ids) - 1))
    chars = sum(len(VOCAB[i]) for i in ids[1:])
    return nats / math.log(2) / chars


def test_report_on_a_text_model(rng):
    model = text_model(rng, vocab=VOCAB)
    q = model.quantize("int8")
    report = accuracy_report(model, q, TEXT)
    ids = model.encode(TEXT)
    y, yq = model.run(ids), q.run(ids)
    assert report.max_abs_error == pytest.approx(np.abs(yq - y).max(), rel=1e-6)
    assert report.mean_abs_error == pytest.approx(np.abs(yq.astype(np.float64) - y).mean(), rel=1e-6)
    assert report.output_max == pytest.approx(np.abs(y).max(), rel=1e-6)
    assert report.bits_reference == pytest.approx(_expected_bits(model, ids), rel=1e-9)
    assert report.bits_quantized == pytest.approx(_expected_bits(q, ids), rel=1e-9)
    assert report.bits_change == pytest.approx(report.bits_quantized / report.bits_reference - 1)
    assert report.bits_unit == "char" and report.predictions == len(ids) - 1
    assert report.top1_agreement == pytest.approx(np.mean(y[:-1].argmax(-1) == yq[:-1].argmax(-1)))
    assert report.reference_bytes == file_size(model) and report.quantized_bytes == file_size(q)
    assert (report.reference_dtype, report.quantized_dtype) == ("float32", "int8")
    text = report.format()
    assert f"text, {len(TEXT)} characters ({len(ids)} tokens)" in text
    assert "bits/char" in text and "top-1" in text and f"of {len(ids) - 1}" in text
    assert json.loads(json.dumps(report.to_json()))["size_ratio"] == pytest.approx(report.size_ratio)


@pytest.mark.parametrize("output", ["probabilities", "logits"])
def test_report_reads_every_kind_of_text_output(output):
    """Log-probabilities, probabilities and logits of one model score the same."""
    log_model = text_model(np.random.default_rng(5), vocab=VOCAB)
    other = text_model(np.random.default_rng(5), vocab=VOCAB, log=False, head_only=output == "logits")
    ref = accuracy_report(log_model, log_model.quantize("fp16"), TEXT)
    got = accuracy_report(other, other.quantize("fp16"), TEXT)
    assert got.bits_reference == pytest.approx(ref.bits_reference, rel=1e-5)
    assert got.bits_quantized == pytest.approx(ref.bits_quantized, rel=1e-5)
    assert got.top1_agreement == ref.top1_agreement


def test_report_on_feature_models_and_random_samples(rng):
    layer, _ = random_recurrent(rng, "gru", 3, 4)
    model = single_layer_model(layer)
    report = accuracy_report(model, model.quantize("int8"), steps=50, seed=3)
    assert report.bits_reference is None and report.top1_agreement is None
    assert report.outputs == 50 * 4 and "50 steps of random normal features (seed 3)" in report.sample
    assert "bits" not in report.format()
    x = rng.normal(0, 1, (2, 9, 3)).astype(np.float32)
    report = accuracy_report(model, model.quantize("int8"), x)
    assert report.outputs == 2 * 9 * 4 and report.sample == "float32 array of shape (2, 9, 3)"
    tokens = text_model(rng)  # no vocabulary: bits per token over random ids
    report = accuracy_report(tokens, tokens.quantize("int8"), steps=40)
    assert report.bits_unit == "token" and report.predictions == 39


def test_report_errors(rng):
    model = text_model(rng)
    layer, _ = random_recurrent(rng, "gru", 3, 4)
    other = single_layer_model(layer)
    with pytest.raises(QuantizationError, match="same shapes"):
        accuracy_report(model, other)
    with pytest.raises(QuantizationError, match="positive number of steps, found 0"):
        accuracy_report(model, model, steps=0)
    with pytest.raises(tinyrnn.InputError, match="no vocabulary"):
        accuracy_report(model, model, "abc")


# --- the command line -----------------------------------------------------------------------


@pytest.fixture
def text_files(tmp_path, rng):
    model = text_model(rng, vocab=VOCAB)
    model.save(tmp_path / "m.trnn")
    (tmp_path / "sample.txt").write_text(TEXT, encoding="utf-8")
    return tmp_path, model


def test_cli_quantize_prints_the_report(text_files, capsys):
    tmp, model = text_files
    args = ["quantize", str(tmp / "m.trnn"), "-o", str(tmp / "q.trnn"), "--scheme", "int8",
            "--sample", str(tmp / "sample.txt")]
    assert main(args) == 0
    out = capsys.readouterr().out
    q = tinyrnn.load(tmp / "q.trnn")
    assert q.dtype == "int8" and q.metadata["quantization"]["scheme"] == "int8"
    expected = accuracy_report(model, q, TEXT)
    assert f"{(tmp / 'm.trnn').stat().st_size:,} bytes" in out and f"{(tmp / 'q.trnn').stat().st_size:,} bytes" in out
    assert f"max {expected.max_abs_error:.3g}" in out
    assert f"{expected.bits_reference:.4f}" in out and f"{100 * expected.top1_agreement:.2f}%" in out
    assert main(args + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["bits_quantized"] == pytest.approx(expected.bits_quantized)
    assert data["quantized_bytes"] == (tmp / "q.trnn").stat().st_size


def test_cli_quantize_feature_model_with_npy_sample(tmp_path, rng, capsys):
    layer, _ = random_recurrent(rng, "lstm", 3, 4, peepholes=True)
    single_layer_model(layer).save(tmp_path / "m.trnn")
    np.save(tmp_path / "x.npy", rng.normal(0, 1, (20, 3)).astype(np.float32))
    assert main(["quantize", str(tmp_path / "m.trnn"), "-o", str(tmp_path / "h.trnn"), "--scheme", "fp16",
                 "--sample", str(tmp_path / "x.npy")]) == 0
    out = capsys.readouterr().out
    assert "float32 array of shape (20, 3)" in out and "bits" not in out
    assert tinyrnn.load(tmp_path / "h.trnn").dtype == "float16"


def test_cli_quantize_errors(text_files, tmp_path, rng, capsys):
    tmp, _ = text_files
    m = str(tmp / "m.trnn")
    assert main(["quantize", m, "-o", m, "--scheme", "int8"]) == 1
    assert "would overwrite the model" in capsys.readouterr().err
    layer, _ = random_recurrent(rng, "gru", 3, 4)
    single_layer_model(layer).save(tmp / "f.trnn")
    assert main(["quantize", str(tmp / "f.trnn"), "-o", str(tmp / "g.trnn"), "--scheme", "int8",
                 "--sample", str(tmp / "sample.txt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinyrnn quantize: error: a text sample needs a model with a vocabulary")
    assert err.count("\n") == 1 and not (tmp / "g.trnn").exists()
    (tmp / "odd.txt").write_text("abz", encoding="utf-8")
    assert main(["quantize", m, "-o", str(tmp / "g.trnn"), "--scheme", "int8", "--sample", str(tmp / "odd.txt")]) == 1
    assert "'z' at position 2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["quantize", m, "-o", str(tmp / "g.trnn"), "--scheme", "int4"])
    assert exc.value.code == 2


def test_cli_quantize_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["quantize", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
    assert "--scheme {fp16,int8}" in out and "--sample" in out and "bits per character" in out
