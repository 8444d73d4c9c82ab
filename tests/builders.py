"""Random layers and models for the tests, with their weights kept in ONNX layout so the
numpy oracle can check them."""

from __future__ import annotations

import numpy as np

import oracle
from tinyrnn import InputSpec, Model
from tinyrnn.layers import Dense, Embedding, Recurrent, Softmax

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def random_recurrent(rng, cell, I, H, direction="forward", name="rec", peepholes=False, proj=0, scale=0.6, **config):
    """A Recurrent layer with random weights, and those weights in ONNX layout."""
    D = 2 if direction == "bidirectional" else 1
    G = GATES[cell]
    Hr = proj or H
    w = {
        "W": rng.normal(0, scale, (D, G * H, I)).astype(np.float32),
        "R": rng.normal(0, scale, (D, G * H, Hr)).astype(np.float32),
        "B": rng.normal(0, scale, (D, 2 * G * H)).astype(np.float32),
        "P": rng.normal(0, scale, (D, 3 * H)).astype(np.float32) if peepholes else None,
        "proj": rng.normal(0, scale, (D, Hr, H)).astype(np.float32) if proj else None,
    }
    layer = Recurrent.from_onnx(cell, name, w["W"], w["R"], w["B"], P=w["P"], proj=w["proj"],
                                direction=direction, **config)
    return layer, w


def saturating_recurrent(rng, cell, I, H, **kw):
    """``random_recurrent`` (weights of scale 0.1) whose LSTM forget gate is driven to 1 and
    input gate to 0, or whose GRU update gate is driven to 1, by biases of +-40: far past
    the activations' clamp whatever the inputs, so the cell (LSTM) or hidden (GRU) state
    must be kept bit for bit. Direction "forward" only."""
    layer, w = random_recurrent(rng, cell, I, H, scale=0.1, **kw)
    B = w["B"].copy()
    if cell == "lstm":  # ONNX order i, o, f, c
        B[0, 0:H], B[0, 2 * H:3 * H] = -40, 40
    else:  # z, r, h
        B[0, 0:H] = 40
    config = {k: v for k, v in kw.items() if k not in ("peepholes", "proj", "name")}
    return Recurrent.from_onnx(cell, layer.name, w["W"], w["R"], B, P=w["P"], proj=w["proj"], **config)


def oracle_recurrent(layer, w, x, lengths=None, state=None):
    """The oracle's answer for ``layer`` on batch-first ``x (B, T, I)``.

    Returns ``y (B, T, D*Hr)`` and the final state as a flat dict like ``Stream.state``.
    """
    X = np.transpose(x, (1, 0, 2))
    cfg = dict(seq_lens=lengths, direction=layer.direction, activations=layer.activations, clip=layer.clip)
    h0 = None if state is None else np.transpose(state[f"{layer.name}.h"], (1, 0, 2))
    st = {}
    if layer.cell == "rnn":
        Y, Yh = oracle.rnn(X, w["W"], w["R"], w["B"], initial_h=h0, **cfg)
    elif layer.cell == "gru":
        Y, Yh = oracle.gru(X, w["W"], w["R"], w["B"], initial_h=h0,
                           linear_before_reset=layer.linear_before_reset, **cfg)
    else:
        c0 = None if state is None else np.transpose(state[f"{layer.name}.c"], (1, 0, 2))
        Y, Yh, Yc = oracle.lstm(X, w["W"], w["R"], w["B"], P=w["P"], initial_h=h0, initial_c=c0,
                                input_forget=layer.input_forget, proj=w["proj"], **cfg)
        st[f"{layer.name}.c"] = np.transpose(Yc, (1, 0, 2))
    st[f"{layer.name}.h"] = np.transpose(Yh, (1, 0, 2))
    T, D, B, Hr = Y.shape
    y = np.transpose(Y, (2, 0, 1, 3)).reshape(B, T, D * Hr)
    return y, st


def single_layer_model(layer):
    return Model([layer], InputSpec.features(layer.input_size))


def random_state(rng, layer, B, scale=0.5):
    D, Hr, H = layer.num_directions, layer.recurrent_size, layer.hidden_size
    st = {f"{layer.name}.h": rng.normal(0, scale, (B, D, Hr)).astype(np.float32)}
    if layer.cell == "lstm":
        st[f"{layer.name}.c"] = rng.normal(0, scale, (B, D, H)).astype(np.float32)
    return st


def random_text_model(rng, vocab, dim=4, hidden=6, cell="lstm", softmax=None):
    """A character model (Embedding, one recurrent layer, Dense logits) over ``vocab``;
    ``softmax="log"``/``"prob"`` appends a (log-)softmax layer."""
    from tinyrnn.layers import Dense, Embedding, Softmax

    V = len(vocab)
    emb = Embedding("emb", None, {"table": rng.normal(0, 1, (V, dim)).astype(np.float32)}, V, dim)
    rec, _ = random_recurrent(rng, cell, dim, hidden, name="rec")
    head = Dense("head", None, {"W": rng.normal(0, 1, (hidden, V)).astype(np.float32),
                                "b": rng.normal(0, 0.1, V).astype(np.float32)}, hidden, V)
    layers = [emb, rec, head] + ([Softmax("sm", None, log=softmax == "log")] if softmax else [])
    return Model(layers, InputSpec.token_ids(V), vocab=list(vocab))


def layered_text_model(rng, metadata=None):
    """A token model with one of most options: Embedding, LSTM (peepholes, projection),
    GRU (linear_before_reset, clip, custom activations), Dense and Softmax; vocabulary of 5."""
    V = 5
    emb = Embedding("emb", None, {"table": rng.normal(0, 1, (V, 3)).astype(np.float32)}, V, 3)
    lstm, _ = random_recurrent(rng, "lstm", 3, 4, name="lstm", peepholes=True, proj=2)
    gru, _ = random_recurrent(rng, "gru", 2, 3, name="gru", linear_before_reset=True, clip=3.0,
                              activations=[["hardsigmoid", 0.3, 0.4], ["softsign"]])
    head = Dense("head", None, {"W": rng.normal(0, 1, (3, V)).astype(np.float32),
                                "b": np.zeros(V, np.float32)}, 3, V)
    return Model([emb, lstm, gru, head, Softmax("probs", None)], InputSpec.token_ids(V),
                 vocab=["a", "b", "c", " ", "ab"], metadata=dict(metadata or {}))
