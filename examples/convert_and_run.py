"""From a PyTorch model to a tinyrnn stream: PyTorch -> ONNX -> .trnn -> step by step.

1. Build a small PyTorch sequence model (an LSTM and a linear read-out; in real use, your
   trained model) and export it to ONNX with PyTorch's own exporter.
2. Convert the ONNX file to a ``.trnn`` file with ``tinyrnn_converters.from_onnx``
   (what ``tinyrnn convert model.onnx -o model.trnn`` does).
3. Load the ``.trnn`` file with nothing but tinyrnn (numpy + numba) and run it as a stream,
   one input vector at a time, checking every step against PyTorch's output for the whole
   sequence.

Needs the converter extras: ``pip install -e ".[torch,onnx]"``.
Run:  python examples/convert_and_run.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

FEATURES, HIDDEN, CLASSES = 8, 32, 3


def pytorch_model():
    """A seeded PyTorch model: (B, T, 8) features -> (B, T, 3) scores per step."""
    import torch
    import torch.nn as nn

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(FEATURES, HIDDEN, batch_first=True)
            self.head = nn.Linear(HIDDEN, CLASSES)

        def forward(self, x):
            y, _ = self.lstm(x)
            return self.head(y)

    torch.manual_seed(0)
    return Tagger().eval()


def export_onnx(module, path: str) -> None:
    """Export with the TorchScript exporter, which writes ``nn.LSTM`` as one ONNX LSTM node;
    batch and time are dynamic so the file takes sequences of any length."""
    import warnings

    import torch

    x = torch.zeros(1, 5, FEATURES)
    with warnings.catch_warnings():  # the tracer's notes on Python-side shape checks do not apply here
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), path, dynamo=False, input_names=["input"], output_names=["scores"],
                          dynamic_axes={"input": {0: "batch", 1: "time"}, "scores": {0: "batch", 1: "time"}})


def main(argv=None) -> float:
    import torch

    import tinyrnn
    from tinyrnn_converters import from_onnx

    p = argparse.ArgumentParser(description="PyTorch -> ONNX -> .trnn -> a stream, checked step by step.")
    p.add_argument("--out", help="directory for model.onnx and model.trnn (default: a temporary one)")
    args = p.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="tinyrnn-example-")
    os.makedirs(out, exist_ok=True)
    onnx_path, trnn_path = os.path.join(out, "model.onnx"), os.path.join(out, "model.trnn")

    module = pytorch_model()
    export_onnx(module, onnx_path)
    print(f"1. PyTorch -> {onnx_path} ({os.path.getsize(onnx_path):,} bytes)")

    from_onnx(onnx_path).save(trnn_path)
    print(f"2. ONNX -> {trnn_path} ({os.path.getsize(trnn_path):,} bytes)")

    model = tinyrnn.load(trnn_path)
    print(f"3. loaded: {model}")
    xs = np.random.default_rng(0).normal(size=(50, FEATURES)).astype(np.float32)  # (T, F)
    with torch.no_grad():
        want = module(torch.from_numpy(xs[None]))[0].numpy()  # (T, 3), the whole sequence at once
    stream = model.stream()
    worst = 0.0
    for t, x_t in enumerate(xs):
        y_t = stream.step(x_t)  # (3,), one step, state kept inside the stream
        worst = max(worst, float(np.abs(y_t - want[t]).max()))
        if t < 3 or t == len(xs) - 1:
            print(f"   step {t:2d}: tinyrnn {np.array2string(y_t, precision=4)}  "
                  f"pytorch {np.array2string(want[t], precision=4)}")
    print(f"4. {len(xs)} steps streamed; largest difference from PyTorch: {worst:.2e}")
    if worst > 1e-4:
        raise SystemExit(f"the stream disagrees with PyTorch by {worst:.2e} (more than 1e-4)")
    return worst


if __name__ == "__main__":
    main()
