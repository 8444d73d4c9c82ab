"""The two floors of each compare.py workload on this machine, and how close tinyrnn gets.

    python benchmarks/floors.py [compare.json]

A step cannot take less than its multiply-adds at the core's peak rate (the compute
floor), nor less than its weight bytes at the rate the cache level holding them delivers
(the bytes floor); a single ``stream.step`` also pays Python's call into the kernel. This
measures all three here, in this process, on one thread:

  peak      multiply-adds per second of ``simd.tile_matmat4`` on a panel in L1 (four rows
            sharing each weight load: the fastest product the kernels have)
  bandwidth bytes per second of a vectorised sum over a float32 array of the workload's
            size (its weights stay in whichever cache level they fit), read as one
            stream and as four at once like the kernels' panels: the faster, fastest pass
  call      ``stream.step`` of an LSTM 1->1, whose kernel does almost nothing

then prints, for every workload in a ``compare.py --json`` file (default: the newest
``compare-*.json`` here), floor = call + max(compute, bytes) against the measured time.
Each is the fastest of repeats spread over two seconds or more: this machine changes speed
for seconds at a time, and a floor is the machine at its best. A per-sample step is
bound by neither: its 16-unit recurrence is a chain of dependent multiply-adds and
divisions (latency, not throughput), which this does not model.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
F32 = 4

from common import fmt, interleaved_times  # noqa: E402


@njit(fastmath=True, cache=True)
def _sum1(a, passes):
    s = np.float32(0.0)
    for _ in range(passes):
        t = np.float32(0.0)
        for i in range(a.shape[0]):
            t += a[i]
        s += t
    return s


@njit(fastmath=True, cache=True)
def _sum4(a, passes):
    # four contiguous quarters walked side by side, as the kernels walk four column panels
    # at once: from L3 and DRAM one stream alone reads at half this rate
    q = a.shape[0] // 4
    s = np.float32(0.0)
    for _ in range(passes):
        t = np.float32(0.0)
        for i in range(q):
            t += a[i] + a[q + i] + a[2 * q + i] + a[3 * q + i]
        s += t
    return s


def _fastest(fn) -> float:
    """Seconds per call of ``fn()``: its fastest round over at least two seconds (after a
    warm-up call, which compiles)."""
    return interleaved_times({"fn": fn}, span=2.0, min_rounds=7)["fn"]


def bandwidth(nbytes: int) -> float:
    """Bytes per second read from an array of ``nbytes`` (in whichever cache holds it)."""
    a = np.ones(max(nbytes // F32, 1024), np.float32)
    passes = max(1, (64 << 20) // a.nbytes)  # ~64 MiB a repeat
    best = 0.0
    for fn in (_sum1, _sum4):  # one stream is faster from L1 and L2, four from L3 and DRAM
        best = max(best, a.nbytes * passes / _fastest(lambda: fn(a, passes)))
    return best


def peak_macs() -> float:
    """Multiply-adds per second of the four-row register tile on a 256 x LANES panel in L1."""
    from tinyrnn.backends.simd import LANES, tile_matmat4

    @njit(fastmath=True)
    def rep(src, M, dst, n):
        for _ in range(n):
            tile_matmat4(src, 0, 0, 1, 0, M, dst, 0, 0, 1, 0, 0, LANES)

    rows, n = 256, 20000
    M = np.full((rows, LANES), 1e-3, np.float32)
    src, dst = np.ones((4, 1, rows), np.float32), np.zeros((4, 1, LANES), np.float32)
    return 4 * rows * LANES * n / _fastest(lambda: rep(src, M, dst, n))


def call_cost() -> float:
    """Seconds of ``stream.step`` on an LSTM 1->1: the Python path around a kernel."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from builders import random_recurrent, single_layer_model

    layer, _ = random_recurrent(np.random.default_rng(0), "lstm", 1, 1)
    stream = single_layer_model(layer).stream()
    x = np.zeros(1, np.float32)
    return _fastest(lambda: stream.step(x))


def workloads(raw: dict) -> list[tuple[str, float, float, bool, float]]:
    """``(name, multiply-adds, weight bytes, pays a call, measured s)`` per workload in ``raw``."""
    rows = []

    def lstm(I, H, dtype_bytes=F32):
        macs = 4 * H * (I + H)
        return macs, macs * dtype_bytes

    for n in (32, 128, 512):
        if f"step LSTM {n}" in raw:
            rows.append((f"step LSTM {n}", *lstm(n, n), True, raw[f"step LSTM {n}"]["tinyrnn"]))
    if "process LSTM 1->16" in raw:
        rows.append(("process LSTM 1->16, per step", *lstm(1, 16), False, raw["process LSTM 1->16"]["tinyrnn"]))
    for name, (I, H, G) in {"LSTM 1->32": (1, 32, 4), "GRU 1->16": (1, 16, 3), "LSTM 64->64": (64, 64, 4)}.items():
        if f"rtneural {name}" in raw:
            macs = G * H * (I + H)
            rows.append((f"process {name}, per step", macs, macs * F32, False, raw[f"rtneural {name}"]))
    if "run LSTM 256" in raw:
        T, H, chunk = 1000, 256, 32
        # R every step, W once a chunk of hoisted steps
        rows.append(("run LSTM 256, T=1000", T * 8 * H * H, (T + -(-T // chunk)) * 4 * H * H * F32, True,
                     raw["run LSTM 256"]["tinyrnn"]))
    if "batch 64 LSTM 256" in raw:
        macs, nbytes = lstm(256, 256)  # the weights, read once for all 64 streams
        rows.append(("64 streams, one step, LSTM 256", 64 * macs, nbytes, True, raw["batch 64 LSTM 256"]["tinyrnn"]))
    for n in (256, 512, 1024):
        for scheme, size in (("float32", F32), ("fp16", 2), ("int8", 1)):
            if f"quant {n}" in raw:
                rows.append((f"step LSTM {n} {scheme}", *lstm(n, n, size), True, raw[f"quant {n}"][scheme]))
    return rows


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else max(HERE.glob("compare-*.json"))
    raw = json.loads(path.read_text())
    peak, call = peak_macs(), call_cost()
    rows = workloads(raw)
    # the run's working set is R and W (2 MiB), the rest their weights
    sizes = {name: (2 * 4 * 256 * 256 * F32 if name.startswith("run") else nbytes) for name, _, nbytes, _, _ in rows}
    bw = {s: bandwidth(s) for s in sorted(set(sizes.values()))}
    print(f"measured {path.name}; peak {peak / 1e9:.1f} GMAC/s (simd.tile_matmat4, L1); "
          f"stream.step call {fmt(call)}; read bandwidth " +
          ", ".join(f"{s / 1024:.0f} KiB {b / 1e9:.0f} GB/s" for s, b in bw.items()) + "\n")
    print("| workload | multiply-adds | weight bytes | compute floor | bytes floor | floor | tinyrnn | of floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, macs, nbytes, pays_call, measured in rows:
        compute, data = macs / peak, nbytes / bw[sizes[name]]
        floor = (call if pays_call else 0.0) + max(compute, data)
        print(f"| {name} | {macs / 1e3:,.1f} k | {nbytes / 1024:,.0f} KiB | {fmt(compute)} | {fmt(data)} | "
              f"{fmt(floor)} | {fmt(measured)} | {measured / floor:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
