"""Where a float32 LSTM step's time goes, layer by layer of the call, and what a long run is made of.

    python benchmarks/step_parts.py [--hidden 128]     # one step of LSTM I = H, batch 1
    python benchmarks/step_parts.py --run             # model.run of LSTM 256, T = 1000

A step of a large LSTM is two column-panel products (x·W, h·R; ``simd.panels_matvec``)
inside the recurrent kernel, the kernel behind numba's argument unboxing, a ``Plan`` and
then ``Stream.step``'s Python. This times each layer alone, so that the differences say
what each costs: the products (and R's panels walked twice, the same bytes as W's and R's
from a matrix half the size: whether the bytes or their walk is the limit), the kernel
through its numba dispatcher, ``Plan.run`` and ``Stream.step``. The parts take turns
(``common.interleaved_times``: each its fastest round, over the same stretches of this
machine's speed); the products loop inside numba, so no Python call is in their time.

``--run`` times ``model.run`` of LSTM 256 over T = 1000 steps with 5 inputs (R streamed
every step, next to no input product) and with 256 (the same plus the hoisted input
product): the difference is what the input product costs on top of the recurrence.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from numba import njit

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from builders import random_recurrent, single_layer_model  # noqa: E402
from common import interleaved_times  # noqa: E402

from tinyrnn.backends import cpu_kernels as K  # noqa: E402
from tinyrnn.backends.cpu import build_plan, new_state  # noqa: E402
from tinyrnn.backends.simd import panels_matvec  # noqa: E402


REPS = 100  # products per call of _two_products: a numba loop, no Python call in each


@njit(cache=False, nogil=True)
def _two_products(h, P1, P2, gx):
    for _ in range(REPS):
        panels_matvec(h, 0, 0, P1, 0, P1.shape[0], gx, 0, 0, 0)
        panels_matvec(h, 0, 0, P2, 0, P2.shape[0], gx, 0, 0, 1)


def step_parts(H: int) -> None:
    layer, _ = random_recurrent(np.random.default_rng(0), "lstm", H, H, scale=0.1)
    model = single_layer_model(layer)
    plan = build_plan(model, 1, 1, new_state(model, 1))
    (_, args), = plan.calls
    _, _, W, R, Wp, Rp = args[:6]
    if Wp.shape[1] == 0 or Rp.shape[1] == 0:
        raise SystemExit(f"LSTM {H}: W or R has no panels (too small); try --hidden 128 or more")
    dispatcher = K.sequence_kernel("lstm", True, False, False)  # what a one-step plan of I = H >= 128 binds
    stream = model.stream()
    x = np.random.default_rng(1).standard_normal(H).astype(np.float32)
    h = np.random.default_rng(2).standard_normal((1, 1, H)).astype(np.float32)
    gx = np.zeros((1, 1, 4 * H), np.float32)
    kib = (W.nbytes + R.nbytes) // 1024
    parts = {
        f"W's then R's panels ({kib} KiB)": (lambda: _two_products(h, Wp[0], Rp[0], gx), REPS),
        f"R's panels twice ({kib // 2} KiB, read twice)": (lambda: _two_products(h, Rp[0], Rp[0], gx), REPS),
        "the kernel through numba's dispatcher": (lambda: dispatcher(*args), 1),
        "Plan.run (the bound entry point)": (plan.run, 1),
        "Stream.step": (lambda: stream.step(x), 1),
    }
    times = interleaved_times({name: fn for name, (fn, _) in parts.items()})
    print(f"LSTM {H} -> {H}, one step, batch 1 (float32)\n")
    print("| part | µs |\n|---|---:|")
    for name, (_, per_call) in parts.items():
        print(f"| {name} | {times[name] / per_call * 1e6:.2f} |")


def run_parts() -> None:
    runs = {}
    for I in (5, 256):
        layer, _ = random_recurrent(np.random.default_rng(0), "lstm", I, 256, scale=0.1)
        model = single_layer_model(layer)
        x = np.random.default_rng(1).standard_normal((1, 1000, I)).astype(np.float32)
        runs[f"{I} inputs"] = lambda model=model, x=x: model.run(x)
    times = interleaved_times(runs)
    print("| LSTM 256, T = 1000, model.run | ms |\n|---|---:|")
    for name, t in times.items():
        print(f"| {name} | {t * 1e3:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--run", action="store_true", help="the long run's two parts instead of a step")
    args = parser.parse_args()
    if args.run:
        run_parts()
    else:
        step_parts(args.hidden)


if __name__ == "__main__":
    main()
