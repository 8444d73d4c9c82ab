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


# --- run keeps its plans for short inputs (Model._take_plan) -------------------------------


def _lstm_model(rng, direction="forward"):
    layer, _ = random_recurrent(rng, "lstm", 3, 8, direction=direction)
    return single_layer_model(layer)


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_run_with_a_kept_plan_answers_like_a_new_model(rng, direction):
    """State, lengths and outputs of one call never reach the next, in any order of calls."""
    m = _lstm_model(rng, direction)
    fresh = lambda: tinyrnn.loads(tinyrnn.format.dumps(m))  # noqa: E731
    x = rng.normal(0, 1, (2, 5, 3)).astype(np.float32)
    state = {k: rng.normal(0, 1, v.shape).astype(np.float32) for k, v in m.run(x, return_state=True)[1].items()}
    lens = np.array([5, 2])
    calls = [dict(), dict(state=state), dict(lengths=lens), dict(), dict(state=state, lengths=lens), dict()]
    kept_results = [m.run(x, return_state=True, **kw) for kw in calls]
    assert len(m._run_plans[next(iter(m._run_plans))]) == 1  # one plan served every call
    for kw, (y, st) in zip(calls, kept_results):
        y0, st0 = fresh().run(x, return_state=True, **kw)
        np.testing.assert_array_equal(y, y0)
        for k in st0:
            np.testing.assert_array_equal(st[k], st0[k])
    first = kept_results[0][0].copy()
    m.run(-x)
    np.testing.assert_array_equal(kept_results[0][0], first)  # results are the caller's own arrays
    assert not np.shares_memory(kept_results[0][0], kept_results[3][0])


def test_run_keeps_plans_for_short_inputs_only_and_boundedly(rng):
    from tinyrnn import model as model_module

    m = _lstm_model(rng)
    for T in range(1, model_module.RUN_PLAN_SIZES + 4):
        m.run(rng.normal(0, 1, (1, T, 3)).astype(np.float32))
    assert len(m._run_plans) == model_module.RUN_PLAN_SIZES
    T_long = model_module.RUN_PLAN_VALUES // (3 + 8) + 1  # the model's input and output values per step
    m.run(np.zeros((1, T_long, 3), np.float32))
    assert all(key[2] != T_long for key in m._run_plans)
    m.run(np.zeros((1, T_long - 1, 3), np.float32))
    assert any(key[2] == T_long - 1 for key in m._run_plans)
    assert m.run(np.zeros((1, 0, 3), np.float32)).shape == (1, 0, 8)


def test_a_refused_run_leaves_the_kept_plan_usable(rng):
    m = _lstm_model(rng)
    x = rng.normal(0, 1, (1, 4, 3)).astype(np.float32)
    y = m.run(x)
    with pytest.raises(tinyrnn.InputError, match="state keys"):
        m.run(x, state={"nope": np.zeros((1, 1, 8), np.float32)})
    bad = {k: np.full(v.shape, np.nan, np.float32) for k, v in m.stream().state.items()}
    with pytest.raises(tinyrnn.NonFiniteError):
        m.run(x, state=bad, check_finite=True)
    np.testing.assert_array_equal(m.run(x), y)


def test_threads_running_one_model_get_their_own_plans(rng):
    import threading

    m = _lstm_model(rng)
    xs = [rng.normal(0, 1, (1, 6, 3)).astype(np.float32) for _ in range(8)]
    expected = [tinyrnn.loads(tinyrnn.format.dumps(m)).run(x) for x in xs]
    errors, barrier = [], threading.Barrier(4)

    def work(k):
        try:
            barrier.wait()
            for i in range(200):
                j = (k + i) % len(xs)
                np.testing.assert_array_equal(m.run(xs[j]), expected[j])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert 1 <= len(m._run_plans[next(iter(m._run_plans))]) <= 4
