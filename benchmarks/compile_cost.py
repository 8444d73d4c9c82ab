"""Where a cold (uncached) compile goes: CPU seconds per kernel and per numba compiler pass.

    python benchmarks/compile_cost.py [MODEL] [--passes N]

Loads MODEL (default: the shipped text model), points numba at an empty cache directory,
builds a stream and runs one step, then prints the total CPU time and, for every kernel
that compiled, numba's own timers for its slowest passes
(``dispatcher.overloads[sig].metadata["pipeline_times"]``). Run it in a fresh process: a
warm in-process dispatcher compiles nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", help="a .trnn file (default: the shipped model)")
    p.add_argument("--passes", type=int, default=6, help="slowest passes shown per kernel")
    args = p.parse_args(argv)
    if "numba" in sys.modules:
        sys.exit("run in a fresh process: numba is already imported")
    cache = tempfile.mkdtemp(prefix="tinyrnn-cold-")
    os.environ["NUMBA_CACHE_DIR"] = cache  # read by numba at import

    import numpy as np

    import tinyrnn
    from tinyrnn.backends import cpu_kernels, graph_kernels

    model = tinyrnn.load(args.model) if args.model else tinyrnn.default_model()
    t0 = time.process_time()
    stream = model.stream()
    x = 0 if model.input.tokens else np.zeros(model.input.shape, np.float32)
    stream.step(x)
    total = time.process_time() - t0
    print(f"cold stream + first step: {total:.2f} s CPU (cache {cache})")
    kernels = [getattr(mod, n) for mod in (cpu_kernels, graph_kernels) for n in dir(mod)]
    for fn in kernels:
        for sig, cres in list(getattr(fn, "overloads", {}).items()):
            times = cres.metadata.get("pipeline_times", {}).get("nopython", {})
            rows = sorted(((t.init + t.run + t.finalize, name) for name, t in times.items()), reverse=True)
            print(f"{fn.py_func.__name__}: {sum(r[0] for r in rows):.2f} s")
            for sec, name in rows[:args.passes]:
                print(f"    {sec:6.2f} s  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
