"""Bad inputs at run time (Model.run, Stream.step/process/reset/state): each one either gives
the answer a clean input would, or raises an InputError that says what was expected and
found, and a refused call leaves the stream exactly as it was.

Policy for NaN/inf (README "Safety"): by default they propagate as IEEE arithmetic says, into
that stream's output and state (only that stream's: batched streams never mix); with
``check_finite=True`` inputs and restored states holding them are refused with
NonFiniteError before anything runs.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinyrnn
from builders import oracle_recurrent, random_recurrent, single_layer_model
from tinyrnn import InputSpec, Model
from tinyrnn.layers import Embedding

I, H = 3, 4


@pytest.fixture(params=["rnn", "lstm", "gru"])
def cell_model(request, rng):
    layer, w = random_recurrent(rng, request.param, I, H)
    return single_layer_model(layer), layer, w


@pytest.fixture
def lstm(rng):
    layer, w = random_recurrent(rng, "lstm", I, H)
    return single_layer_model(layer)


@pytest.fixture
def token_model(rng):
    V = 7
    emb = Embedding("emb", None, {"table": rng.normal(0, 1, (V, I)).astype(np.float32)}, V, I)
    layer, _ = random_recurrent(rng, "gru", I, H)
    return Model([emb, layer], InputSpec.token_ids(V))


def _views(x):
    """The same values as ``x (B, T, F)`` in awkward memory layouts."""
    fortran = np.asfortranarray(x)
    strided = np.zeros((x.shape[0], 2 * x.shape[1], x.shape[2]), np.float32)[:, ::2]
    strided[...] = x
    reversed_ = np.ascontiguousarray(x[:, ::-1])[:, ::-1]  # negative strides
    readonly = x.copy()
    readonly.flags.writeable = False
    big_endian = x.astype(">f4")
    return {"fortran": fortran, "strided": strided, "negative strides": reversed_,
            "read-only": readonly, "big-endian": big_endian, "float64": x.astype(np.float64)}


def test_awkward_layouts_give_the_contiguous_answer(rng, cell_model):
    m, layer, w = cell_model
    x = rng.normal(0, 1, (2, 9, I)).astype(np.float32)
    want = m.run(x)
    y_oracle, _ = oracle_recurrent(layer, w, x)
    np.testing.assert_allclose(want, y_oracle, rtol=1e-5, atol=1e-5)
    for name, v in _views(x).items():
        assert not np.shares_memory(v, x)
        np.testing.assert_array_equal(m.run(v), want, err_msg=name)
        np.testing.assert_array_equal(m.stream(batch=2).process(v), want, err_msg=name)
        s = m.stream(batch=2)
        steps = np.stack([s.step(v[:, t]) for t in range(v.shape[1])], axis=1)
        np.testing.assert_array_equal(steps, want, err_msg=name)
    assert not (x == 0).all()  # inputs were read, never written


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 5, I + 1), np.float32), r"expected input of shape \(T, 3\) or \(B, T, 3\)"),
    (np.zeros((2, 5, I, 1), np.float32), "expected input of shape"),
    (np.zeros(I, np.float32), "expected input of shape"),
    (np.float32(1.0), "expected input of shape"),
    (np.zeros((2, 5, I), np.complex64), "real numbers"),
    (np.zeros((2, 5, I), bool), "real numbers"),
    (np.array([[[None] * I]]), "real numbers"),
    ("text", "real numbers"),
    ([[1.0, 2.0, 3.0], [1.0, 2.0]], "cannot be read as an array|real numbers"),
])
def test_run_and_process_refuse_wrong_rank_width_dtype(lstm, bad, match):
    with pytest.raises(tinyrnn.InputError, match=match):
        lstm.run(bad)
    s = lstm.stream(batch=2)
    with pytest.raises(tinyrnn.InputError):
        s.process(bad)


def test_a_refused_call_leaves_the_stream_unchanged(rng, lstm):
    x = rng.normal(0, 1, (6, I)).astype(np.float32)
    clean = lstm.stream()
    want = np.stack([clean.step(v) for v in x])
    s = lstm.stream(check_finite=True)
    got = []
    for t, v in enumerate(x):
        before = s.state
        for bad in (np.zeros(I + 1, np.float32), np.array([np.nan, 0, 0], np.float32), "x",
                    np.zeros((2, I + 1), np.float32), np.full((3, I), np.inf, np.float32)):
            with pytest.raises(tinyrnn.InputError):
                s.step(bad) if np.ndim(bad) < 2 else s.process(bad)
        for k, arr in s.state.items():
            np.testing.assert_array_equal(arr, before[k])
        got.append(s.step(v))
    np.testing.assert_array_equal(np.stack(got), want)


def test_out_buffer_must_be_writable_float32(rng, lstm):
    s = lstm.stream()
    x = rng.normal(0, 1, I).astype(np.float32)
    ro = np.zeros(H, np.float32)
    ro.flags.writeable = False
    with pytest.raises(tinyrnn.InputError, match="writable float32 array of shape \\(4,\\), found a read-only"):
        s.step(x, out=ro)
    with pytest.raises(tinyrnn.InputError, match="found float64"):
        s.step(x, out=np.zeros(H))
    with pytest.raises(tinyrnn.InputError, match="found list"):
        s.step(x, out=[0.0] * H)
    # refused before the step ran: the stream is still at its first step
    np.testing.assert_array_equal(s.step(x), lstm.stream().step(x))
    # a strided (non-contiguous) out is fine: values land where the view points
    buf = np.zeros(2 * H, np.float32)
    r = lstm.stream().step(x, out=buf[::2])
    np.testing.assert_array_equal(buf[::2], lstm.stream().step(x))
    assert not buf[1::2].any() and r.base is buf


@pytest.mark.parametrize("ids, match", [
    (np.array([0, 7, 1]), r"\[0, 7\), found \[0, 7\]"),
    (np.array([-1, 2]), r"found \[-1, 2\]"),
    (np.array([2**63 - 1]), r"found \[9223372036854775807"),
    (np.array([2**64 - 1], np.uint64), r"found \[18446744073709551615"),
    (np.array([True, False]), "must be integers"),
    (np.array([1.0, 2.0]), "must be integers"),
    (np.array([[[1]]]), r"shaped \(T,\) or \(B, T\)"),
    ([10**30], "must be integers"),
])
def test_token_ids_out_of_range_or_wrong_type(token_model, ids, match):
    with pytest.raises(tinyrnn.InputError, match=match):
        token_model.run(ids)
    with pytest.raises(tinyrnn.InputError):
        token_model.stream().process(ids)


def test_token_ids_of_every_integer_dtype(rng, token_model):
    ids = rng.integers(0, 7, (2, 5))
    want = token_model.run(ids)
    for dt in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.uint64, ">i8"):
        np.testing.assert_array_equal(token_model.run(ids.astype(dt)), want, err_msg=str(dt))
    s = token_model.stream(batch=2)
    np.testing.assert_array_equal(np.stack([s.step(ids[:, t].astype(np.uint8)) for t in range(5)], 1), want)
    single = token_model.stream()
    np.testing.assert_array_equal([single.step(np.int16(i)) for i in ids[0]], want[0])


def test_empty_sequences_and_batches(lstm, token_model):
    assert lstm.run(np.zeros((0, 5, I), np.float32)).shape == (0, 5, H)
    assert lstm.run(np.zeros((3, 0, I), np.float32)).shape == (3, 0, H)
    y, st = lstm.run(np.zeros((2, 0, I), np.float32), return_state=True)
    assert y.shape == (2, 0, H) and not any(v.any() for v in st.values())
    assert token_model.run(np.zeros((2, 0), np.int64)).shape == (2, 0, H)
    assert token_model.run(np.zeros(0, np.int64)).shape == (0, H)
    s = lstm.stream()
    before = s.state
    assert s.process(np.zeros((0, I), np.float32)).shape == (0, H)
    for k, v in s.state.items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(tinyrnn.InputError):
        s.step(np.zeros(0, np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_propagates_by_default_in_that_stream_only(rng, cell_model, bad):
    m, layer, w = cell_model
    x = rng.normal(0, 1, (3, 8, I)).astype(np.float32)
    clean = m.run(x)
    x[1, 3, 0] = bad
    y = m.run(x)
    # the other streams are untouched, bit for bit; stream 1 is exact before the bad step
    np.testing.assert_array_equal(y[[0, 2]], clean[[0, 2]])
    np.testing.assert_array_equal(y[1, :3], clean[1, :3])
    if np.isnan(bad):
        assert np.isnan(y[1, 3:]).all()  # NaN poisons that stream's state from then on
    s = m.stream(batch=3)
    np.testing.assert_array_equal(s.process(x), y)
    # reset(i) is the way back: stream 1 continues like a fresh one, the others go on
    s.reset(1)
    tail = rng.normal(0, 1, (3, 4, I)).astype(np.float32)
    after = s.process(tail)
    np.testing.assert_array_equal(after[1], m.run(tail[1]))
    assert np.isfinite(after[[0, 2]]).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_check_finite_refuses_before_running(rng, lstm, bad):
    x = rng.normal(0, 1, (2, 5, I)).astype(np.float32)
    x[1, 4, 2] = bad
    with pytest.raises(tinyrnn.NonFiniteError, match=r"first at index \(1, 4, 2\)"):
        lstm.run(x, check_finite=True)
    s = lstm.stream(batch=2, check_finite=True)
    with pytest.raises(tinyrnn.NonFiniteError):
        s.process(x)
    with pytest.raises(tinyrnn.NonFiniteError):
        s.step(x[:, 4])
    assert not any(v.any() for v in s.state.values())  # nothing ran
    # float64 values beyond float32's range become inf: refused too
    with pytest.raises(tinyrnn.NonFiniteError):
        with np.errstate(over="ignore"):
            lstm.run(np.full((2, I), 1e300), check_finite=True)
    bad_state = {k: np.full_like(v, bad) for k, v in s.state.items()}
    with pytest.raises(tinyrnn.NonFiniteError, match="state"):
        s.state = bad_state
    with pytest.raises(tinyrnn.NonFiniteError, match="state"):
        lstm.run(x[:, :2], state=bad_state, check_finite=True)
    assert not any(v.any() for v in s.state.values())


def test_reset_index_out_of_range_or_wrong_type(lstm):
    s = lstm.stream(batch=3)
    for bad in (3, -1, 10**20, True, 1.0, "0", object(), [0], np.int64(3)):
        with pytest.raises(tinyrnn.InputError, match=r"stream index must be an integer in \[0, 3\)"):
            s.reset(bad)
    s.reset(np.int32(2))
    s.reset(0)
    single = lstm.stream()
    single.reset(0)  # an unbatched stream is stream 0
    with pytest.raises(tinyrnn.InputError, match=r"\[0, 1\)"):
        single.reset(1)


def test_state_setter_refuses_junk_and_keeps_the_old_state(rng, lstm):
    s = lstm.stream(batch=2)
    s.process(rng.normal(0, 1, (2, 4, I)).astype(np.float32))
    before = s.state
    for bad in (None, [], {"rec.h": "x", "rec.c": "y"},
                {"rec.h": before["rec.h"], "rec.c": np.zeros((2, 1, H), complex)},
                {"rec.h": before["rec.h"], "rec.c": np.zeros((2, 1, H + 1), np.float32)}):
        with pytest.raises(tinyrnn.InputError):
            s.state = bad
        for k, v in s.state.items():
            np.testing.assert_array_equal(v, before[k])
