"""Many streams of one LSTM on a GPU: tinyrnn's CUDA kernels beside torch's cuDNN ``nn.LSTM``.

    python benchmarks/gpu_bench.py                         # LSTM 256; 1, 64, 1024, 16384 streams
    python benchmarks/gpu_bench.py --batches 1 64 --hidden 512 --json out.json
    python benchmarks/gpu_bench.py --markdown >> benchmarks/RESULTS.md

Needs an NVIDIA GPU, numba-cuda and a CUDA build of torch. One set of random weights (I = H)
goes to both runtimes; the script first checks that they agree (max abs difference over a
few steps), then times, per batch size B:

* ``tinyrnn step (device)``: ``stream.step`` with the input already on the GPU and a GPU
  output (what a caller chaining GPU work does), synchronised after every step;
* ``tinyrnn step (host)``: ``stream.step`` with numpy in and out (adds two copies);
* ``torch step``: ``nn.LSTM`` on a ``(1, B, H)`` input with ``(h, c)`` carried, synchronised
  after every step, under ``torch.inference_mode`` with cuDNN enabled and TF32 off unless
  ``--allow-tf32`` (torch's own default is on: faster, less exact than float32);
* ``tinyrnn process`` / ``torch seq``: per step, over a block of ``--block`` steps in one call.

Times are medians (benchmarks/common.py). The target of issue 7: tinyrnn's step faster than
torch's at every batch size.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import median_time  # noqa: E402
from tinyrnn import InputSpec, Model  # noqa: E402
from tinyrnn.layers import Recurrent  # noqa: E402


def weights(n: int, seed: int = 0):
    """ONNX-layout LSTM weights (gates i, o, f, c), PyTorch-like init U(-1/sqrt(n), 1/sqrt(n))."""
    rng = np.random.default_rng(seed)
    k = 1 / np.sqrt(n)
    W = rng.uniform(-k, k, (1, 4 * n, n)).astype(np.float32)
    R = rng.uniform(-k, k, (1, 4 * n, n)).astype(np.float32)
    B = rng.uniform(-k, k, (1, 8 * n)).astype(np.float32)
    return W, R, B


def torch_lstm(W, R, B, n: int):
    """The same LSTM as a cuDNN ``nn.LSTM`` (ONNX i, o, f, c -> torch i, f, g, o)."""
    import torch

    order = np.concatenate([np.arange(0, n), np.arange(2 * n, 3 * n), np.arange(3 * n, 4 * n), np.arange(n, 2 * n)])
    m = torch.nn.LSTM(n, n, batch_first=False)
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.from_numpy(W[0][order]))
        m.weight_hh_l0.copy_(torch.from_numpy(R[0][order]))
        m.bias_ih_l0.copy_(torch.from_numpy(B[0, :4 * n][order]))
        m.bias_hh_l0.copy_(torch.from_numpy(B[0, 4 * n:][order]))
    return m.cuda().eval()


def bench(n: int, batches: list[int], block: int, min_time: float, tf32: bool = False) -> list[dict]:
    import torch
    from numba import cuda

    torch.backends.cudnn.enabled = True
    # torch lets cuDNN use TF32 tensor cores by default (10-bit mantissas); tinyrnn computes
    # in float32, so the like-for-like default turns that off (--allow-tf32 turns it on)
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    W, R, B = weights(n)
    model = Model([Recurrent.from_onnx("lstm", "lstm", W, R, B)], InputSpec.features(n))
    tl = torch_lstm(W, R, B, n)
    rng = np.random.default_rng(1)
    rows = []
    for b in batches:
        x = rng.standard_normal((b, n)).astype(np.float32)
        xs = rng.standard_normal((b, block, n)).astype(np.float32)
        # agreement first: 4 steps each way
        s = model.stream(batch=b, device="cuda")
        ours = np.stack([s.step(x) for _ in range(4)])
        with torch.inference_mode():
            xt = torch.from_numpy(x).cuda()[None]
            state = None
            theirs = []
            for _ in range(4):
                y, state = tl(xt, state)
                theirs.append(y[0].cpu().numpy())
        diff = float(np.abs(ours - np.stack(theirs)).max())

        s = model.stream(batch=b, device="cuda")
        x_dev = cuda.to_device(x)
        out_dev = cuda.device_array((b, n), np.float32)

        def ours_device():
            s.step(x_dev, out=out_dev)
            cuda.synchronize()

        def ours_host():
            s.step(x)

        def ours_process():
            s.process(xs)

        with torch.inference_mode():
            xt = torch.from_numpy(x).cuda()[None]  # (1, B, n)
            xst = torch.from_numpy(np.ascontiguousarray(xs.transpose(1, 0, 2))).cuda()  # (T, B, n)
            hc = (torch.zeros(1, b, n, device="cuda"), torch.zeros(1, b, n, device="cuda"))

            def torch_step():
                nonlocal hc
                _, hc = tl(xt, hc)
                torch.cuda.synchronize()

            def torch_seq():
                tl(xst, hc)
                torch.cuda.synchronize()

            t_torch = median_time(torch_step, min_time)
            t_torch_seq = median_time(torch_seq, min_time) / block
        row = {
            "hidden": n, "batch": b, "max_abs_diff_vs_torch": diff,
            "tinyrnn_step_device_us": median_time(ours_device, min_time) * 1e6,
            "tinyrnn_step_host_us": median_time(ours_host, min_time) * 1e6,
            "torch_step_us": t_torch * 1e6,
            "tinyrnn_process_per_step_us": median_time(ours_process, min_time) / block * 1e6,
            "torch_seq_per_step_us": t_torch_seq * 1e6,
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[dict], device: str, tf32: bool = False) -> str:
    head = (f"\n### GPU: LSTM {rows[0]['hidden']} per step, {device}, torch TF32 {'on' if tf32 else 'off'}\n\n"
            "| streams | tinyrnn step, device arrays (us) | tinyrnn step, numpy (us) | torch cuDNN step (us) | "
            "speed-up | tinyrnn process /step (us) | torch seq /step (us) | max abs diff |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    body = "".join(
        f"| {r['batch']} | {r['tinyrnn_step_device_us']:.1f} | {r['tinyrnn_step_host_us']:.1f} | "
        f"{r['torch_step_us']:.1f} | {r['torch_step_us'] / r['tinyrnn_step_device_us']:.2f}x | "
        f"{r['tinyrnn_process_per_step_us']:.2f} | {r['torch_seq_per_step_us']:.2f} | "
        f"{r['max_abs_diff_vs_torch']:.1e} |\n" for r in rows)
    return head + body


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024, 16384])
    ap.add_argument("--block", type=int, default=64, help="steps per process() call")
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--markdown", action="store_true", help="print a RESULTS.md table")
    ap.add_argument("--allow-tf32", action="store_true", help="let cuDNN use TF32 tensor cores (torch's default)")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_bench needs a CUDA build of torch and a GPU")
    device = torch.cuda.get_device_name(0)
    rows = bench(args.hidden, args.batches, args.block, args.min_time, args.allow_tf32)
    result = {"device": device, "torch_tf32": args.allow_tf32, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(markdown(rows, device, args.allow_tf32) if args.markdown else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
