"""Sequences per second on a Dask LocalCluster: 1 vs 2 worker processes, tinyrnn vs torch,
with the CPU time of every process accounted for, beside the same work without Dask.

The job: N sensor-log windows of ragged lengths (uniform in [T_MIN, T_MAX] steps of F
features) through one LSTM (F -> H), keeping each window's last output (``reduce="last"``).
Both engines get the same weights (tinyrnn converted from the torch module), the same
partitions and the same length-sorted batches of ``--batch-size``; torch runs each batch
as a ``pack_padded_sequence`` through ``nn.LSTM`` (its fastest ragged path), one thread per
worker like tinyrnn. Two ways to get the answers back (``--output``):

- ``array``: ``tinyrnn.dask.run_array`` (torch: the same graph, one task per partition),
  each partition's answers stacked on its worker, the client receives one ``(N, H)`` array;
- ``bag``: ``tinyrnn.dask.run``, a Bag of one ``(H,)`` array per window (torch: the same
  ``map_partitions``), the client receives N small arrays.

**Inside the timed region** (one ``compute()``): building the graph on the client,
scheduling, shipping the model's bytes to each worker (a graph key, once per job),
generating the windows from seeds **on the workers** (the client sends only seed ranges),
scoring them, and bringing every answer back to the client. **Outside**: starting the
cluster, imports, building the model on each worker and loading the Numba cache (a
warm-up job per engine does these; the script checks that no timed task compiled a kernel).

The cluster is what ``tinyrnn run --workers N`` starts, ``tinyrnn.dask.connect(workers=N)``:
N worker processes of one thread, OpenMP/BLAS pools capped at one thread, Dask's monitors
slowed down (``tinyrnn.dask.LOCAL_CLUSTER_CONFIG``); ``--dask-defaults`` starts a plain
``LocalCluster`` with Dask's default monitors instead.

For each timed run it reads the CPU time of this process (the client, and in a
LocalCluster also the scheduler and the nannies) and of every thread of every worker
process (the busiest thread is the one running tasks; the rest is the worker's event loop,
serialisation and monitors). ``--control`` also runs the same windows without Dask, in 1
and then 2 plain processes started together: the most two processes can get out of this
machine. Each configuration runs ``--repeats`` times; the best time is reported.

    PYTHONPATH=.:converters python benchmarks/dask_bench.py --control
    python benchmarks/dask_bench.py --sequences 20000 --workers 1 2 4  # a bigger machine
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

THREAD_ENV = {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "OPENBLAS_NUM_THREADS": "1"}  # = tinyrnn.dask.WORKER_ENV


def make_windows(seeds, F: int, t_min: int, t_max: int) -> list:
    """The windows of one partition, from its seeds: ``(T, F)`` float32 each."""
    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        out.append(rng.normal(0, 1, (int(rng.integers(t_min, t_max + 1)), F)).astype(np.float32))
    return out


_TORCH_MODULES: dict = {}


def torch_module(spec):
    """The nn.LSTM of ``spec = (key, F, H, state_dict as numpy)``, built once per process
    (a used torch module does not pickle again, so workers are sent its weights)."""
    import torch

    key, F, H, state = spec
    if key not in _TORCH_MODULES:
        m = torch.nn.LSTM(F, H, batch_first=True)
        m.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        _TORCH_MODULES[key] = m.eval()
    return _TORCH_MODULES[key]


def torch_partition(seqs, spec, batch_size: int) -> list:
    """What ``tinyrnn.dask.run(..., reduce="last")`` does, with torch: length-sorted batches,
    packed so no padding is computed, last valid output of each window."""
    import torch

    torch.set_num_threads(1)
    module = torch_module(spec)
    seqs = list(seqs)
    order = np.argsort([len(s) for s in seqs], kind="stable")
    out = [None] * len(seqs)
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            lens = torch.tensor([len(seqs[j]) for j in idx])
            x = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(seqs[j]) for j in idx], batch_first=True)
            packed = torch.nn.utils.rnn.pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
            _, (h, _) = module(packed)  # h (1, b, H): each window's last valid step
            for row, j in enumerate(idx):
                out[j] = h[0, row].numpy().copy()
    return out


def torch_stacked(seqs, spec, batch_size: int) -> np.ndarray:
    """``torch_partition`` stacked to ``(n, H)``, as ``tinyrnn.dask.run_array`` does."""
    return np.stack(torch_partition(seqs, spec, batch_size))


def array_job(bag, fn, dep, H: int, *args):
    """A ``(N, H)`` dask array with one ``fn(partition, dep, *args)`` task per partition of
    ``bag``: the graph ``tinyrnn.dask.run_array`` builds, for torch."""
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    name = "torch-array-" + tokenize(bag, dep, args)
    layer = {(name, i, 0): (fn, (bag.name, i), dep.key, *args) for i in range(bag.npartitions)}
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[bag, dep])
    return da.Array(graph, name, chunks=((np.nan,) * bag.npartitions, (H,)), dtype=np.float32)


def _set_threads():
    os.environ.update(THREAD_ENV)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    return os.getpid()


# --- CPU accounting -----------------------------------------------------------------------


def _cpu(t) -> float:
    return t.user + t.system


class CPUMeter:
    """CPU seconds of this process and of each worker thread between two ``read()``s."""

    def __init__(self, pids):
        import psutil

        self.me = psutil.Process()
        self.workers = [psutil.Process(p) for p in pids]

    def read(self):
        return _cpu(self.me.cpu_times()), [{t.id: t.user_time + t.system_time for t in w.threads()}
                                           for w in self.workers]

    @staticmethod
    def diff(a, b) -> dict:
        """``client``: this process; ``tasks``: each worker's busiest thread (the one running
        tasks), summed; ``worker_rest``: the workers' other threads."""
        tasks = rest = 0.0
        for t0, t1 in zip(a[1], b[1]):
            d = sorted((t1[k] - t0.get(k, 0.0) for k in t1), reverse=True)
            tasks += d[0] if d else 0.0
            rest += sum(d[1:])
        return {"client": b[0] - a[0], "tasks": tasks, "worker_rest": rest}


class MachineMeter:
    """CPU seconds the whole machine spent busy (``/proc/stat``) beside those of this process
    and its children: the difference is what other programs took while we measured."""

    def __init__(self):
        import psutil

        self.me = psutil.Process()
        self.start = self._read()
        self.t0 = time.perf_counter()

    def _read(self):
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except OSError:
            return None
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle, iowait
        t = self.me.cpu_times()
        ours = t.user + t.system + t.children_user + t.children_system  # with children already ended
        for c in self.me.children(recursive=True):
            try:
                ours += _cpu(c.cpu_times())
            except Exception:  # a process that just ended
                pass
        return busy, ours

    def report(self) -> str:
        end = self._read()
        if end is None or self.start is None:
            return "(no /proc/stat: other programs' CPU unknown)"
        wall = time.perf_counter() - self.t0
        others = (end[0] - self.start[0]) - (end[1] - self.start[1])
        return (f"other programs used {max(others, 0):.1f} CPU s in these {wall:.0f} s "
                f"({max(others, 0) / (wall * os.cpu_count()):.0%} of the machine); "
                f"load average now {os.getloadavg()[0]:.2f}")


# --- the same work without Dask -----------------------------------------------------------


def _control_proc(engine, model_bytes, torch_spec, seeds, args, barrier, queue):
    os.environ.update(THREAD_ENV)
    from tinyrnn.batching import run_many
    from tinyrnn.format import loads

    if engine == "tinyrnn":
        model = loads(model_bytes)

        def work(ws):
            return np.stack(run_many(model, ws, "last", args.batch_size))
    else:
        import torch

        torch.set_num_threads(1)

        def work(ws):
            return torch_stacked(ws, torch_spec, args.batch_size)
    work(make_windows(range(8), args.features, args.t_min, args.t_max))  # warm: Numba cache, first calls
    barrier.wait()
    t0 = time.perf_counter()
    per = -(-len(seeds) // max(1, args.partitions // args.procs))
    for i in range(0, len(seeds), per):  # the same partition sizes as on the cluster
        work(make_windows(seeds[i:i + per], args.features, args.t_min, args.t_max))
    queue.put((t0, time.perf_counter(), time.process_time()))


def control(engine, model_bytes, torch_spec, args, procs: int) -> float:
    """Sequences per second of ``procs`` plain processes, started together, each scoring an
    equal share of the windows (generated in the process, as on the workers)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(procs), ctx.Queue()
    seeds = list(range(args.sequences))
    args.procs = procs
    ps = [ctx.Process(target=_control_proc, args=(engine, model_bytes, torch_spec, seeds[k::procs], args, barrier,
                                                  queue)) for k in range(procs)]
    for p in ps:
        p.start()
    got = [queue.get(timeout=600) for _ in ps]
    for p in ps:
        p.join()
    return args.sequences / (max(g[1] for g in got) - min(g[0] for g in got))


# --- the benchmark --------------------------------------------------------------------------


def main(argv=None) -> int:
    import dask
    import dask.bag as db
    from distributed import Client, LocalCluster, get_task_stream

    import tinyrnn.dask as tdask
    from common import tinyrnn_from_torch, torch_lstm
    from tinyrnn.format import dumps

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequences", type=int, default=4000)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--t-min", type=int, default=10)
    p.add_argument("--t-max", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--partitions", type=int, default=8, help="a few per worker (default 8)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--engines", nargs="+", default=["tinyrnn", "torch"], choices=["tinyrnn", "torch"])
    p.add_argument("--output", nargs="+", default=["array", "bag"], choices=["array", "bag"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--control", action="store_true", help="also time the same work in 1 and 2 plain processes")
    p.add_argument("--dask-defaults", action="store_true",
                   help="keep Dask's monitors at their default rates instead of tinyrnn.dask.LOCAL_CLUSTER_CONFIG")
    args = p.parse_args(argv)

    module = torch_lstm(args.features, args.hidden, seed=0).float()
    model = tinyrnn_from_torch(module)
    torch_spec = ("lstm0", args.features, args.hidden,
                  {k: v.detach().numpy().copy() for k, v in module.state_dict().items()})
    seeds = db.from_sequence(range(args.sequences), npartitions=args.partitions)
    windows = seeds.map_partitions(make_windows, args.features, args.t_min, args.t_max)
    spec_key = dask.delayed(torch_spec, pure=True, traverse=False)
    jobs = {
        ("tinyrnn", "array"): lambda: tdask.run_array(model, windows, reduce="last", batch_size=args.batch_size),
        ("torch", "array"): lambda: array_job(windows, torch_stacked, spec_key, args.hidden, args.batch_size),
        ("tinyrnn", "bag"): lambda: tdask.run(model, windows, reduce="last", batch_size=args.batch_size),
        ("torch", "bag"): lambda: windows.map_partitions(torch_partition, spec_key, args.batch_size),
    }
    jobs = {k: v for k, v in jobs.items() if k[0] in args.engines and k[1] in args.output}
    print(("Dask's default monitors" if args.dask_defaults else "tinyrnn.dask.connect (quiet monitors)") + "; "
          f"{args.sequences} windows of {args.t_min}-{args.t_max} steps x {args.features} features, "
          f"LSTM {args.features}->{args.hidden}, reduce=last, batch {args.batch_size}, {args.partitions} "
          f"partitions; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    print("CPU seconds per timed job: client = this process (client, scheduler, nannies); tasks = each "
          "worker's task thread; rest = the workers' other threads; occupancy = task time / (wall x workers)")
    rates: dict = {}
    machine = MachineMeter()
    for n in args.workers:
        if args.dask_defaults:
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   env=THREAD_ENV)
            connection = Client(cluster)
        else:  # what `tinyrnn run --workers N` starts
            cluster, connection = None, tdask.connect(workers=n)
        with connection as client:
            pids = list(client.run(_set_threads).values())
            meter = CPUMeter(pids)
            answers = {}
            for (engine, output), job in jobs.items():
                with get_task_stream(client):  # warm-up: imports, model built, Numba cache, first calls
                    got = client.compute(job()).result()
                answers[(engine, output)] = np.asarray(got) if output == "array" else np.stack(got)
                compiled = sum(s["tasks_that_compiled"] for s in client.run(tdask.worker_stats).values())
                best = None
                for _ in range(args.repeats):
                    a = meter.read()
                    with get_task_stream(client) as ts:
                        t0 = time.perf_counter()
                        client.compute(job()).result()
                        wall = time.perf_counter() - t0
                    cpu = CPUMeter.diff(a, meter.read())
                    busy = sum(s["stop"] - s["start"] for t in ts.data for s in t["startstops"]
                               if s["action"] == "compute")
                    if best is None or wall < best[0]:
                        best = (wall, cpu, busy / (wall * n))
                compiled = sum(s["tasks_that_compiled"] for s in client.run(tdask.worker_stats).values()) - compiled
                wall, cpu, occ = best
                rate = rates[(engine, output, n)] = args.sequences / wall
                print(f"  {n} worker{'s' if n > 1 else ' '} {engine:<8} {output:<5} {rate:>8,.0f} "
                      f"seq/s ({wall:.3f} s)  CPU s: client {cpu['client']:.2f}  tasks {cpu['tasks']:.2f}  "
                      f"rest {cpu['worker_rest']:.2f}  occupancy {occ:.0%}"
                      + (f"  [{compiled} timed tasks compiled a kernel]" if compiled and engine == "tinyrnn" else ""),
                      flush=True)
            ref = next(iter(answers.values()))
            diff = max(float(np.abs(v - ref).max()) for v in answers.values())
            print(f"  max |difference| between every engine's answers: {diff:.2e}")
        if cluster is not None:
            cluster.close()
        print("  " + machine.report())
        machine = MachineMeter()
    if args.control:
        print("without Dask (plain processes started together, windows generated in each):")
        for engine in args.engines:
            for procs in sorted(set(args.workers)):
                rates[(engine, "none", procs)] = control(engine, dumps(model), torch_spec, args, procs)
                print(f"  {procs} process{'es' if procs > 1 else '  '} {engine:<8} "
                      f"{rates[(engine, 'none', procs)]:>8,.0f} seq/s", flush=True)
        print("  " + machine.report())
    base = min(args.workers)
    outputs = list(args.output) + (["none"] if args.control else [])
    for n in args.workers:
        if n != base:
            for engine in args.engines:
                for output in outputs:
                    r = rates[(engine, output, n)] / rates[(engine, output, base)]
                    print(f"{engine} {'no Dask' if output == 'none' else output}: {n} / {base} = {r:.2f}x")
    if "torch" in args.engines and "tinyrnn" in args.engines:
        for n in args.workers:
            for output in outputs:
                print(f"{n} worker(s), {output}: tinyrnn / torch = "
                      f"{rates[('tinyrnn', output, n)] / rates[('torch', output, n)]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
