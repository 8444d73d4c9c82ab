"""Feed-forward layers and whole stacks against the oracle (float32 vs float64,
``atol=2e-5, rtol=1e-4``)."""

from __future__ import annotations

import numpy as np
import pytest

import oracle
from builders import oracle_recurrent, random_recurrent
from tinyrnn import InputSpec, Model
from tinyrnn.layers import Activation, Dense, Embedding, Softmax

TOL = dict(atol=2e-5, rtol=1e-4)

ELEMENTWISE = ["relu", "tanh", "sigmoid", "affine", "leakyrelu", "thresholdedrelu", "scaledtanh", "hardsigmoid",
               "elu", "softsign", "softplus", "identity", "gelu", "silu", "exp", "abs", "neg", "square"]
DEFAULTS = {"affine": (1.0, 0.0), "leakyrelu": (0.01, 0), "thresholdedrelu": (1.0, 0), "scaledtanh": (1.0, 1.0),
            "hardsigmoid": (0.2, 0.5), "elu": (1.0, 0)}


def dense_layer(rng, name, I, O):
    Wt = rng.normal(0, 0.5, (O, I)).astype(np.float32)  # PyTorch layout (out, in)
    b = rng.normal(0, 0.5, O).astype(np.float32)
    return Dense(name, None, {"W": Wt.T, "b": b}, I, O), Wt, b


@pytest.mark.parametrize("fn", ELEMENTWISE)
def test_activation_layer(rng, fn):
    x = rng.normal(0, 2, (2, 5, 6)).astype(np.float32)
    x[0, 0, :2] = [0.0, 1.0]  # the edges of relu, thresholdedrelu at alpha=1
    m = Model([Activation("act", None, fn)], InputSpec.features(6))
    np.testing.assert_allclose(m.run(x), oracle.activation(fn, *DEFAULTS.get(fn, (0, 0)))(x), **TOL)


def test_activation_with_alpha_beta(rng):
    x = rng.normal(0, 2, (1, 4, 5)).astype(np.float32)
    m = Model([Activation("act", None, "scaledtanh", 0.5, 2.0)], InputSpec.features(5))
    np.testing.assert_allclose(m.run(x), 0.5 * np.tanh(2.0 * x), **TOL)


@pytest.mark.parametrize("log", [False, True])
def test_dense_softmax(rng, log):
    layer, Wt, b = dense_layer(rng, "fc", 7, 4)
    m = Model([layer, Softmax("sm", None, log=log)], InputSpec.features(7))
    x = rng.normal(0, 1, (3, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(m.run(x), oracle.softmax(oracle.dense(x, Wt, b), log), **TOL)


def test_softmax_is_stable_for_large_logits():
    m = Model([Softmax("sm", None)], InputSpec.features(3))
    y = m.run(np.array([[1000.0, 1001.0, -1000.0]], np.float32))
    np.testing.assert_allclose(y, oracle.softmax(np.array([[1000.0, 1001.0, -1000.0]])), **TOL)


def test_embedding_lstm_dense_stack(rng):
    """A text model: Embedding -> 2-layer LSTM (with projection) -> Dense -> log-softmax."""
    V, E, H = 11, 6, 8
    table = rng.normal(0, 1, (V, E)).astype(np.float32)
    l1, w1 = random_recurrent(rng, "lstm", E, H, name="lstm1", proj=5)
    l2, w2 = random_recurrent(rng, "lstm", 5, H, name="lstm2", peepholes=True)
    head, Wt, b = dense_layer(rng, "head", H, V)
    m = Model([Embedding("emb", None, {"table": table}, V, E), l1, l2, head, Softmax("out", None, log=True)],
              InputSpec.token_ids(V))
    ids = rng.integers(0, V, (2, 9))
    x = oracle.embedding(ids, table)
    y1 = oracle_recurrent(l1, w1, x)[0]
    y2 = oracle_recurrent(l2, w2, y1)[0]
    ref = oracle.softmax(oracle.dense(y2, Wt, b), log=True)
    np.testing.assert_allclose(m.run(ids), ref, **TOL)
    # the same through a stream, token by token
    s = m.stream(batch=2)
    steps = np.stack([s.step(ids[:, t]) for t in range(9)], axis=1)
    np.testing.assert_allclose(steps, ref, **TOL)


def test_gru_rnn_stack_with_activation_between(rng):
    l1, w1 = random_recurrent(rng, "gru", 3, 6, name="g", linear_before_reset=True)
    act = Activation("relu", None, "relu")
    l2, w2 = random_recurrent(rng, "rnn", 6, 4, name="r", direction="bidirectional")
    m = Model([l1, act, l2], InputSpec.features(3))
    x = rng.normal(0, 1, (2, 6, 3)).astype(np.float32)
    y1 = np.maximum(oracle_recurrent(l1, w1, x)[0], 0)
    np.testing.assert_allclose(m.run(x), oracle_recurrent(l2, w2, y1)[0], **TOL)
