"""Instructions per step of ``Stream.process``, counted by valgrind's cachegrind.

    python benchmarks/instructions.py [--cell lstm] [--input 1] [--hidden 16] [--steps 48000]
    python benchmarks/instructions.py --annotate hot.txt [--cell ...]   # where they go

Timings on a shared machine swing by 30% or more; an instruction count does not. This runs
a small per-sample model in two child processes under ``valgrind --tool=cachegrind``, one
that streams ``--steps`` samples twice and one that does not, and prints the difference per
step: the kernel's instruction count, free of start-up and compile work.

Both children use one fixed numba target (``NUMBA_CPU_NAME=haswell`` with AVX2/FMA, set
below) and a private cache, which this script fills natively first: numba keys its cache by
CPU, valgrind presents its own, and compiling under valgrind takes minutes. Needs valgrind
on PATH; the count is for that target, so compare runs of this script, not against cycles.

``--annotate FILE`` says where the count goes inside the recurrent kernel: the child also
writes the kernel's address and machine code (numba JIT code has no symbols for a
profiler), valgrind's callgrind counts executions per instruction address, objdump
disassembles the code, and FILE gets every executed instruction with its executions per
step, grouped into address runs with their totals, largest first on stdout. This is how
the per-step run-time alias checks and reference counting were found.
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
model = single_layer_model(layer)
s = model.stream(batch=1)
x = np.random.default_rng(1).standard_normal((1, {steps}, {inp})).astype(np.float32)
s.process(x[:, :64])  # compiles the kernel variant the long calls below run (see hoisted())
if {dump!r}:
    import ctypes
    from tinyrnn.backends import cpu_kernels as K
    from tinyrnn.backends.cpu import prepared
    hoist = K.hoisted(64, {inp})
    sizes = K.sized(True, False, hoist, {hidden}, {inp}, prepared(model)[0]["Rp"], 0)
    (sig, cres), = K.sequence_kernel({cell!r}, True, False, hoist, *sizes).overloads.items()
    addr = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
    for line in open("/proc/self/maps"):
        lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
        if lo <= addr < hi:
            n = min(hi - addr, 1 << 20)
            open({dump!r} + ".bin", "wb").write(ctypes.string_at(addr, n))
            open({dump!r}, "w").write(f"{{addr}} {{n}}")
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


def _annotate(code: str, env: dict, steps: int, out: str, tmp: str) -> None:
    """Executions per step of each instruction of the recurrent kernel, into ``out``."""
    cg = os.path.join(tmp, "callgrind.out")
    r = subprocess.run(["valgrind", "--tool=callgrind", "--dump-instr=yes", f"--callgrind-out-file={cg}",
                        sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    meta = os.path.join(tmp, "kernel")
    addr, size = (int(v) for v in open(meta).read().split())
    counts: dict[int, int] = {}
    pos, after_call = 0, False
    for line in open(cg):  # callgrind's format: "instr line cost" rows, positions relative (+n/-n/*)
        tok = line.split()
        if not tok:
            continue
        if tok[0].startswith("calls="):
            after_call = True  # the next row is the call's inclusive cost, not this code's own
            continue
        if tok[0].startswith("0x"):
            pos = int(tok[0], 16)
        elif tok[0][0] in "+-" and tok[0][1:].isdigit():
            pos += int(tok[0])
        elif tok[0] != "*":
            continue
        if after_call:
            after_call = False
        elif len(tok) > 2 and addr <= pos < addr + size:
            counts[pos] = counts.get(pos, 0) + int(tok[2])
    dis = subprocess.run(["objdump", "-D", "-b", "binary", "-m", "i386:x86-64", f"--adjust-vma={addr:#x}",
                          meta + ".bin"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in dis.splitlines():
        m = re.match(r"^\s*([0-9a-f]+):\s+(?:[0-9a-f]{2} )+\s*(.*)$", line)
        if m and counts.get(int(m.group(1), 16), 0) >= steps / 2:
            rows.append((int(m.group(1), 16) - addr, counts[int(m.group(1), 16)] / steps, m.group(2)))
    runs: list[list] = []
    for row in rows:  # address runs: instructions no more than 64 bytes apart
        if not runs or row[0] - runs[-1][-1][0] > 64:
            runs.append([])
        runs[-1].append(row)
    total = sum(r[1] for r in rows)
    with open(out, "w") as f:
        for run in runs:
            f.write(f"---- {sum(r[1] for r in run):.1f} per step, offsets {run[0][0]:#x}-{run[-1][0]:#x}\n")
            f.writelines(f"{n:9.2f} {off:#7x}  {ins}\n" for off, n, ins in run)
    print(f"kernel: {total:.0f} instructions per step; largest address runs (per step, offsets):")
    for run in sorted(runs, key=lambda r: -sum(x[1] for x in r))[:8]:
        print(f"  {sum(r[1] for r in run):9.1f}  {run[0][0]:#x}-{run[-1][0]:#x}  ({len(run)} instructions)")
    print(f"every executed instruction: {out}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cell", default="lstm", choices=["lstm", "gru", "rnn"])
    p.add_argument("--input", type=int, default=1)
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--steps", type=int, default=48000)
    p.add_argument("--annotate", metavar="FILE", help="write per-instruction counts of the kernel to FILE")
    args = p.parse_args(argv)
    for tool in ["valgrind"] + (["objdump"] if args.annotate else []):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found")
    tests = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
    cache = tempfile.mkdtemp(prefix="tinyrnn-instr-")
    # one thread everywhere: an idle BLAS or OpenMP worker spinning under valgrind adds to the count
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0", **TARGET)

    def child(reps: int, dump: str = "") -> str:
        return CHILD.format(tests=tests, cell=args.cell, inp=args.input, hidden=args.hidden,
                            steps=args.steps, reps=reps, dump=dump)

    subprocess.run([sys.executable, "-c", child(0)], env=env, check=True)  # compile natively into the cache
    try:
        if args.annotate:
            steps = min(args.steps, 20000)  # callgrind is slower than cachegrind
            args.steps = steps
            _annotate(child(1, os.path.join(cache, "kernel")), env, steps, args.annotate, cache)
            return 0
        base, work = _count(child(0), env), _count(child(2), env)
        per_step = (work - base) / (2 * args.steps)
        print(f"{args.cell} {args.input}->{args.hidden}: {per_step:.0f} instructions per step "
              f"(cachegrind, {TARGET['NUMBA_CPU_NAME']} target)")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
