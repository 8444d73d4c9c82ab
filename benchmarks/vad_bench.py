"""Silero VAD per 576-sample chunk: tinyrnn beside onnxruntime, one thread each, same run.

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/vad_bench.py [--variant silero_vad.onnx]

For each variant of the silero-vad wheel: onnxruntime called once per chunk with its state
(what silero-vad's ``OnnxWrapper`` does, minus the torch glue), tinyrnn ``Stream.step`` per
chunk, tinyrnn ``Stream.process`` over 100 chunks (time per chunk), and both batched over 8
streams (time per chunk per stream). Times are medians over repeats (``common.median_time``)
and the ratio column is tinyrnn / onnxruntime. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import numpy as np

from common import median_time

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
    row = {"variant": name,
           "ort_step": median_time(ort_step),
           "step": median_time(lambda: s.step(x, out=out)),
           "process": median_time(lambda: s.process(block)) / len(block)}
    if name != "silero_vad_openvino_16k.onnx":  # exported for batch 1 only
        xb = np.ascontiguousarray(np.broadcast_to(chunks[:1], (batch, chunks.shape[1])))
        stb = np.zeros((2, batch, 128), np.float32)

        def ort_batch():
            feed = {"input": xb, "state": stb}
            if has_sr:
                feed["sr"] = sr
            sess.run(None, feed)

        sb = model.stream(batch=batch)
        row["ort_batch"] = median_time(ort_batch) / batch
        row["step_batch"] = median_time(lambda: sb.step(xb)) / batch
    return row


def main(argv=None) -> int:
    import silero_vad

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="default: all")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args(argv)
    data = Path(silero_vad.__file__).parent / "data"
    rng = np.random.default_rng(0)
    chunks = (0.1 * rng.normal(size=(100, 576))).astype(np.float32)
    print(f"# Silero VAD, one 576-sample chunk per step ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores visible, one thread each)\n")
    print(f"| variant | onnxruntime step | tinyrnn step | ratio | tinyrnn process (per chunk) | ratio | "
          f"onnxruntime B={args.batch} (per stream) | tinyrnn B={args.batch} step (per stream) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.variant or list(VARIANTS):
        r = bench_variant(name, data, chunks, args.batch)
        us = lambda v: f"{v * 1e6:.1f} µs" if v is not None else "n/a"  # noqa: E731
        print(f"| {name} | {us(r['ort_step'])} | {us(r['step'])} | {r['step'] / r['ort_step']:.2f} | "
              f"{us(r['process'])} | {r['process'] / r['ort_step']:.2f} | {us(r.get('ort_batch'))} | "
              f"{us(r.get('step_batch'))} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
