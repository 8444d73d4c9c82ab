"""Long streams: does a quantized LSTM drift away from float32?

    python benchmarks/quant_drift.py                      # 100k steps, LSTM 64 units
    python benchmarks/quant_drift.py --steps 5000 --window 1000

One LSTM (input 16, hidden 64, random weights at a few recurrent gains) runs the same
random input as float32, int8 and fp16 streams, 10k-step blocks through
``stream.process``. Printed per window: the largest |h_quantized - h_float32| and
|c_quantized - c_float32| seen in it. Then the reason the error stays bounded, measured:
a perturbation put into the float32 cell state at one step, followed for 200 steps.

Why it stays bounded. At every step the quantized weights move each pre-activation by at
most ``e = s/2 * (|x|_1 + |h|_1)`` (``s`` the column's int8 step), and |h| < 1 because
``h = o * tanh(c)``: the error *injected* per step is bounded and does not grow with t.
What was injected earlier is carried by ``c_t = f * c_{t-1} + i * g``: forget gates below 1
and saturating sigmoid/tanh derivatives shrink it by some factor rho < 1 per step on
average, so the accumulated error obeys ``E_t <= rho * E_{t-1} + e`` and stays below
``e / (1 - rho)``: a constant, not a drift. If a model is chaotic (rho > 1, a positive
Lyapunov exponent), any perturbation grows, float32 rounding included; h still cannot
leave (-1, 1), and the script's decay table shows which regime a model is in.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinyrnn import InputSpec, Model  # noqa: E402
from tinyrnn.layers import Recurrent  # noqa: E402


def drift_lstm(hidden: int = 64, inputs: int = 16, gain: float = 1.0, seed: int = 0) -> Model:
    """An LSTM with Gaussian weights: W ~ N(0, 1/I), R ~ N(0, gain^2/H), forget bias +1.

    ``gain`` scales the recurrent matrix: 1 is an ordinary initialisation, larger gains
    give longer memory and, eventually, chaotic dynamics.
    """
    rng = np.random.default_rng(seed)
    H, I = hidden, inputs
    W = rng.normal(0, 1 / np.sqrt(I), (1, 4 * H, I))
    R = rng.normal(0, gain / np.sqrt(H), (1, 4 * H, H))
    B = np.zeros((1, 8 * H))
    B[0, 2 * H:3 * H] = 1.0  # ONNX gate order i, o, f, c: the forget gate's input bias
    layer = Recurrent.from_onnx("lstm", "lstm", W, R, B)
    return Model([layer], InputSpec.features(I))


def drift(model: Model, steps: int, window: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Max |h - h_f32| and |c - c_f32| per window of ``steps``, for int8 and fp16 streams.

    Returns ``{"int8_h": (windows,), "int8_c": ..., "fp16_h": ..., "fp16_c": ...}``.
    """
    rng = np.random.default_rng(seed)
    I = model.input.shape[0]
    streams = {"f32": model.stream(), "int8": model.quantize("int8").stream(),
               "fp16": model.quantize("fp16").stream()}
    out = {f"{s}_{v}": [] for s in ("int8", "fp16") for v in ("h", "c")}
    block = min(window, 10_000)
    for w0 in range(0, steps, window):
        worst = dict.fromkeys(out, 0.0)
        for b0 in range(w0, min(w0 + window, steps), block):
            x = rng.standard_normal((min(block, steps - b0), I)).astype(np.float32)
            ys = {k: s.process(x) for k, s in streams.items()}
            cs = {k: s.state["lstm.c"] for k, s in streams.items()}
            for s in ("int8", "fp16"):
                worst[f"{s}_h"] = max(worst[f"{s}_h"], float(np.abs(ys[s] - ys["f32"]).max()))
                # the cell state is only compared at block ends (that is where a stream shows it)
                worst[f"{s}_c"] = max(worst[f"{s}_c"], float(np.abs(cs[s] - cs["f32"]).max()))
        for k in out:
            out[k].append(worst[k])
    return {k: np.array(v) for k, v in out.items()}


def perturbation_decay(model: Model, delta: float = 1e-3, warmup: int = 1000, horizon: int = 200,
                       seed: int = 2) -> np.ndarray:
    """How a perturbation of size ``delta`` put into c at one step evolves (float32).

    Runs ``warmup`` steps, copies the stream, adds a random ``delta``-sized vector to the
    copy's c, and returns ``max|h - h'|`` for each of the next ``horizon`` steps, averaged
    over 8 trials (``(horizon,)``).
    """
    rng = np.random.default_rng(seed)
    I = model.input.shape[0]
    H = model.layers[0].hidden_size
    trials = []
    for _ in range(8):
        base = model.stream()
        base.process(rng.standard_normal((warmup, I)).astype(np.float32))
        other = model.stream()
        state = base.state
        state["lstm.c"] = state["lstm.c"] + delta * np.sign(rng.standard_normal((1, 1, H))).astype(np.float32)
        other.state = state
        x = rng.standard_normal((horizon, I)).astype(np.float32)
        trials.append(np.abs(base.process(x) - other.process(x)).max(-1))
    return np.mean(trials, axis=0)


def injected_error(model: Model, scheme: str, samples: int = 500, seed: int = 3) -> float:
    """The error one quantized step adds: max |h_q - h_f32| after one step from the same
    float32 state, over ``samples`` states of a float32 stream (the ``e`` of the docstring)."""
    rng = np.random.default_rng(seed)
    I = model.input.shape[0]
    ref, quant = model.stream(), model.quantize(scheme).stream()
    worst = 0.0
    for _ in range(samples):
        ref.process(rng.standard_normal((10, I)).astype(np.float32))
        quant.state = ref.state
        x = rng.standard_normal(I).astype(np.float32)
        snapshot = ref.state
        worst = max(worst, float(np.abs(quant.step(x) - ref.step(x)).max()))
        ref.state = snapshot  # the probe step must not change the reference's path
    return worst


def contraction(decay: np.ndarray, steps: int = 20) -> float:
    """Mean factor per step by which a perturbation shrinks (< 1) or grows (> 1).

    Measured over the first ``steps`` steps only: later, a decaying perturbation reaches
    float32's rounding floor (~1e-7) and stops shrinking.
    """
    return float((decay[steps - 1] / decay[0]) ** (1 / (steps - 1)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--window", type=int, default=10_000)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--gains", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    args = p.parse_args(argv)

    for gain in args.gains:
        model = drift_lstm(args.hidden, gain=gain)
        d = drift(model, args.steps, args.window)
        print(f"\n### LSTM 16 -> {args.hidden}, recurrent gain {gain:g}, {args.steps:,} steps\n")
        print("| steps | int8 max abs(dh) | int8 max abs(dc) | fp16 max abs(dh) | fp16 max abs(dc) |")
        print("|---|---|---|---|---|")
        for i in range(len(d["int8_h"])):
            lo, hi = i * args.window, min((i + 1) * args.window, args.steps)
            print(f"| {lo:,}-{hi:,} | {d['int8_h'][i]:.2e} | {d['int8_c'][i]:.2e} | "
                  f"{d['fp16_h'][i]:.2e} | {d['fp16_c'][i]:.2e} |")
        decay = perturbation_decay(model)
        picks = [k for k in (1, 5, 10, 20, 50, 100, 200) if k <= len(decay)]
        print(f"\nperturbation of 1e-3 in c, max abs(dh) after k steps (mean of 8): "
              + ", ".join(f"k={k}: {decay[k - 1]:.1e}" for k in picks)
              + f"; factor per step over the first 20: {contraction(decay):.3f}")
        rho = contraction(decay)
        for scheme in ("int8", "fp16"):
            e = injected_error(model, scheme)
            if rho < 1:
                bound = f"e / (1 - rho) = {e / (1 - rho):.2e}"
            else:  # float32 rounding (~1e-7) is a perturbation too: it reaches O(1) as fast
                bound = (f"no bound: rho >= 1, the float32 model is chaotic (a 1e-7 perturbation "
                         f"reaches 1 in about {np.log(1e7) / np.log(rho):.0f} steps)")
            print(f"{scheme}: one step injects at most e = {e:.2e} into h; {bound}; "
                  f"observed max {d[scheme + '_h'].max():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
