"""tinyrnn.dask on a real distributed.LocalCluster (two worker processes, one thread each).

One cluster serves the whole module: starting worker processes (and loading the Numba
cache in them) is the slow part. Every result is compared exactly with a plain
``Model.run`` loop in this process.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("distributed")
pytest.importorskip("dask.bag")

import dask.bag as db  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

import tinyrnn  # noqa: E402
import tinyrnn.dask as tdask  # noqa: E402
from builders import random_recurrent, random_text_model  # noqa: E402
from tinyrnn import ClusterError, InputError, InputSpec, Model  # noqa: E402
from tinyrnn.batching import bits_per_character  # noqa: E402
from tinyrnn.cli import main  # noqa: E402
from tinyrnn.format import dumps  # noqa: E402
from tinyrnn.layers import Dense  # noqa: E402

LENGTHS = [7, 1, 12, 0, 3, 25, 4, 4, 9, 2, 16, 5, 1, 8, 30, 6]


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      env={"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}) as cluster, Client(cluster) as c:
        yield c


def float_model(seed=0, direction="bidirectional"):
    rng = np.random.default_rng(seed)
    a, _ = random_recurrent(rng, "lstm", 3, 6, direction=direction, name="a")
    b, _ = random_recurrent(rng, "gru", a.num_directions * 6, 5, name="b", linear_before_reset=True)
    head = Dense("head", None, {"W": rng.normal(0, 1, (5, 2)).astype(np.float32),
                                "b": rng.normal(0, 1, 2).astype(np.float32)}, 5, 2)
    return Model([a, b, head], InputSpec.features(3))


def float_seqs(seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1, (t, 3)).astype(np.float32) for t in LENGTHS]


def assert_all_equal(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert np.asarray(g).shape == np.asarray(w).shape
        np.testing.assert_array_equal(g, w)


# --- pickling -------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", [None, "int8", "fp16"])
def test_pickle_carries_trnn_bytes_and_answers_the_same(scheme):
    m = float_model()
    if scheme:
        m = m.quantize(scheme)
    blob = pickle.dumps(m)
    trnn = dumps(m)
    assert trnn in blob and len(blob) < len(trnn) + 200  # the file's bytes, not Python objects
    m2 = pickle.loads(blob)
    assert dumps(m2) == trnn and m2.dtype == m.dtype
    for s in float_seqs():
        np.testing.assert_array_equal(m2.run(s), m.run(s))


def test_model_ref_ships_bytes_once_and_builds_once():
    m = random_text_model(np.random.default_rng(3), "xyz\n")
    ref = tdask.ModelRef(m)
    blob = pickle.dumps(ref)
    assert ref.data in blob
    before = tdask.worker_stats()
    a, b = pickle.loads(blob), pickle.loads(blob)
    assert a.model is b.model  # one model per process per digest
    after = tdask.worker_stats()
    assert after["models_received"] - before["models_received"] == 2
    assert after["models_built"] - before["models_built"] == 1
    from dask.base import tokenize

    assert tokenize(ref) == tokenize(tdask.ModelRef(m)) != tokenize(tdask.ModelRef(float_model()))


def test_damaged_model_bytes_are_refused():
    ref = tdask.ModelRef(float_model(seed=9))
    data = bytearray(ref.data)
    data[-1] ^= 1
    with pytest.raises(InputError, match="do not match their sha256"):
        pickle.loads(pickle.dumps(tdask.ModelRef(data=bytes(data), digest=ref.digest))).model


# --- bags -----------------------------------------------------------------------------------


@pytest.mark.parametrize("reduce", [None, "last", "mean"])
def test_float_model_on_cluster_equals_run_loop(client, reduce):
    m, seqs = float_model(), float_seqs()
    if reduce:
        seqs = [s for s in seqs if len(s)]
    want = [m.run(s) for s in seqs]
    if reduce == "last":
        want = [w[-1] for w in want]
    elif reduce == "mean":
        want = [w.mean(axis=0, dtype=np.float32) for w in want]
    got = tdask.run(m, db.from_sequence(seqs, npartitions=5), reduce=reduce, batch_size=3).compute()
    assert_all_equal(got, want)


def test_token_model_on_cluster_equals_run_loop(client):
    rng = np.random.default_rng(5)
    m = random_text_model(rng, "abcdefgh\n", cell="gru")
    seqs = [rng.integers(0, 9, t) for t in LENGTHS]
    got = tdask.run(m, db.from_sequence(seqs, npartitions=4), batch_size=4).compute()
    assert_all_equal(got, [m.run(s) for s in seqs])


def test_model_sent_once_per_worker_and_kernels_warm_after_first_task(client):
    m = float_model(seed=11, direction="forward")  # a model no worker has seen yet
    seqs = float_seqs(seed=12) * 3
    bag = db.from_sequence(seqs, npartitions=12)
    before = client.run(tdask.worker_stats)
    got = tdask.run(m, bag, batch_size=4).compute()
    mid = client.run(tdask.worker_stats)
    got2 = tdask.run(m, bag, batch_size=5).compute()
    after = client.run(tdask.worker_stats)
    assert_all_equal(got, [m.run(s) for s in seqs])
    assert len(got2) == len(seqs)
    tasks = 0
    for w in before:
        d1 = {k: mid[w][k] - before[w][k] for k in before[w]}
        d2 = {k: after[w][k] - mid[w][k] for k in before[w]}
        tasks += d1["tasks"] + d2["tasks"]
        assert d1["models_received"] <= 1 and d2["models_received"] <= 1, (d1, d2)  # once per job
        assert d1["models_built"] <= 1 and d2["models_built"] == 0  # built once, kept for the next job
        assert d1["tasks_that_compiled"] <= 1 and d2["tasks_that_compiled"] == 0  # warm after its first task
    assert tasks == 24


@pytest.mark.parametrize("reduce", ["last", "mean"])
def test_run_array_stacks_each_partition_in_order(client, reduce):
    m = float_model(seed=13)
    seqs = [s for s in float_seqs(seed=14) if len(s)]
    bag = db.from_sequence(seqs, npartitions=4).filter(lambda s: len(s) > 3)  # some partitions lose rows
    kept = [s for s in seqs if len(s) > 3]
    want = np.stack([m.run(s)[-1] if reduce == "last" else m.run(s).mean(0, dtype=np.float32) for s in kept])
    arr = tdask.run_array(m, bag, reduce=reduce, batch_size=2)
    assert arr.shape[1:] == (2,) and arr.dtype == np.float32 and arr.numblocks == (bag.npartitions, 1)
    got = client.compute(arr).result()
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    # one task per partition beside the Bag's own and the model's: no per-partition aliases
    assert len(dict(arr.__dask_graph__())) == len(dict(bag.__dask_graph__())) + bag.npartitions + 1


def test_run_array_of_empty_partitions_and_token_model(client):
    rng = np.random.default_rng(15)
    m = random_text_model(rng, "abc\n", cell="gru")
    seqs = [rng.integers(0, 4, t) for t in (3, 5, 1, 2)]
    bag = db.from_sequence(seqs, npartitions=2).filter(lambda s: len(s) > 2)  # the second partition empties
    got = client.compute(tdask.run_array(m, bag, reduce="mean")).result()
    np.testing.assert_array_equal(got, np.stack([m.run(s).mean(0, dtype=np.float32) for s in seqs[:2]]))
    empty = client.compute(tdask.run_array(m, db.from_sequence(seqs, npartitions=2).filter(lambda s: False))).result()
    assert empty.shape == (0, 4) and empty.dtype == np.float32


def test_run_array_refuses_ragged_outputs():
    bag = db.from_sequence([np.zeros((2, 3), np.float32)])
    for bad in (None, len):
        with pytest.raises(InputError, match="reduce must be 'last' or 'mean'"):
            tdask.run_array(float_model(), bag, reduce=bad)
    with pytest.raises(InputError, match="expected a dask.bag.Bag"):
        tdask.run_array(float_model(), [np.zeros((2, 3), np.float32)])


def _slow(seq):
    time.sleep(0.05)
    return seq


def test_killed_worker_is_retried_without_wrong_or_lost_results(client):
    m, seqs = float_model(), [s for s in float_seqs(seed=21) if len(s)] * 4
    job = tdask.run(m, db.from_sequence(seqs, npartitions=16).map(_slow), reduce="last", batch_size=4)
    fut = client.compute(job)
    victim = sorted(client.scheduler_info()["workers"])[0]
    deadline = time.time() + 60
    while not client.run(tdask.worker_stats, workers=[victim])[victim]["tasks"] and time.time() < deadline:
        time.sleep(0.05)
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)  # the worker process dies mid-job; its nanny starts a new one
    got = fut.result(timeout=240)
    assert_all_equal(got, [m.run(s)[-1] for s in seqs])
    assert victim not in client.scheduler_info()["workers"]
    client.wait_for_workers(2, timeout=120)


def test_score_bag_equals_local(client):
    rng = np.random.default_rng(8)
    m = random_text_model(rng, "the cat\n")
    lines = ["the cat", "", "act", "tea the", "c"] * 3
    want = [b / c if c else np.nan for b, c in bits_per_character(m, lines)]
    got = tdask.score(m, db.from_sequence(lines, npartitions=3)).compute()
    np.testing.assert_array_equal(np.array(got), np.array(want))


def test_errors_cross_the_cluster_as_tinyrnn_errors(client):
    m = float_model()
    bag = db.from_sequence([np.zeros((3, 3), np.float32), np.zeros((2, 4), np.float32)], npartitions=1)
    with pytest.raises(InputError, match=r"sequence 1: expected input of shape \(T, 3\)"):
        tdask.run(m, bag).compute()
    with pytest.raises(InputError, match="expected a dask.bag.Bag"):
        tdask.run(m, [np.zeros((3, 3))])
    with pytest.raises(InputError, match="expected a tinyrnn.Model"):
        tdask.run("m.trnn", bag)
    with pytest.raises(InputError, match="reduce must be"):
        tdask.run(m, bag, reduce="sum")
    with pytest.raises(InputError, match="scoring text needs a text model"):
        tdask.score(m, db.from_sequence(["ab"]))


def _worker_setup():
    import dask

    return {k: os.environ.get(k) for k in tdask.WORKER_ENV}, {k: dask.config.get(k) for k in tdask.LOCAL_CLUSTER_CONFIG}


def test_local_cluster_workers_run_one_thread_each_with_quiet_monitors(monkeypatch):
    import dask

    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # what a worker would otherwise inherit
    with tdask.connect(workers=1) as c:
        ((env, config),) = c.run(_worker_setup).values()
        (nthreads,) = c.nthreads().values()
        tick = c.cluster.scheduler._tick_interval  # seconds; read by the scheduler when it started
    assert env == tdask.WORKER_ENV and nthreads == 1
    assert config == tdask.LOCAL_CLUSTER_CONFIG  # the workers got the slower monitors
    assert tick == 1.0
    assert dask.config.get("distributed.worker.profile.enabled") is True  # this process's config is untouched


def test_unreachable_scheduler_names_the_address():
    with pytest.raises(ClusterError, match=r"cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'"):
        with tdask.connect(scheduler="tcp://127.0.0.1:9", timeout=1):
            pass


# --- dataframes and Parquet ---------------------------------------------------------------


def test_dataframe_text_and_arrays_through_parquet(client, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    import dask.dataframe as dd

    rng = np.random.default_rng(4)
    text_model = random_text_model(rng, "abc d\n")
    texts = ["abc", "d", "cab dab", "aa", "b c", "dddd"]
    fm, seqs = float_model(seed=2), [s for s in float_seqs(seed=3)[:6] if len(s)]
    pdf = pd.DataFrame({"id": range(len(texts)), "text": texts})
    dd.from_pandas(pdf, npartitions=2).to_parquet(tmp_path / "in")

    df = dd.read_parquet(tmp_path / "in")
    out = tdask.run_frame(text_model, df, "text", output="mean", reduce="mean")
    out = tdask.score_frame(text_model, out, "text", output="bpc")
    out.to_parquet(tmp_path / "out", schema=None)
    back = dd.read_parquet(tmp_path / "out").compute().sort_values("id")
    assert list(back["text"]) == texts
    for cell, t in zip(back["mean"], texts):
        np.testing.assert_array_equal(np.asarray(cell, np.float32), text_model.run(text_model.encode(t)).mean(0, dtype=np.float32))
    want = [b / c if c else np.nan for b, c in bits_per_character(text_model, texts)]
    np.testing.assert_array_equal(back["bpc"].to_numpy(), np.array(want))

    # float sequences as Parquet list<list<float>> in, every step's outputs out and back
    pdf = pd.DataFrame({"id": range(len(seqs)), "x": [list(s) for s in seqs]})
    (tmp_path / "fin").mkdir()  # written by pandas: Dask's from_pandas would turn the lists into strings
    pdf.iloc[:3].to_parquet(tmp_path / "fin" / "part.0.parquet")
    pdf.iloc[3:].to_parquet(tmp_path / "fin" / "part.1.parquet")
    out = tdask.run_frame(fm, dd.read_parquet(tmp_path / "fin"), "x", output="y")
    out.to_parquet(tmp_path / "fout", schema=None)
    back = dd.read_parquet(tmp_path / "fout").compute().sort_values("id")
    for cell, s in zip(back["y"], seqs):
        np.testing.assert_array_equal(np.stack(cell).astype(np.float32), fm.run(s))

    with pytest.raises(InputError, match="has no column 'nope'"):
        tdask.run_frame(fm, df, "nope")


# --- command line ---------------------------------------------------------------------------


def test_cli_run_many_files_on_scheduler(client, tmp_path, capsys):
    m, seqs = float_model(), float_seqs(seed=6)
    m.save(tmp_path / "m.trnn")
    (tmp_path / "data").mkdir()
    for i, s in enumerate(seqs):
        np.save(tmp_path / "data" / f"s{i:02d}.npy", s)
    batch = np.stack(seqs[5:8] and [s[:4] for s in seqs if len(s) >= 4][:3])
    np.save(tmp_path / "data" / "batch.npy", batch)
    addr = client.scheduler.address
    assert main(["run", str(tmp_path / "m.trnn"), "--input", str(tmp_path / "data" / "*.npy"),
                 "--output", str(tmp_path / "out") + "/", "--scheduler", addr, "--batch-size", "3"]) == 0
    for i, s in enumerate(seqs):
        np.testing.assert_array_equal(np.load(tmp_path / "out" / f"s{i:02d}.npy"), m.run(s))
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "batch.npy"), m.run(batch))
    assert f"{len(seqs) + 1} files ->" in capsys.readouterr().err

    assert main(["run", str(tmp_path / "m.trnn"), "-i", str(tmp_path / "data"), "-o", str(tmp_path / "last"),
                 "--scheduler", addr, "--reduce", "last"]) == 1  # an empty sequence has no last step
    assert "needs at least one step" in capsys.readouterr().err
    os.remove(tmp_path / "data" / "s03.npy")  # the empty one
    assert main(["run", str(tmp_path / "m.trnn"), "-i", str(tmp_path / "data"), "-o", str(tmp_path / "last"),
                 "--scheduler", addr, "--reduce", "last"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "last" / "s05.npy"), m.run(seqs[5])[-1])
    np.testing.assert_array_equal(np.load(tmp_path / "last" / "batch.npy"), m.run(batch)[:, -1])


def test_cli_score_local_cluster_with_progress(tmp_path, capsys):
    rng = np.random.default_rng(7)
    m = random_text_model(rng, "abc \n")
    m.save(tmp_path / "t.trnn")
    lines = ["abc", "", "a b c", "cc", "b"]
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["score", str(tmp_path / "t.trnn"), str(tmp_path / "corpus.txt"), "--workers", "1",
                 "--progress"]) == 0
    captured = capsys.readouterr()
    got = [float(v) for v in captured.out.split()]
    pairs = bits_per_character(m, lines)
    np.testing.assert_allclose(got, [b / c if c else np.nan for b, c in pairs], rtol=1e-6)
    total = sum(b for b, _ in pairs) / sum(c for _, c in pairs)
    assert f"5 lines, 11 characters scored: {total:.4f} bits per character" in captured.err
    assert "100%" in captured.err  # Dask's progress bar, drawn on stderr


def test_cli_unreachable_scheduler(tmp_path, capsys):
    float_model().save(tmp_path / "m.trnn")
    np.save(tmp_path / "a.npy", np.zeros((2, 3), np.float32))
    assert main(["run", str(tmp_path / "m.trnn"), "-i", str(tmp_path / "*.npy"), "-o", str(tmp_path / "o"),
                 "--scheduler", "tcp://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinyrnn run: error: cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'")


# --- without Dask ---------------------------------------------------------------------------


def test_tinyrnn_dask_without_dask_installed(tmp_path):
    """``import tinyrnn`` and ``import tinyrnn.dask`` need no Dask; using it says what to install."""
    script = textwrap.dedent("""
        import sys, importlib.abc

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("dask", "distributed", "pandas", "pyarrow", "torch", "onnx"):
                    raise ImportError(f"blocked: {name}")

        sys.meta_path.insert(0, Block())
        import numpy as np
        import tinyrnn, tinyrnn.dask, tinyrnn.batching
        from tinyrnn import InputSpec, Model
        from tinyrnn.layers import Recurrent
        rng = np.random.default_rng(0)
        m = Model([Recurrent.from_onnx("rnn", "r", rng.normal(size=(1, 4, 2)), rng.normal(size=(1, 4, 4)))],
                  InputSpec.features(2))
        seqs = [rng.normal(size=(t, 2)).astype(np.float32) for t in (3, 1, 5)]
        assert all(np.array_equal(a, m.run(s)) for a, s in zip(tinyrnn.batching.run_many(m, seqs), seqs))
        try:
            tinyrnn.dask.run(m, seqs)
        except tinyrnn.MissingDependencyError as e:
            assert "pip install 'tinyrnn[dask]'" in str(e), e
            assert isinstance(e, ImportError)
        else:
            raise AssertionError("no MissingDependencyError")
        leaked = [n for n in sys.modules if n.split(".")[0] in ("dask", "distributed", "pandas")]
        assert not leaked, leaked
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
