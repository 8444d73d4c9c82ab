"""Silero VAD per 576-sample chunk: tinyrnn beside onnxruntime, one thread each, same run.

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/vad_bench.py [--variant silero_vad.onnx] [--same-rounds]

For each variant of the silero-vad wheel: onnxruntime called once per chunk with its state
(what silero-vad's ``OnnxWrapper`` does, minus the torch glue), tinyrnn ``Stream.step`` per
chunk, tinyrnn ``Stream.process`` over 100 chunks (time per chunk), and both batched over 8
streams (time per chunk per stream). The ratio column is tinyrnn / onnxruntime. Prints a Markdown table.

The runtimes are timed in interleaved rounds of CPU time (``paired``): median and best round.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np


def paired(fns: dict, rounds: int = 15, min_time: float = 0.05) -> dict:
    """Seconds per call of each function, measured in interleaved rounds.

    On a shared machine the load drifts within seconds, so runtimes timed one after the
    other see different machines. Here every round times each function once (a loop of
    ~``min_time``), back to back. The clock is the process's CPU time (both runtimes run
    on the calling thread only): time spent descheduled by other jobs does not count,
    which wall time on an oversubscribed machine cannot separate. Per function: the median
    round and the best round. Returns ``{name: (median, best)}``.
    """
    counts = {}
    for name, fn in fns.items():
        fn()
        n, t = 1, 0.0
        while t < min_time / 4:
            n *= 2
            t0 = time.process_time()
            for _ in range(n):
                fn()
            t = time.process_time() - t0
        counts[name] = max(1, int(n * min_time / t))
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            n = counts[name]
            t0 = time.process_time()
            for _ in range(n):
                fn()
            samples[name].append((time.process_time() - t0) / n)
    return {name: (float(np.median(v)), min(v)) for name, v in samples.items()}

VARIANTS = {
    "silero_vad.onnx": {"sr": 16000},
    "silero_vad_16k_op15.onnx": {"sr": 16000},
    "silero_vad_op18_ifless.onnx": {"sr": 16000},
    "silero_vad_openvino_16k.onnx": None,
    "silero_vad_half.onnx": None,
}


def ort_session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def bench_variant(name: str, data: Path, chunks: np.ndarray, batch: int) -> dict:
    from tinyrnn_converters import from_onnx

    model = from_onnx(str(data / name), constants=VARIANTS[name])
    sess = ort_session(data / name)
    has_sr = any(i.name == "sr" for i in sess.get_inputs())
    sr = np.array(16000, np.int64)
    x1 = chunks[:1]  # (1, 576)
    state = np.zeros((2, 1, 128), np.float32)

    def ort_step():
        feed = {"input": x1, "state": state}
        if has_sr:
            feed["sr"] = sr
        sess.run(None, feed)

    s = model.stream()
    x = chunks[0]
    out = np.empty(1, np.float32)
    block = chunks[:100]
    t = paired({"ort_step": ort_step, "step": lambda: s.step(x, out=out), "process": lambda: s.process(block)})
    row = {"variant": name, **{k: v[0] for k, v in t.items()}, "median": {k: v[1] for k, v in t.items()}}
    row["process"] /= len(block)
    row["median"]["process"] /= len(block)
    if name != "silero_vad_openvino_16k.onnx":  # exported for batch 1 only
        xb = np.ascontiguousarray(np.broadcast_to(chunks[:1], (batch, chunks.shape[1])))
        stb = np.zeros((2, batch, 128), np.float32)

        def ort_batch():
            feed = {"input": xb, "state": stb}
            if has_sr:
                feed["sr"] = sr
            sess.run(None, feed)

        sb = model.stream(batch=batch)
        tb = paired({"ort": ort_batch, "trnn": lambda: sb.step(xb)}, rounds=7)
        row["ort_batch"] = tb["ort"][0] / batch
        row["step_batch"] = tb["trnn"][0] / batch
    return row


def same_rounds(data: Path, chunks: np.ndarray, names: list[str], rounds: int) -> None:
    """Every variant's onnxruntime and tinyrnn step timed in the same interleaved rounds.

    The main table times one variant after another, so each sees the machine of its own
    minute; here all of them share every round, so differences between variants are the
    variants' own (and the ratio of each is taken under the same load as the others).
    """
    from tinyrnn_converters import from_onnx

    x1, x = chunks[:1], chunks[0]
    out = np.empty(1, np.float32)
    fns = {}
    for name in names:
        sess = ort_session(data / name)
        feed = {"input": x1, "state": np.zeros((2, 1, 128), np.float32)}
        if any(i.name == "sr" for i in sess.get_inputs()):
            feed["sr"] = np.array(16000, np.int64)
        s = from_onnx(str(data / name), constants=VARIANTS[name]).stream()
        fns["ort " + name] = lambda sess=sess, feed=feed: sess.run(None, feed)
        fns["trnn " + name] = lambda s=s: s.step(x, out=out)
    t = paired(fns, rounds=rounds)
    print(f"\nAll variants in the same {rounds} rounds (median; best in brackets):\n")
    print("| variant | onnxruntime step | tinyrnn step | ratio |")
    print("|---|---:|---:|---:|")
    for name in names:
        o, r = t["ort " + name], t["trnn " + name]
        print(f"| {name} | {o[0] * 1e6:.1f} µs ({o[1] * 1e6:.1f}) | {r[0] * 1e6:.1f} µs ({r[1] * 1e6:.1f}) | "
              f"{r[0] / o[0]:.2f} ({r[1] / o[1]:.2f}) |", flush=True)


def main(argv=None) -> int:
    import silero_vad

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="default: all")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--same-rounds", action="store_true",
                    help="also time every variant's step in the same interleaved rounds")
    args = ap.parse_args(argv)
    data = Path(silero_vad.__file__).parent / "data"
    rng = np.random.default_rng(0)
    chunks = (0.1 * rng.normal(size=(100, 576))).astype(np.float32)
    print(f"# Silero VAD, one 576-sample chunk per step ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores visible, one thread each)\n")
    print("CPU time per call, median of 15 interleaved rounds (ratio of the best rounds in brackets).\n")
    print(f"| variant | onnxruntime step | tinyrnn step | ratio | tinyrnn process (per chunk) | ratio | "
          f"onnxruntime B={args.batch} (per stream) | tinyrnn B={args.batch} step (per stream) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.variant or list(VARIANTS):
        r = bench_variant(name, data, chunks, args.batch)
        us = lambda v: f"{v * 1e6:.1f} µs" if v is not None else "n/a"  # noqa: E731
        med = r["median"]
        print(f"| {name} | {us(r['ort_step'])} | {us(r['step'])} | {r['step'] / r['ort_step']:.2f} "
              f"({med['step'] / med['ort_step']:.2f}) | {us(r['process'])} | {r['process'] / r['ort_step']:.2f} "
              f"({med['process'] / med['ort_step']:.2f}) | {us(r.get('ort_batch'))} | {us(r.get('step_batch'))} |",
              flush=True)
    if args.same_rounds:
        same_rounds(data, chunks, args.variant or list(VARIANTS), rounds=15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
