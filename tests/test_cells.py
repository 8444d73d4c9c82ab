"""Every cell variant, in every direction, against the numpy oracle.

This is the one parametrised check of the kernels (the pattern of ggml's test-backend-ops):
random weights and inputs, float32 kernels against the float64 oracle. Tolerance: outputs
and final states agree to ``atol=2e-5, rtol=1e-4`` (float32 accumulation over I + H terms,
a few steps of recurrence; the observed error is ~1e-6).
"""

from __future__ import annotations

import numpy as np
import pytest

from builders import oracle_recurrent, random_recurrent, random_state, single_layer_model

TOL = dict(atol=2e-5, rtol=1e-4)

ONNX_ACTIVATIONS = [
    ["relu", None, None], ["tanh", None, None], ["sigmoid", None, None], ["affine", 0.7, -0.2],
    ["leakyrelu", 0.1, None], ["thresholdedrelu", 0.3, None], ["scaledtanh", 1.3, 0.8],
    ["hardsigmoid", 0.3, 0.4], ["elu", 0.9, None], ["softsign", None, None], ["softplus", None, None],
]

VARIANTS = {
    "rnn-tanh": ("rnn", {}),
    "rnn-clip": ("rnn", {"clip": 0.7}),
    **{f"rnn-{a[0]}": ("rnn", {"activations": [a]}) for a in ONNX_ACTIVATIONS},
    "lstm": ("lstm", {}),
    "lstm-peepholes": ("lstm", {"peepholes": True}),
    "lstm-coupled": ("lstm", {"input_forget": True}),
    "lstm-coupled-peepholes": ("lstm", {"input_forget": True, "peepholes": True}),
    "lstm-clip": ("lstm", {"clip": 0.5, "peepholes": True}),
    "lstm-proj": ("lstm", {"proj": 3}),
    "lstm-activations": ("lstm", {"activations": [["hardsigmoid", 0.3, 0.45], ["softsign"], ["scaledtanh", 1.1, 0.9]]}),
    "gru": ("gru", {}),
    "gru-lbr": ("gru", {"linear_before_reset": True}),
    "gru-clip": ("gru", {"clip": 0.6}),
    "gru-lbr-clip": ("gru", {"clip": 0.6, "linear_before_reset": True}),
    "gru-activations": ("gru", {"activations": [["hardsigmoid", 0.25, 0.5], ["elu", 0.8]]}),
    "gru-lbr-activations": ("gru", {"linear_before_reset": True, "activations": [["sigmoid"], ["softsign"]]}),
}

# Six streams with ragged lengths: full, padded and empty steps side by side in one run.
I, H, B, T = 4, 5, 6, 7
LENGTHS = np.array([T, 4, T, T, T, 1])


def make(rng, variant, direction="forward", I=I, H=H):
    cell, opts = VARIANTS[variant]
    return random_recurrent(rng, cell, I, H, direction=direction, **opts)


@pytest.mark.parametrize("width", [I, 9], ids=["narrow", "wide"])  # fused vs hoisted input product
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_run_matches_oracle(rng, variant, direction, width):
    layer, w = make(rng, variant, direction, I=width)
    model = single_layer_model(layer)
    x = rng.normal(0, 1, (B, T, width)).astype(np.float32)
    lengths = LENGTHS
    state = random_state(rng, layer, B)
    y, st = model.run(x, lengths=lengths, state=state, return_state=True)
    y_ref, st_ref = oracle_recurrent(layer, w, x, lengths, state)
    np.testing.assert_allclose(y, y_ref, **TOL)
    for k in st_ref:
        np.testing.assert_allclose(st[k], st_ref[k], **TOL, err_msg=k)


def test_bidirectional_activations_per_direction(rng):
    acts = [["sigmoid"], ["tanh"], ["tanh"], ["hardsigmoid", 0.2, 0.5], ["relu"], ["softsign"]]
    layer, w = random_recurrent(rng, "lstm", I, H, direction="bidirectional", activations=acts)
    x = rng.normal(0, 1, (B, T, I)).astype(np.float32)
    y = single_layer_model(layer).run(x)
    np.testing.assert_allclose(y, oracle_recurrent(layer, w, x)[0], **TOL)


@pytest.mark.parametrize("width", [I, 9], ids=["narrow", "wide"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_stream_matches_oracle(rng, variant, width):
    """step (unbatched and batched), process and run give the oracle's answer."""
    layer, w = make(rng, variant, I=width)
    model = single_layer_model(layer)
    x = rng.normal(0, 1, (B, T, width)).astype(np.float32)
    y_ref, st_ref = oracle_recurrent(layer, w, x)

    batched = model.stream(batch=B)
    y_step = np.stack([batched.step(x[:, t]) for t in range(T)], axis=1)
    np.testing.assert_allclose(y_step, y_ref, **TOL)
    for k, v in batched.state.items():
        np.testing.assert_allclose(v, st_ref[k], **TOL)

    y_proc = model.stream(batch=B).process(x)
    np.testing.assert_array_equal(y_proc, y_step)  # same arithmetic, whichever path: bit for bit

    single = model.stream()
    y0 = np.stack([single.step(x[0, t]) for t in range(T)])
    np.testing.assert_array_equal(y0, y_step[0])
    np.testing.assert_array_equal(model.run(x[0]), y0)


def test_long_sequence_crosses_hoisting_chunks(rng):
    """T well past the kernel's hoisting chunk, ragged lengths, both directions."""
    layer, w = random_recurrent(rng, "lstm", 3, 6, direction="bidirectional", peepholes=True, scale=0.4)
    x = rng.normal(0, 1, (2, 75, 3)).astype(np.float32)
    lengths = np.array([75, 40])
    y = single_layer_model(layer).run(x, lengths=lengths)
    np.testing.assert_allclose(y, oracle_recurrent(layer, w, x, lengths)[0], **TOL)


@pytest.mark.parametrize("variant", ["lstm-peepholes", "lstm-proj", "gru", "gru-lbr", "rnn-tanh"])
def test_wide_layers_match_oracle(rng, variant):
    """Sizes where products run through register tiles plus a ragged tail of columns."""
    cell, opts = VARIANTS[variant]
    if "proj" in opts:
        opts = dict(opts, proj=20)
    layer, w = random_recurrent(rng, cell, 20, 24, scale=0.3, **opts)
    model = single_layer_model(layer)
    x = rng.normal(0, 1, (5, 9, 20)).astype(np.float32)
    lengths = np.array([9, 9, 6, 9, 2])
    state = random_state(rng, layer, 5)
    y, st = model.run(x, lengths=lengths, state=state, return_state=True)
    y_ref, st_ref = oracle_recurrent(layer, w, x, lengths, state)
    np.testing.assert_allclose(y, y_ref, **TOL)
    for k in st_ref:
        np.testing.assert_allclose(st[k], st_ref[k], **TOL, err_msg=k)
    s = model.stream(batch=4)
    s.state = {k: v[:4] for k, v in state.items()}
    y_step = np.stack([s.step(x[:4, t]) for t in range(9)], axis=1)
    y_full = model.run(x[:4], state={k: v[:4] for k, v in state.items()})
    np.testing.assert_array_equal(y_step, y_full)


def test_zero_length_sequence_keeps_initial_state(rng):
    layer, w = make(rng, "gru")
    model = single_layer_model(layer)
    x = rng.normal(0, 1, (2, 3, I)).astype(np.float32)
    state = random_state(rng, layer, 2)
    y, st = model.run(x, lengths=[0, 3], state=state, return_state=True)
    assert not y[0].any()
    np.testing.assert_array_equal(st["rec.h"][0], state["rec.h"][0])
