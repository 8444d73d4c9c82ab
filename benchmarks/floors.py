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
``compare-*.json`` here), floor = call + max(compute, bytes) against the measured time,
then the performance issue's targets (``TARGETS``): each one's measured value, its floor
read the same way (over the same reference time), whether it is met, and whether the floor
itself is within it: a target whose floor is not cannot be met on this machine by code.
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
from typing import Callable, NamedTuple

import numpy as np
from numba import njit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
F32 = 4

from common import fmt, interleaved_times  # noqa: E402
from compare import RTNEURAL_NS  # noqa: E402


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


class Target(NamedTuple):
    """One target of the performance issue (issue 5's int8 ratio too), read from compare.py's numbers.

    A ratio target is tinyrnn's time over the reference's, so its floor is the floor's time
    over that same reference time: where that is beyond the bound, no code meets the
    target on this machine, only fewer bytes or multiply-adds (another precision, another
    thread) or a slower reference.
    """

    what: str
    key: str  # compare.py's entry
    ref: str | None  # a ratio of tinyrnn's time to this runtime's; None: tinyrnn's own value
    bound: float
    unit: str  # how value and bound read: "ratio", "duration" (fmt), "seconds", "MB"
    floor_row: str | None = None  # the workload row (``workloads``) whose floor applies
    at_least: bool = False  # a lower bound (a speed-up), not an upper one
    pick: Callable[[dict], float] | None = None  # the value from the entry, where it is not a time
    # a per-sample step's floor here is bytes or multiply-adds; its chain of dependent
    # operations is not modelled (module docstring), so a "within" is only maybe
    optimistic: bool = False


TARGETS = [
    *(Target(f"step LSTM {n} <= {b:g}x {ref}", f"step LSTM {n}", ref, b, "ratio", f"step LSTM {n}")
      for n, bounds in ((32, (0.10, 0.25)), (128, (0.10, 0.35)), (512, (0.5, 0.8)))
      for ref, b in zip(("torch", "onnxruntime"), bounds)),
    Target("process LSTM 1->16 <= 0.1x torch", "process LSTM 1->16", "torch", 0.1, "ratio",
           "process LSTM 1->16, per step", optimistic=True),
    Target("process LSTM 1->16 <= 120 ns a step", "process LSTM 1->16", None, 120e-9, "duration",
           "process LSTM 1->16, per step", optimistic=True),
    *(Target(f"process {name} <= RTNeural's {ns} ns", f"rtneural {name}", None, ns * 1e-9, "duration",
             f"process {name}, per step", optimistic=True)
      for name, ns in RTNEURAL_NS.items()),
    Target("run T=1000 LSTM 256 <= 0.5x torch", "run LSTM 256", "torch", 0.5, "ratio", "run LSTM 256, T=1000"),
    Target("64 streams LSTM 256 <= 1.0x torch", "batch 64 LSTM 256", "torch", 1.0, "ratio",
           "64 streams, one step, LSTM 256"),
    # the "near-linear" read as at least 1.7x of one thread on two cores
    Target("64 streams on 2 threads >= 1.7x of one", "batch threads", None, 1.7, "ratio", at_least=True,
           pick=lambda r: r["speed-up"]),
    # compare.py's start-up entry: {name: (seconds, MB)}; "3x under torch, within 3x of
    # onnxruntime" read as wall time (RSS has its own bound)
    Target("start-up (warm cache) <= 0.6 s", "startup", None, 0.6, "seconds", pick=lambda r: r["tinyrnn"][0]),
    Target("start-up RSS <= 150 MB", "startup", None, 150, "MB", pick=lambda r: r["tinyrnn"][1]),
    Target("start-up <= 1/3 of torch's", "startup", None, 1 / 3, "ratio",
           pick=lambda r: r["tinyrnn"][0] / r["torch"][0]),
    Target("start-up <= 3x onnxruntime's", "startup", None, 3.0, "ratio",
           pick=lambda r: r["tinyrnn"][0] / r["onnxruntime"][0]),
    Target("start-up, cold cache <= 10 s", "startup", None, 10.0, "seconds",
           pick=lambda r: r["tinyrnn, cold cache"][0]),
    Target("int8 step <= 0.5x float32, LSTM 1024 (issue 5)", "quant 1024", None, 0.5, "ratio",
           pick=lambda r: r["int8"] / r["float32"]),
]


def _per_reference(t: Target, raw: dict) -> float:
    """What a time is divided by for this target: the reference runtime's time, or 1."""
    return raw[t.key][t.ref] if t.ref else 1.0


def _value(t: Target, raw: dict) -> float:
    """The target's measured value from compare.py's numbers."""
    r = raw[t.key]
    if t.pick is not None:
        return t.pick(r)
    mine = r if not isinstance(r, dict) else r["tinyrnn"]  # (the RTNeural entries are tinyrnn's time alone)
    return mine / _per_reference(t, raw)


def _show(value: float, unit: str) -> str:
    if unit == "ratio":
        return f"{value:.2f}x"
    if unit == "seconds":
        return f"{value:.2f} s"
    return f"{value:.0f} MB" if unit == "MB" else fmt(value)


def targets(raw: dict, floors: dict[str, float]) -> list[tuple[str, str, str, str, str]]:
    """``(target, measured, floor, met, floor within it)`` for each target ``raw`` has numbers for.

    ``floors``: workload row name -> floor in seconds (``main``'s table). The floor columns
    are "-" for targets no floor applies to (threads, start-up, a quantized ratio); "yes*"
    is a floor within the target that leaves out a per-sample step's chain. ``met``
    compares the unrounded values.
    """
    rows = []
    for t in TARGETS:
        if t.key not in raw:
            continue
        value = _value(t, raw)
        met = value >= t.bound if t.at_least else value <= t.bound
        floor, within = "-", "-"
        if t.floor_row in floors:
            f = floors[t.floor_row] / _per_reference(t, raw)
            ok = f >= t.bound if t.at_least else f <= t.bound
            floor, within = _show(f, t.unit), ("yes*" if t.optimistic else "yes") if ok else "no"
        rows.append((t.what, _show(value, t.unit), floor, "yes" if met else "no", within))
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
    floors: dict[str, float] = {}
    print("| workload | multiply-adds | weight bytes | compute floor | bytes floor | floor | tinyrnn | of floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, macs, nbytes, pays_call, measured in rows:
        compute, data = macs / peak, nbytes / bw[sizes[name]]
        floor = (call if pays_call else 0.0) + max(compute, data)
        print(f"| {name} | {macs / 1e3:,.1f} k | {nbytes / 1024:,.0f} KiB | {fmt(compute)} | {fmt(data)} | "
              f"{fmt(floor)} | {fmt(measured)} | {measured / floor:.2f}x |")
        floors[name] = floor
    under = [name for name, *_, measured in rows if measured < 0.8 * floors[name]]
    if under:
        # a floor is a lower bound only for the machine in the state it was measured in
        print(f"\nwarning: {', '.join(under)} ran under 0.8x of their floors: this machine was slower now "
              f"than during {path.name}; take the floors right after the run they judge")
    print("\n| target | measured | floor | met | floor within it |")
    print("|---|---:|---:|---|---|")
    judged = targets(raw, floors)
    for row in judged:
        print("| " + " | ".join(row) + " |")
    if any(row[4] == "yes*" for row in judged):
        print("\n* a per-sample step's floor here is bytes or multiply-adds; its chain of dependent "
              "operations (~160-190 cycles for LSTM 1->16, RESULTS.md \"Floors\") is not modelled")
    missing = sorted({t.key for t in TARGETS if t.key not in raw})
    if missing:
        print(f"\nnot judged (not in {path.name}): {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
