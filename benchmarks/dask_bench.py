"""Sequences per second on a Dask LocalCluster: 1 vs 2 worker processes, tinyrnn vs torch.

The job: N sensor-log windows of ragged lengths (uniform in [T_MIN, T_MAX] steps of F
features) through one LSTM (F -> H), keeping each window's last output (``reduce="last"``).
Both engines get the same weights (tinyrnn converted from the torch module), the same
partitions and the same length-sorted batches of ``--batch-size``; torch runs each batch
as a ``pack_padded_sequence`` through ``nn.LSTM`` (its fastest ragged path), one thread per
worker like tinyrnn. The windows are generated on the workers from seeds, so what is timed
is the scoring, not shipping data from this process. Every worker first runs a warm-up job
(imports, the Numba cache, torch's first call); then each configuration runs ``--repeats``
times and the best time is reported. The two engines' answers are checked against each
other (max abs difference).

    PYTHONPATH=.:converters python benchmarks/dask_bench.py            # small default size
    python benchmarks/dask_bench.py --sequences 20000 --workers 1 2 4  # a bigger machine
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


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


def _set_threads():
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    return os.getpid()


def main(argv=None) -> int:
    import dask
    import dask.bag as db
    from distributed import Client, LocalCluster

    import tinyrnn.dask as tdask
    from common import tinyrnn_from_torch, torch_lstm

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequences", type=int, default=4000)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--t-min", type=int, default=10)
    p.add_argument("--t-max", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--partitions", type=int, default=16)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    module = torch_lstm(args.features, args.hidden, seed=0).float()
    model = tinyrnn_from_torch(module)
    torch_spec = ("lstm0", args.features, args.hidden, {k: v.detach().numpy().copy() for k, v in module.state_dict().items()})
    seeds = db.from_sequence(range(args.sequences), npartitions=args.partitions)
    windows = seeds.map_partitions(make_windows, args.features, args.t_min, args.t_max)
    jobs = {
        "tinyrnn": lambda: tdask.run(model, windows, reduce="last", batch_size=args.batch_size),
        "torch": lambda: windows.map_partitions(torch_partition, dask.delayed(torch_spec, traverse=False),
                                                args.batch_size),
    }
    print(f"{args.sequences} windows of {args.t_min}-{args.t_max} steps x {args.features} features, "
          f"LSTM {args.features}->{args.hidden}, reduce=last, batch {args.batch_size}, "
          f"{args.partitions} partitions; {os.cpu_count()} CPUs")
    rates: dict = {}
    for n in args.workers:
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                          env={"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}) as cl, \
                Client(cl) as client:
            client.run(_set_threads)
            answers = {}
            for name, job in jobs.items():
                answers[name] = job().compute()  # warm-up: imports, Numba cache, first calls
                best = float("inf")
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    job().compute()
                    best = min(best, time.perf_counter() - t0)
                rates[(name, n)] = args.sequences / best
                print(f"  {n} worker{'s' if n > 1 else ' '} {name:<8} {rates[(name, n)]:>10,.0f} sequences/s "
                      f"({best:.3f} s)", flush=True)
            diff = max(float(np.abs(a - b).max()) for a, b in zip(answers["tinyrnn"], answers["torch"]))
            print(f"  max |tinyrnn - torch| over every answer: {diff:.2e}")
    base = min(args.workers)
    for n in args.workers:
        if n != base:
            for name in jobs:
                print(f"{name}: {n} workers / {base} = {rates[(name, n)] / rates[(name, base)]:.2f}x")
    for n in args.workers:
        print(f"{n} worker(s): tinyrnn / torch = {rates[('tinyrnn', n)] / rates[('torch', n)]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
