"""Stream semantics: state, reset, snapshots, shapes and errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import tinyrnn
from builders import random_recurrent, single_layer_model
from tinyrnn import InputSpec, Model
from tinyrnn.layers import Dense, Embedding


@pytest.fixture
def lstm_model(rng):
    layer, _ = random_recurrent(rng, "lstm", 3, 4, peepholes=True)
    return single_layer_model(layer)


def test_reset_one_stream_touches_only_that_stream(rng, lstm_model):
    x = rng.normal(0, 1, (3, 5, 3)).astype(np.float32)
    s = lstm_model.stream(batch=3)
    s.process(x)
    before = s.state
    s.reset(1)
    after = s.state
    for k in before:
        assert not after[k][1].any()
        np.testing.assert_array_equal(after[k][[0, 2]], before[k][[0, 2]])
    # stream 1 now continues exactly like a fresh stream would
    y = s.process(x)
    fresh = lstm_model.stream(batch=3).process(x)
    np.testing.assert_array_equal(y[1], fresh[1])


def test_reset_all(rng, lstm_model):
    s = lstm_model.stream()
    x = rng.normal(0, 1, (6, 3)).astype(np.float32)
    first = s.process(x)
    s.reset()
    np.testing.assert_array_equal(s.process(x), first)


def test_snapshot_restore_is_bit_exact(rng, lstm_model):
    x = rng.normal(0, 1, (2, 40, 3)).astype(np.float32)
    s = lstm_model.stream(batch=2)
    s.process(x[:, :17])
    snap = s.state
    rest = s.process(x[:, 17:])
    s.process(x[:, :5])  # wander off
    s.state = snap
    np.testing.assert_array_equal(s.process(x[:, 17:]), rest)
    # the snapshot is a copy: later steps did not change it
    assert snap is not s.state
    s2 = lstm_model.stream(batch=2)
    s2.state = snap
    np.testing.assert_array_equal(s2.process(x[:, 17:]), rest)


def test_state_setter_rejects_bad_snapshots(lstm_model):
    s = lstm_model.stream(batch=2)
    with pytest.raises(tinyrnn.InputError, match="missing"):
        s.state = {"rec.h": np.zeros((2, 1, 4))}
    with pytest.raises(tinyrnn.InputError, match=r"shape \(2, 1, 4\)"):
        s.state = {"rec.h": np.zeros((3, 1, 4)), "rec.c": np.zeros((2, 1, 4))}
    with pytest.raises(tinyrnn.InputError, match="unknown"):
        s.state = {**s.state, "other.h": np.zeros(1)}


def test_process_in_several_blocks_equals_one(rng, lstm_model, monkeypatch):
    import tinyrnn.stream as stream_mod

    x = rng.normal(0, 1, (50, 3)).astype(np.float32)
    whole = lstm_model.stream().process(x)
    monkeypatch.setattr(stream_mod, "MAX_BLOCK", 7)
    np.testing.assert_array_equal(lstm_model.stream().process(x), whole)
    s = lstm_model.stream()
    parts = np.concatenate([s.process(x[:13]), s.process(x[13:14]), s.process(x[14:])])
    np.testing.assert_array_equal(parts, whole)


@pytest.mark.parametrize("B", [1, 2])
def test_process_writes_blocks_into_its_result(rng, lstm_model, monkeypatch, B):
    """A plan of one call writes each block of ``process`` into the returned array itself
    (``Plan.run_into``; B = 1: every block is contiguous there), others copy it: the same
    values either way, and a result is never overwritten by a later call."""
    import tinyrnn.stream as stream_mod

    x = rng.normal(0, 1, (B, 50, 3)).astype(np.float32)
    rec, _ = random_recurrent(rng, "gru", 4, 5, name="g")
    two = Model([*lstm_model.layers, rec], InputSpec.features(3))
    for model in (lstm_model, two):
        s = model.stream(batch=B)
        ref = np.stack([s.step(x[:, t]) for t in range(x.shape[1])], axis=1)
        monkeypatch.setattr(stream_mod, "MAX_BLOCK", 7)
        s = model.stream(batch=B)
        first = s.process(x)
        kept = first.copy()
        second = s.process(x[:, ::-1])
        np.testing.assert_array_equal(first, ref)
        np.testing.assert_array_equal(first, kept)
        assert not np.shares_memory(first, second)
        plan = s._plans[7]
        assert (plan.out_slot is not None) == (model is lstm_model)
        assert not np.shares_memory(first, plan.output)
        monkeypatch.undo()


def test_step_accepts_lists_and_other_dtypes(lstm_model):
    a = lstm_model.stream().step([0.1, 0.2, 0.3])
    b = lstm_model.stream().step(np.array([0.1, 0.2, 0.3], np.float64))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == (4,)


def test_step_out_buffer(rng, lstm_model):
    out = np.empty(4, np.float32)
    x = rng.normal(0, 1, 3).astype(np.float32)
    r = lstm_model.stream().step(x, out=out)
    assert r is out
    np.testing.assert_array_equal(out, lstm_model.stream().step(x))
    with pytest.raises(tinyrnn.InputError, match="out must be"):
        lstm_model.stream().step(x, out=np.empty(5, np.float32))


@pytest.mark.parametrize("bad, match", [
    (np.zeros(4, np.float32), r"expected input of shape \(3,\) or \(B, 3\)"),
    (np.zeros((2, 3), np.float32), "unbatched stream"),
    (np.array(["a", "b", "c"]), "real numbers"),
    (np.zeros((1, 1, 3), np.float32), "expected input of shape"),
])
def test_step_rejects_bad_input(lstm_model, bad, match):
    with pytest.raises(tinyrnn.InputError, match=match):
        lstm_model.stream().step(bad)


def test_batched_stream_shape_errors(lstm_model):
    s = lstm_model.stream(batch=2)
    with pytest.raises(tinyrnn.InputError, match="2 batched streams"):
        s.step(np.zeros((3, 3), np.float32))
    with pytest.raises(tinyrnn.InputError, match=r"B = 2"):
        s.process(np.zeros((5, 3), np.float32))
    with pytest.raises(tinyrnn.InputError, match="stream index"):
        s.reset(2)
    with pytest.raises(tinyrnn.InputError, match="stream index"):
        s.reset(-1)
    with pytest.raises(tinyrnn.InputError, match="batch must be"):
        lstm_model.stream(batch=0)


def test_check_finite(lstm_model):
    x = np.array([0.0, np.nan, 1.0], np.float32)
    assert np.isnan(lstm_model.stream().step(x)).all()  # default: NaN propagates
    with pytest.raises(tinyrnn.NonFiniteError, match="NaN or infinity"):
        lstm_model.stream(check_finite=True).step(x)


def test_token_stream(rng):
    V = 7
    emb = Embedding("emb", None, {"table": rng.normal(0, 1, (V, 3)).astype(np.float32)}, V, 3)
    layer, _ = random_recurrent(rng, "gru", 3, 4)
    m = Model([emb, layer], InputSpec.token_ids(V))
    ids = rng.integers(0, V, 6)
    s = m.stream()
    y = np.stack([s.step(int(i)) for i in ids])
    np.testing.assert_array_equal(y, m.run(ids))
    with pytest.raises(tinyrnn.InputError, match=r"token ids must lie in \[0, 7\), found \[7, 7\]"):
        m.stream().step(7)
    with pytest.raises(tinyrnn.InputError, match="token ids must be integers"):
        m.stream().step(1.5)
    with pytest.raises(tinyrnn.InputError, match=r"\[-1, "):
        m.run(np.array([0, -1, 2]))


def test_bidirectional_model_cannot_stream(rng):
    layer, _ = random_recurrent(rng, "lstm", 3, 4, direction="bidirectional")
    with pytest.raises(tinyrnn.UnsupportedModelError, match="backwards in time"):
        single_layer_model(layer).stream()


def test_concurrent_use_of_one_stream_is_refused(lstm_model):
    s = lstm_model.stream()
    s._free.pop()  # as if another thread were inside step()
    try:
        with pytest.raises(tinyrnn.ConcurrentUseError):
            s.step(np.zeros(3, np.float32))
        with pytest.raises(tinyrnn.ConcurrentUseError):
            _ = s.state
    finally:
        s._free.append(True)


def test_threads_with_own_streams_match_single_thread(rng, lstm_model):
    xs = rng.normal(0, 1, (4, 300, 3)).astype(np.float32)
    expected = [lstm_model.stream().process(x) for x in xs]
    results = [None] * 4

    def work(i):
        s = lstm_model.stream()
        results[i] = np.stack([s.step(x) for x in xs[i]])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r, e in zip(results, expected):
        np.testing.assert_array_equal(r, e)


def test_run_rejects_bad_lengths_and_state(lstm_model):
    x = np.zeros((2, 5, 3), np.float32)
    with pytest.raises(tinyrnn.InputError, match=r"lengths must lie in \[0, 5\]"):
        lstm_model.run(x, lengths=[6, 1])
    with pytest.raises(tinyrnn.InputError, match="2 integers"):
        lstm_model.run(x, lengths=[1.0, 2.0])
    with pytest.raises(tinyrnn.InputError, match="state keys"):
        lstm_model.run(x, state={"x": 1})


def test_empty_sequence(lstm_model):
    assert lstm_model.run(np.zeros((0, 3), np.float32)).shape == (0, 4)
    assert lstm_model.stream(batch=2).process(np.zeros((2, 0, 3), np.float32)).shape == (2, 0, 4)


def test_dense_only_float_model_streams(rng):
    m = Model([Dense("fc", None, {"W": np.eye(3, dtype=np.float32), "b": np.ones(3, np.float32)}, 3, 3)],
              InputSpec.features(3))
    np.testing.assert_array_equal(m.stream().step(np.arange(3, dtype=np.float32)), [1, 2, 3])
