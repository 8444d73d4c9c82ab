"""Instructions per step of ``Stream.process``, counted by valgrind's cachegrind.

    python benchmarks/instructions.py [--cell lstm] [--input 1] [--hidden 16] [--steps 48000]

Timings on a shared machine swing by 30% or more; an instruction count does not. This runs
a small per-sample model in two child processes under ``valgrind --tool=cachegrind``, one
that streams ``--steps`` samples twice and one that does not, and prints the difference per
step: the kernel's instruction count, free of start-up and compile work.

Both children use one fixed numba target (``NUMBA_CPU_NAME=haswell`` with AVX2/FMA, set
below) and a private cache, which this script fills natively first: numba keys its cache by
CPU, valgrind presents its own, and compiling under valgrind takes minutes. Needs valgrind
on PATH; the count is for that target, so compare runs of this script, not against cycles.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

CHILD = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from builders import random_recurrent, single_layer_model
layer, _ = random_recurrent(np.random.default_rng(0), {cell!r}, {inp}, {hidden})
s = single_layer_model(layer).stream(batch=1)
x = np.random.default_rng(1).standard_normal((1, {steps}, {inp})).astype(np.float32)
s.process(x[:, :10])
for _ in range({reps}):
    s.process(x)
"""

TARGET = {
    "NUMBA_CPU_NAME": "haswell",
    "NUMBA_CPU_FEATURES": "+avx,+avx2,+fma,+f16c,+bmi,+bmi2,+lzcnt,+movbe,+popcnt,+cx16,"
                          "+sse3,+ssse3,+sse4.1,+sse4.2",
}


def _count(code: str, env: dict) -> int:
    r = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                        sys.executable, "-c", code], env=env, capture_output=True, text=True)
    m = re.search(r"I\s+refs:\s+([\d,]+)", r.stderr)
    if r.returncode or not m:
        raise RuntimeError(r.stderr[-2000:])
    return int(m.group(1).replace(",", ""))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cell", default="lstm", choices=["lstm", "gru", "rnn"])
    p.add_argument("--input", type=int, default=1)
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--steps", type=int, default=48000)
    args = p.parse_args(argv)
    if not shutil.which("valgrind"):
        sys.exit("valgrind not found")
    tests = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
    cache = tempfile.mkdtemp(prefix="tinyrnn-instr-")
    # one thread everywhere: an idle BLAS or OpenMP worker spinning under valgrind adds to the count
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0", **TARGET)
    code = {reps: CHILD.format(tests=tests, cell=args.cell, inp=args.input, hidden=args.hidden,
                               steps=args.steps, reps=reps) for reps in (0, 2)}
    subprocess.run([sys.executable, "-c", code[0]], env=env, check=True)  # compile natively into the cache
    base, work = _count(code[0], env), _count(code[2], env)
    per_step = (work - base) / (2 * args.steps)
    print(f"{args.cell} {args.input}->{args.hidden}: {per_step:.0f} instructions per step "
          f"(cachegrind, {TARGET['NUMBA_CPU_NAME']} target)")
    shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
