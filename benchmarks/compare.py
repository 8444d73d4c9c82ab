"""tinyrnn beside PyTorch and onnxruntime, same weights, same run, one thread each.

    python benchmarks/compare.py                 # the table, as markdown
    python benchmarks/compare.py --json out.json # also the raw numbers

Workloads (each checks first that the three runtimes agree to 1e-4):

* ``step LSTM n``: one step of one stream, LSTM with I = H = n. tinyrnn ``stream.step``;
  torch ``nn.LSTMCell``; onnxruntime a one-step LSTM session with the state fed back.
* ``process LSTM 1->16, 48000 steps``: a per-sample audio-style stream. tinyrnn
  ``stream.process``; torch ``nn.LSTM`` over the whole sequence; onnxruntime the same.

Ratios are tinyrnn's time over the other runtime's: below 1 means tinyrnn is faster.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import median_time, onnx_recurrent_session, single_thread, tinyrnn_from_torch, torch_lstm  # noqa: E402


def bench_step(n: int) -> dict:
    import torch

    lstm = torch_lstm(n, n)
    cell = torch.nn.LSTMCell(n, n).eval()
    cell.load_state_dict({"weight_ih": lstm.weight_ih_l0, "weight_hh": lstm.weight_hh_l0,
                          "bias_ih": lstm.bias_ih_l0, "bias_hh": lstm.bias_hh_l0})
    model = tinyrnn_from_torch(lstm)
    sess = onnx_recurrent_session(lstm, seq_len=1)
    x = np.random.default_rng(0).normal(size=n).astype(np.float32)

    stream = model.stream()
    xt = torch.from_numpy(x)[None]
    state = [torch.zeros(1, n), torch.zeros(1, n)]
    feeds = {"X": x.reshape(1, 1, n), "initial_h": np.zeros((1, 1, n), np.float32),
             "initial_c": np.zeros((1, 1, n), np.float32)}

    def tiny():
        return stream.step(x)

    def tor():
        with torch.inference_mode():
            state[:] = cell(xt, tuple(state))
        return state[0]

    def ort_step():
        _, h, c = sess.run(None, feeds)
        feeds["initial_h"], feeds["initial_c"] = h, c
        return h

    # agreement over a few steps from the same start
    outs = []
    for fn in (tiny, tor, ort_step):
        outs.append(np.asarray([np.asarray(fn()).reshape(-1) for _ in range(3)]))
    assert np.allclose(outs[0], outs[1], atol=1e-4) and np.allclose(outs[0], outs[2], atol=1e-4), "runtimes disagree"
    return {"tinyrnn": median_time(tiny), "torch": median_time(tor), "onnxruntime": median_time(ort_step)}


def bench_process(T: int = 48000) -> dict:
    import torch

    lstm = torch_lstm(1, 16)
    model = tinyrnn_from_torch(lstm)
    sess = onnx_recurrent_session(lstm)
    x = np.random.default_rng(0).normal(size=(T, 1)).astype(np.float32)
    xt = torch.from_numpy(x)[:, None]
    feeds = {"X": x[:, None], "initial_h": np.zeros((1, 1, 16), np.float32),
             "initial_c": np.zeros((1, 1, 16), np.float32)}
    stream = model.stream()

    def tiny():
        stream.reset()
        return stream.process(x)

    def tor():
        with torch.inference_mode():
            return lstm(xt)[0]

    def ort_run():
        return sess.run(None, feeds)[0]

    a, b, c = tiny(), tor().numpy()[:, 0], ort_run()[:, 0, 0]
    assert np.allclose(a, b, atol=1e-4) and np.allclose(a, c, atol=1e-4), "runtimes disagree"
    res = {"tinyrnn": median_time(tiny, repeats=5), "torch": median_time(tor, repeats=5),
           "onnxruntime": median_time(ort_run, repeats=5)}
    return {k: v / T for k, v in res.items()}  # per step


def fmt_time(s: float) -> str:
    if s < 1e-6:
        return f"{s * 1e9:.0f} ns"
    if s < 1e-3:
        return f"{s * 1e6:.2f} µs"
    return f"{s * 1e3:.2f} ms"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the raw numbers here")
    parser.add_argument("--quick", action="store_true", help="fewer sizes (a smoke run)")
    args = parser.parse_args(argv)
    single_thread()
    import onnxruntime
    import torch

    import tinyrnn

    rows = []
    for n in ((32,) if args.quick else (32, 128, 512)):
        rows.append((f"step LSTM {n}, batch 1", bench_step(n)))
    rows.append(("process LSTM 1->16, per step of 48000", bench_process(4800 if args.quick else 48000)))

    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()}; python "
          f"{platform.python_version()}; tinyrnn {tinyrnn.__version__}, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}; one thread each\n")
    print("| workload | tinyrnn | torch | onnxruntime | vs torch | vs onnxruntime |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {fmt_time(r['tinyrnn'])} | {fmt_time(r['torch'])} | {fmt_time(r['onnxruntime'])} "
              f"| {r['tinyrnn'] / r['torch']:.2f}x | {r['tinyrnn'] / r['onnxruntime']:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(rows), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
