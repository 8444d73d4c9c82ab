"""Speed-up from running one Model in several threads (the kernels release the GIL).

    PYTHONPATH=. python benchmarks/threads_bench.py [--threads 2] [--hidden 128] [--steps 20000]

One LSTM model; J = 4 jobs, each a fresh stream processing ``steps`` steps of its own
input. The jobs run one after another in the main thread, then spread over N threads
(one Model, a Stream per job). Prints best and median wall times of several rounds, the
speed-up, and the machine's load, because on a shared machine the other processes decide
how much of the second core a thread gets.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np

import tinyrnn
from tinyrnn import InputSpec, Model
from tinyrnn.layers import Recurrent


def build(I: int, H: int, seed: int = 0) -> Model:
    rng = np.random.default_rng(seed)
    layer = Recurrent.from_onnx("lstm", "lstm", rng.normal(0, 0.3, (1, 4 * H, I)),
                                rng.normal(0, 0.3, (1, 4 * H, H)), rng.normal(0, 0.3, (1, 8 * H)))
    return Model([layer], InputSpec.features(I))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--input", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    m = build(a.input, a.hidden)
    rng = np.random.default_rng(1)
    xs = rng.normal(0, 1, (a.jobs, a.steps, a.input)).astype(np.float32)
    m.stream().process(xs[0, :10])  # compile

    def job(i):
        return m.stream().process(xs[i])

    def serial():
        return [job(i) for i in range(a.jobs)]

    def threaded():
        out = [None] * a.jobs

        def worker(k):
            for i in range(k, a.jobs, a.threads):
                out[i] = job(i)

        ts = [threading.Thread(target=worker, args=(k,)) for k in range(a.threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return out

    ref = serial()
    for got, want in zip(threaded(), ref):
        assert np.array_equal(got, want), "threaded answers differ"
    times = {"serial": [], "threads": []}
    for _ in range(a.rounds):
        for name, fn in (("serial", serial), ("threads", threaded)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    s_best, t_best = min(times["serial"]), min(times["threads"])
    s_med, t_med = float(np.median(times["serial"])), float(np.median(times["threads"]))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"tinyrnn {tinyrnn.__version__}: LSTM {a.input}->{a.hidden}, {a.jobs} jobs x {a.steps} steps, "
          f"{a.threads} threads; cpus={os.cpu_count()} loadavg={load}")
    print(f"  serial   best {s_best:.3f} s  median {s_med:.3f} s")
    print(f"  threads  best {t_best:.3f} s  median {t_med:.3f} s")
    print(f"  speed-up best {s_best / t_best:.2f}x  median {s_med / t_med:.2f}x  (answers identical)")


if __name__ == "__main__":
    main()
