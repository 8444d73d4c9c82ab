"""tinyrnn.batching: many ragged sequences in length-bucketed batches, equal to a Model.run loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from builders import oracle_recurrent, random_recurrent, random_text_model
from tinyrnn import InputError, InputSpec, Model
from tinyrnn.batching import bits_per_character, buckets, encode_lines, run_many
from tinyrnn.layers import Dense

LENGTHS = [5, 1, 0, 9, 3, 3, 12, 2, 7, 1, 4]


def stacked_model(rng, cell, direction, F=3):
    a, _ = random_recurrent(rng, cell, F, 5, direction=direction, name="a")
    b, _ = random_recurrent(rng, cell, a.num_directions * 5, 4, name="b")
    head = Dense("head", None, {"W": rng.normal(0, 1, (4, 2)).astype(np.float32),
                                "b": rng.normal(0, 1, 2).astype(np.float32)}, 4, 2)
    return Model([a, b, head], InputSpec.features(F))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_equals_run_loop_exactly(rng, cell, direction):
    m = stacked_model(rng, cell, direction)
    seqs = [rng.normal(0, 1, (t, 3)).astype(np.float32) for t in LENGTHS]
    want = [m.run(s) for s in seqs]
    for batch_size in (1, 3, 64):
        got = run_many(m, seqs, batch_size=batch_size)
        assert len(got) == len(seqs)
        for g, w in zip(got, want):
            assert g.dtype == np.float32 and g.shape == w.shape
            np.testing.assert_array_equal(g, w)
    nonempty = [s for s in seqs if len(s)]
    for g, s in zip(run_many(m, nonempty, reduce="last", batch_size=4), nonempty):
        np.testing.assert_array_equal(g, m.run(s)[-1])
    for g, s in zip(run_many(m, nonempty, reduce="mean", batch_size=4), nonempty):
        np.testing.assert_array_equal(g, m.run(s).mean(axis=0, dtype=np.float32))


def test_matches_oracle(rng):
    """Independent of Model.run: each ragged sequence against the numpy oracle alone."""
    layer, w = random_recurrent(rng, "gru", 3, 5, direction="bidirectional", name="g", linear_before_reset=True)
    m = Model([layer], InputSpec.features(3))
    seqs = [rng.normal(0, 1, (t, 3)).astype(np.float32) for t in LENGTHS if t]
    for g, s in zip(run_many(m, seqs, batch_size=4), seqs):
        ref, _ = oracle_recurrent(layer, w, s[None].astype(np.float64))
        np.testing.assert_allclose(g, ref[0], rtol=1e-5, atol=1e-5)


def test_token_model_and_float64_input(rng):
    m = random_text_model(rng, "abcdefg\n")
    seqs = [rng.integers(0, 8, t) for t in LENGTHS]
    for g, s in zip(run_many(m, seqs, batch_size=4), seqs):
        np.testing.assert_array_equal(g, m.run(s))
    f = stacked_model(rng, "lstm", "forward")
    seqs = [rng.normal(0, 1, (t, 3)) for t in (4, 2)]  # float64 is converted as Model.run does
    for g, s in zip(run_many(f, seqs), seqs):
        np.testing.assert_array_equal(g, f.run(s))


def test_results_are_independent_copies(rng):
    m = stacked_model(rng, "rnn", "forward")
    out = run_many(m, [rng.normal(0, 1, (4, 3)), rng.normal(0, 1, (2, 3))])
    assert all(o.base is None or o.base.shape == o.shape for o in out)
    assert out[0].flags.writeable and not np.shares_memory(out[0], out[1])


def test_buckets_group_similar_lengths():
    lengths = [9, 1, 5, 1, 7, 3, 8, 2]
    groups = buckets(lengths, 3)
    assert [len(g) for g in groups] == [3, 3, 2]
    assert sorted(np.concatenate(groups).tolist()) == list(range(8))
    assert [[lengths[i] for i in g] for g in groups] == [[1, 1, 2], [3, 5, 7], [8, 9]]
    assert groups[0].tolist() == [1, 3, 7]  # ties keep their order


def test_callable_reduce_sees_outputs_and_inputs(rng):
    m = stacked_model(rng, "lstm", "forward")
    seqs = [rng.normal(0, 1, (t, 3)).astype(np.float32) for t in (3, 6)]
    got = run_many(m, seqs, reduce=lambda y, x: (y.shape, float(x.sum())))
    assert got == [((3, 2), float(seqs[0].sum())), ((6, 2), float(seqs[1].sum()))]


def test_bad_input_names_the_sequence(rng):
    m = stacked_model(rng, "gru", "forward")
    good = rng.normal(0, 1, (4, 3)).astype(np.float32)
    with pytest.raises(InputError, match=r"^sequence 1: expected input of shape \(T, 3\)"):
        run_many(m, [good, np.zeros((4, 2), np.float32)])
    with pytest.raises(InputError, match=r"sequence 0: expected one sequence \(T, 3\), found a batch of shape \(2, 4, 3\)"):
        run_many(m, [np.zeros((2, 4, 3), np.float32)])
    with pytest.raises(InputError, match=r"sequence 1: reduce='last' needs at least one step"):
        run_many(m, [good, np.zeros((0, 3), np.float32)], reduce="last")
    with pytest.raises(InputError, match="reduce must be None"):
        run_many(m, [good], reduce="max")
    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises(InputError, match="batch_size must be an integer >= 1"):
            run_many(m, [good], batch_size=bad)
    t = random_text_model(rng, "abc")
    with pytest.raises(InputError, match=r"sequence 2: token ids must lie in \[0, 3\), found \[0, 3\]"):
        run_many(t, [np.array([0, 1]), np.array([2]), np.array([0, 3])])
    assert run_many(m, []) == []


# --- bits per character ---------------------------------------------------------------------


def reference_bits(m, text, context):
    """Bits of each character of ``text`` after ``context``, straight from softmax's definition."""
    ids = m.encode(context + text)
    logits = m.run(ids).astype(np.float64)  # (T, V)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    k = len(m.encode(context)) if context else 1
    return -sum(math.log2(p[t - 1, ids[t]]) for t in range(k, len(ids)))


@pytest.mark.parametrize("softmax", [None, "log", "prob"])
def test_bits_per_character(rng, softmax):
    m = random_text_model(rng, "ab c\n", softmax=softmax)
    dense = Model(m.layers[:3], m.input, vocab=m.vocab) if softmax else m
    lines = ["ab c", "", "a", "cc ba\n", "abcabc ab\r\n"]
    got = bits_per_character(m, lines, batch_size=2)
    for (bits, chars), line in zip(got, lines):
        line = line.rstrip("\r\n")
        assert chars == len(line)
        assert bits == pytest.approx(reference_bits(dense, line, "\n"), rel=1e-5, abs=1e-9)
    assert got[1] == (0.0, 0)


def test_bits_without_newline_in_vocabulary(rng):
    m = random_text_model(rng, ["a", "b", "ab"])  # "ab" is one token of two characters
    lines = ["abab", "b", "aab"]
    got = bits_per_character(m, lines)
    assert [c for _, c in got] == [2, 0, 2]  # the first token is context, not predicted
    for (bits, _), line in zip(got, lines):
        assert bits == pytest.approx(reference_bits(m, line, ""), rel=1e-5, abs=1e-9)


def test_bits_errors(rng):
    m = random_text_model(rng, "abc\n")
    with pytest.raises(InputError, match=r"line 7 'abx': character 'x' at position 2"):
        bits_per_character(m, ["ab", "abx"], first=6)
    with pytest.raises(InputError, match=r"line 0: expected text \(str\), found int"):
        encode_lines(m, [3])
    with pytest.raises(InputError, match="scoring text needs a text model"):
        bits_per_character(stacked_model(rng, "rnn", "forward"), ["ab"])
