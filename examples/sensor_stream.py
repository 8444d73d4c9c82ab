"""Flag anomalies in a sensor signal as the samples arrive, one step at a time.

A small LSTM predicts the next reading of a (synthetic) temperature sensor; each new reading
is compared with the prediction made one step earlier, and a reading that misses it by more
than a threshold is flagged the moment it arrives. No batch, no look-ahead: this is the
shape of an edge device reading a sensor.

The model is fitted here, in a couple of seconds and with numpy alone (no torch): the
LSTM's weights are fixed random ones (a "reservoir": its state is a rich, fading summary of
the recent readings) and only the Dense read-out on top is trained, by ridge regression on
normal data. The threshold is set from the read-out's errors on held-out normal data.
When a reading is flagged, the stream is fed the model's own prediction instead, so one bad
reading does not throw off the predictions that follow and a stuck or shifted sensor keeps
being flagged for as long as it misbehaves.

Run:  python examples/sensor_stream.py [--save sensor.trnn]
Prints one line per flagged reading, then a summary of which injected faults were caught.
"""

from __future__ import annotations

import argparse

import numpy as np

import tinyrnn
from tinyrnn import InputSpec, Model
from tinyrnn.layers import Dense, Recurrent

HIDDEN = 48
WARMUP = 60  # readings a fresh stream needs before its predictions mean anything
MEAN, SPREAD = 20.0, 3.0  # the sensor's normal level and swing, to scale readings to ~[-1, 1]


def sensor(n: int, rng, start: int = 0) -> np.ndarray:
    """``n`` readings (float32) of a normal sensor: a slow cycle, a faster ripple, noise."""
    t = np.arange(start, start + n)
    x = MEAN + 2.5 * np.sin(2 * np.pi * t / 120) + 0.8 * np.sin(2 * np.pi * t / 29 + 1.0)
    return (x + rng.normal(0, 0.08, n)).astype(np.float32)


def with_faults(x: np.ndarray) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    """A copy of ``x`` with three faults injected, and where each one lies (first, last)."""
    x = x.copy()
    faults = {"spike": (300, 300), "loose connector": (600, 659), "offset drift": (900, len(x) - 1)}
    x[300] += 4.0
    x[600:660] += np.random.default_rng(1).normal(0.0, 0.8, 60).astype(np.float32)
    x[900:] += np.linspace(0.0, 3.0, len(x) - 900, dtype=np.float32)
    return x, faults


def reservoir(rng) -> Recurrent:
    """An LSTM with fixed random weights (ONNX layout, gate order i, o, f, c)."""
    W = rng.normal(0, 1.0, (1, 4 * HIDDEN, 1))
    R = rng.normal(0, 1.0 / np.sqrt(HIDDEN), (1, 4 * HIDDEN, HIDDEN))
    B = np.zeros((1, 8 * HIDDEN))
    B[0, 2 * HIDDEN:3 * HIDDEN] = 1.0  # forget-gate bias: keep a longer memory
    return Recurrent.from_onnx("lstm", "lstm", W, R, B)


def fit(rng, n_train: int = 3000, n_valid: int = 1000) -> tuple[Model, float]:
    """Fit the read-out on normal data; return the model and the alarm threshold (scaled units)."""
    lstm = reservoir(rng)
    states = Model([lstm], InputSpec.features(1))
    x = (sensor(n_train + n_valid, rng) - MEAN) / SPREAD  # (T,)
    h = states.run(x[:, None])  # (T, HIDDEN): the LSTM state after each reading
    feats = np.hstack([h, np.ones((len(h), 1), np.float32)]).astype(np.float64)  # (T, HIDDEN+1)
    tr, va = slice(50, n_train - 1), slice(n_train, n_train + n_valid - 1)  # skip the warm-up
    A, y = feats[tr], x[tr.start + 1:tr.stop + 1]  # predict the next reading
    coef = np.linalg.solve(A.T @ A + 1e-4 * np.eye(A.shape[1]), A.T @ y)  # ridge regression
    resid = feats[va] @ coef - x[va.start + 1:va.stop + 1]
    head = Dense("next", None, {"W": coef[:-1, None].astype(np.float32),
                                "b": coef[-1:].astype(np.float32)}, HIDDEN, 1)
    model = Model([lstm, head], InputSpec.features(1),
                  metadata={"description": "next-reading predictor for examples/sensor_stream.py"})
    threshold = 6.0 * float(resid.std())
    return model, threshold


def monitor(model: Model, readings: np.ndarray, threshold: float):
    """Yield ``(t, reading, predicted)`` for every reading that misses the prediction by
    more than ``threshold`` (scaled units), as the readings arrive one by one."""
    stream = model.stream()
    predicted = None
    for t, reading in enumerate(readings):
        x = (reading - MEAN) / SPREAD
        if t >= WARMUP and abs(x - predicted) > threshold:
            yield t, float(reading), float(predicted * SPREAD + MEAN)
        predicted = float(stream.step(np.array([x], np.float32))[0])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Flag sensor anomalies sample by sample with a small LSTM.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", help="also write the fitted model to this .trnn file")
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    model, threshold = fit(rng)
    print(model)
    print(f"alarm when a reading misses its prediction by more than {threshold * SPREAD:.3f} degrees")
    if args.save:
        model.save(args.save)
        model = tinyrnn.load(args.save)  # run from the file, as a device would
    readings, faults = with_faults(sensor(1200, rng, start=4000))
    flagged = []
    for t, reading, predicted in monitor(model, readings, threshold):
        flagged.append(t)
        print(f"t={t:5d}  reading {reading:7.3f}  expected {predicted:7.3f}  <- anomaly")
    caught = {name: next((t for t in flagged if a <= t <= b), None) for name, (a, b) in faults.items()}
    inside = [t for t in flagged if any(a <= t <= b + 5 for a, b in faults.values())]
    false_alarms = len(flagged) - len(inside)
    for name, t in caught.items():
        a = faults[name][0]
        print(f"{name:15s} starts at t={a}: " + ("missed" if t is None else f"flagged at t={t} ({t - a} steps in)"))
    print(f"{len(flagged)} readings flagged, {false_alarms} outside the injected faults")
    return {"caught": caught, "false_alarms": false_alarms, "flagged": flagged}


if __name__ == "__main__":
    main()
