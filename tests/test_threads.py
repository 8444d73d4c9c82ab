"""Threads: one Model serves many threads (each with its own streams) and gives exactly the
single-threaded answers; the kernels release the GIL; one Stream used from two threads at
once is refused with ConcurrentUseError, and the call that owns it is not disturbed.

The speed-up from the GIL release is measured by benchmarks/threads_bench.py (timing does
not belong in a test on a shared 2-core CI machine); here the release itself is checked:
while one thread is inside a long kernel call, another thread keeps running Python.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import tinyrnn
from builders import random_recurrent
from tinyrnn import InputSpec, Model
from tinyrnn.layers import Dense, Embedding, Softmax

V, E, H = 11, 4, 8


def _text_model(seed: int) -> Model:
    rng = np.random.default_rng(seed)
    emb = Embedding("emb", None, {"table": rng.normal(0, 1, (V, E)).astype(np.float32)}, V, E)
    lstm, _ = random_recurrent(rng, "lstm", E, H, name="lstm", peepholes=True)
    gru, _ = random_recurrent(rng, "gru", H, H, name="gru", linear_before_reset=True)
    head = Dense("head", None, {"W": rng.normal(0, 1, (H, V)).astype(np.float32),
                                "b": np.zeros(V, np.float32)}, H, V)
    return Model([emb, lstm, gru, head, Softmax("probs", None, log=True)], InputSpec.token_ids(V))


def _in_threads(n, fn):
    """Run ``fn(i)`` in n threads released together; re-raise the first failure."""
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def work(i):
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("scheme", [None, "int8"])
def test_one_model_many_threads_same_answers(rng, scheme):
    """A model used for the first time from 4 threads at once (its kernel arrays and plans
    are built concurrently), each thread mixing run, process and step on its own streams."""
    m = _text_model(5)
    m = m.quantize(scheme) if scheme else m
    ids = rng.integers(0, V, (4, 3, 60))  # per thread: 3 sequences of 60 tokens

    def job(i):
        x = ids[i]
        offline = m.run(x)
        batched = m.stream(batch=3).process(x)
        s = m.stream()
        stepped = np.stack([s.step(int(t)) for t in x[0]])
        return offline, batched, stepped

    threaded = _in_threads(4, job)
    fresh = _text_model(5)  # recomputed single-threaded, on a model no thread touched
    fresh = fresh.quantize(scheme) if scheme else fresh
    for i, (offline, batched, stepped) in enumerate(threaded):
        want = fresh.run(ids[i])
        np.testing.assert_array_equal(offline, want)
        np.testing.assert_array_equal(batched, want)
        np.testing.assert_array_equal(stepped, want[0])


def test_kernels_release_the_gil(rng):
    """While a thread spends a long time in one compiled call, this thread keeps running:
    the longest pause between its ticks is a small part of that call's duration (with the
    GIL held it would be the whole call)."""
    layer, _ = random_recurrent(rng, "lstm", 3, 16)
    m = Model([layer], InputSpec.features(3))
    x = rng.normal(0, 1, (1, 20_000, 3)).astype(np.float32)
    m.run(x[:, :10])  # compile outside the measurement
    t0 = time.perf_counter()
    m.run(x)
    one = time.perf_counter() - t0
    reps = max(1, int(0.8 / max(one, 1e-4)))
    big = np.repeat(x, reps, axis=1)  # about 0.8 s in one kernel call (run does not chunk T)
    done = threading.Event()

    def work():
        m.run(big)
        done.set()

    t = threading.Thread(target=work)
    ticks = []
    t0 = time.perf_counter()
    t.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
    t.join()
    total = time.perf_counter() - t0
    gaps = np.diff([t0, *ticks, time.perf_counter()])
    assert total > 0.2 and len(ticks) > 100, (total, len(ticks))
    assert gaps.max() < 0.5 * total, f"a {gaps.max():.3f} s pause during a {total:.3f} s kernel call"


def test_concurrent_use_of_one_stream_is_refused_and_harmless(rng):
    layer, _ = random_recurrent(rng, "gru", 3, 16)
    m = Model([layer], InputSpec.features(3))
    x = rng.normal(0, 1, (30_000, 3)).astype(np.float32)
    want = m.stream().process(x)
    s = m.stream()
    s.process(x[:10])
    s.reset()
    out, refused, other = {}, [], []
    zero = m.stream().state

    def owner():
        out["y"] = s.process(x)

    t = threading.Thread(target=owner)
    t.start()
    while t.is_alive():
        if s._free:
            continue  # not inside yet (or already done)
        for call in (lambda: s.step(x[0]), lambda: s.process(x[:3]), lambda: s.reset(),
                     lambda: s.state, lambda: setattr(s, "state", zero)):
            try:
                call()
                other.append("ran")  # the owner had just finished: allowed
            except tinyrnn.ConcurrentUseError as e:
                refused.append(str(e))
    t.join()
    np.testing.assert_array_equal(out["y"], want)  # the owner's call was not disturbed
    assert refused, "no call overlapped the owner's process(); make x longer"
    assert all("another thread" in msg for msg in refused)
    assert isinstance(tinyrnn.ConcurrentUseError("x"), tinyrnn.TinyRNNError)
