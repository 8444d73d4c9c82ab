"""Step time of float32, fp16 and int8 weights, same LSTM, same run.

    python benchmarks/quant_bench.py                  # LSTM 256, 512, 1024 (I = H)
    python benchmarks/quant_bench.py --sizes 64 128 --json out.json

A large recurrent step is memory-bound: an LSTM with 1024 units reads 4 * 1024 * 2048
weights per step (32 MB as float32), so bytes per weight set the pace. For each size this
times ``stream.step`` on one stream (a single step, what a real-time caller does) and
``stream.process`` over 256 steps (per step), with the model as float32, fp16 and int8,
one after another in one process. Ratios are against float32: below 1 is faster.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import median_time  # noqa: E402
from tinyrnn import InputSpec, Model  # noqa: E402
from tinyrnn.layers import Recurrent  # noqa: E402

SCHEMES = ("float32", "fp16", "int8")


def lstm(n: int, seed: int = 0) -> Model:
    """An LSTM with I = H = n and PyTorch-like initial weights U(-1/sqrt(n), 1/sqrt(n))."""
    rng = np.random.default_rng(seed)
    k = 1 / np.sqrt(n)
    W = rng.uniform(-k, k, (1, 4 * n, n))
    R = rng.uniform(-k, k, (1, 4 * n, n))
    B = rng.uniform(-k, k, (1, 8 * n))
    return Model([Recurrent.from_onnx("lstm", "lstm", W, R, B)], InputSpec.features(n))


def bench(n: int, min_time: float, block: int = 256) -> dict:
    """Seconds per step of each scheme for LSTM n, single step and inside ``process``."""
    base = lstm(n)
    models = {"float32": base, "fp16": base.quantize("fp16"), "int8": base.quantize("int8")}
    rng = np.random.default_rng(1)
    x = rng.standard_normal(n).astype(np.float32)
    xs = rng.standard_normal((block, n)).astype(np.float32)
    out = np.empty(n, np.float32)
    row = {"n": n, "weight_bytes": {}, "step": {}, "process": {}}
    for name, model in models.items():
        s = model.stream()
        row["weight_bytes"][name] = model.nbytes()
        row["step"][name] = median_time(lambda: s.step(x, out=out), min_time=min_time)
        row["process"][name] = median_time(lambda: s.process(xs), min_time=min_time) / block
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per timing loop")
    p.add_argument("--json", help="also write the raw numbers here")
    args = p.parse_args(argv)

    rows = [bench(n, args.min_time) for n in args.sizes]
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}; python {platform.python_version()}\n")
    print("| LSTM I=H | weights f32 / fp16 / int8 | step f32 | step fp16 | step int8 | int8/f32 "
          "| process f32 | process fp16 | process int8 | int8/f32 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        wb = " / ".join(f"{r['weight_bytes'][s] / 1e6:.2f}" for s in SCHEMES)
        st, pr = r["step"], r["process"]
        print(f"| {r['n']} | {wb} MB | " + " | ".join(f"{st[s] * 1e6:.1f} us" for s in SCHEMES)
              + f" | {st['int8'] / st['float32']:.2f} | "
              + " | ".join(f"{pr[s] * 1e6:.1f} us" for s in SCHEMES)
              + f" | {pr['int8'] / pr['float32']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
