"""Model construction, description, text helpers, and run-time input checks."""

from __future__ import annotations

import numpy as np
import pytest

import tinyrnn
from builders import random_recurrent, single_layer_model
from tinyrnn import InputSpec, Model
from tinyrnn.layers import Activation, Dense, Embedding


def test_print_summarises_layers(rng):
    lstm, _ = random_recurrent(rng, "lstm", 3, 4, name="lstm0", peepholes=True, proj=2)
    head = Dense("head", None, {"W": np.zeros((2, 5), np.float32), "b": np.zeros(5, np.float32)}, 2, 5)
    m = Model([lstm, head], InputSpec.features(3))
    text = repr(m)
    assert "2 layers" in text and f"{m.num_params():,} parameters" in text and "float32" in text
    assert "lstm0" in text and "3 -> 4, proj 2, peepholes" in text and "head" in text and "2 -> 5" in text
    assert m.num_params() == (3 * 16 + 2 * 16 + 32 + 12 + 4 * 2) + (10 + 5)


def test_encode_decode_longest_match(rng):
    V = 4
    emb = Embedding("emb", None, {"table": np.zeros((V, 2), np.float32)}, V, 2)
    layer, _ = random_recurrent(rng, "rnn", 2, 3)
    m = Model([emb, layer], InputSpec.token_ids(V), vocab=["a", "b", "ab", " "])
    ids = m.encode("ab a b")
    assert ids.tolist() == [2, 3, 0, 3, 1] and ids.dtype == np.int64
    assert m.decode(ids) == "ab a b"
    with pytest.raises(tinyrnn.InputError, match="'z' at position 1"):
        m.encode("az")
    with pytest.raises(tinyrnn.InputError, match=r"in \[0, 4\)"):
        m.decode([5])


def test_model_without_vocab_refuses_text(rng):
    layer, _ = random_recurrent(rng, "rnn", 2, 3)
    with pytest.raises(tinyrnn.InputError, match="no vocabulary"):
        single_layer_model(layer).encode("x")


@pytest.mark.parametrize("build, match", [
    (lambda l: Model([], InputSpec.features(3)), "at least one layer"),
    (lambda l: Model([l], InputSpec.features(4)), r"expects features of shape \(3,\)"),
    (lambda l: Model([l, Activation("rec", None, "relu")], InputSpec.features(3)), "used twice"),
    (lambda l: Model([l, Activation("a", ["nowhere"], "relu")], InputSpec.features(3)), "reads 'nowhere'"),
    (lambda l: Model([l, Activation("a", None, "relu")], InputSpec.features(3), output="rec"), "feed nothing"),
    (lambda l: Model([l], InputSpec.token_ids(3)), "only an embedding"),
    (lambda l: Model([l], InputSpec.features(3), vocab=["a"]), "needs a model that reads token ids"),
])
def test_inconsistent_models_are_refused(rng, build, match):
    layer, _ = random_recurrent(rng, "gru", 3, 2)
    with pytest.raises(tinyrnn.ModelFormatError, match=match):
        build(layer)


def test_unknown_device(rng):
    layer, _ = random_recurrent(rng, "gru", 3, 2)
    with pytest.raises(tinyrnn.DeviceError, match="'cpu' or 'cuda'"):
        single_layer_model(layer).run(np.zeros((2, 3), np.float32), device="tpu")


def test_run_input_shapes(rng):
    layer, _ = random_recurrent(rng, "lstm", 3, 2)
    m = single_layer_model(layer)
    x = rng.normal(0, 1, (2, 4, 3)).astype(np.float32)
    y = m.run(x)
    assert y.shape == (2, 4, 2)
    np.testing.assert_array_equal(m.run(x[1]), y[1])
    np.testing.assert_array_equal(m.run(x.astype(np.float64)), y)
    with pytest.raises(tinyrnn.InputError, match=r"\(T, 3\) or \(B, T, 3\)"):
        m.run(np.zeros((4, 2), np.float32))
    with pytest.raises(tinyrnn.InputError, match="real numbers"):
        m.run(np.zeros((4, 3), bool))
    nonc = np.asfortranarray(x)
    np.testing.assert_array_equal(m.run(nonc), y)
    ro = x.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(m.run(ro), y)


def test_model_is_not_mutated_by_running(rng):
    layer, _ = random_recurrent(rng, "lstm", 3, 2)
    m = single_layer_model(layer)
    before = {k: v.copy() for k, v in m.tensors().items()}
    m.run(rng.normal(0, 1, (2, 5, 3)).astype(np.float32))
    m.stream().process(rng.normal(0, 1, (5, 3)).astype(np.float32))
    for k, v in m.tensors().items():
        np.testing.assert_array_equal(v, before[k])
        assert not v.flags.writeable
