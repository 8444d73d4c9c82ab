"""tinyrnn beside PyTorch and onnxruntime: same weights, same run, one thread each.

    python benchmarks/compare.py                  # every workload, as a markdown table
    python benchmarks/compare.py --only step run  # some of them
    python benchmarks/compare.py --json out.json --plot steps.png

Every workload first checks that the runtimes agree (1e-4), then times them taking turns
(``common.interleaved_times``: rounds of a calibrated loop each, for at least 3 s; each
one's fastest round). Ratios are tinyrnn's time over the other's: below 1 means tinyrnn is
faster. Workloads, as in the performance issue:

  step      one step, one stream, LSTM I = H = 32, 128, 512: stream.step vs torch LSTMCell
            vs an onnxruntime one-step LSTM session with the state fed back
  process   a per-sample stream, LSTM 1->16, 48 000 steps in one stream.process call vs
            torch nn.LSTM over the whole sequence
  rtneural  stream.process per step for LSTM 1->32, GRU 1->16, LSTM 64->64 against the
            published RTNeural (Eigen, -O3 -march=native) times on this machine kind
  run       offline, B = 1, T = 1000, LSTM 256: model.run vs nn.LSTM forward vs onnxruntime
  short     offline, one short sequence per call (B = 1, T = 16, LSTM 32): what a call costs
            besides its arithmetic (model.run builds its plan in every call)
  batch     64 streams of LSTM 256 stepping together vs nn.LSTM batch 64 one step and an
            onnxruntime LSTM node with batch 64; and the same 64 streams split over two
            threads (kernels release the GIL)
  quant     int8 and fp16 weights against float32, LSTM 256/512/1024, one step
  startup   a new process: import, load a model, first step (numba cache warm, and cold),
            against `import torch` + first step and an onnxruntime session + first run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    fmt,
    interleaved_rounds,
    interleaved_times,
    onnx_lstm_stepper,
    onnx_recurrent_session,
    single_thread,
    tinyrnn_from_torch,
    torch_lstm,
)

RTNEURAL_NS = {"LSTM 1->32": 244, "GRU 1->16": 110, "LSTM 64->64": 1760}  # from the issue


def _agree(a, b, what):
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if not np.allclose(a, b, atol=1e-4):
        raise AssertionError(f"{what}: runtimes disagree by {np.abs(a - b).max():.2e}")


# --- workloads --------------------------------------------------------------------------


def bench_step(n: int) -> dict:
    """One step of one stream, LSTM I = H = n."""
    import torch

    lstm = torch_lstm(n, n)
    cell = torch.nn.LSTMCell(n, n).eval()
    cell.load_state_dict({"weight_ih": lstm.weight_ih_l0, "weight_hh": lstm.weight_hh_l0,
                          "bias_ih": lstm.bias_ih_l0, "bias_hh": lstm.bias_hh_l0})
    model = tinyrnn_from_torch(lstm)
    x = np.random.default_rng(0).normal(size=n).astype(np.float32)
    ort = onnx_lstm_stepper(lstm, x[None])
    stream = model.stream()
    xt = torch.from_numpy(x)[None]
    state = [torch.zeros(1, n), torch.zeros(1, n)]

    def tiny():
        return stream.step(x)

    def tor():
        with torch.inference_mode():
            state[:] = cell(xt, tuple(state))
        return state[0]

    runs = [np.stack([np.asarray(f()).reshape(-1) for _ in range(3)]) for f in (tiny, tor, ort)]
    _agree(runs[0], runs[1], f"step {n} torch")
    _agree(runs[0], runs[2], f"step {n} onnxruntime")
    return interleaved_times({"tinyrnn": tiny, "torch": tor, "onnxruntime": ort})


def _process_call(module, T: int):
    """A tinyrnn stream of ``module`` and a function that runs ``process`` over T random steps."""
    x = np.random.default_rng(0).normal(size=(T, module.input_size)).astype(np.float32)
    stream = tinyrnn_from_torch(module).stream()

    def tiny():
        stream.reset()
        return stream.process(x)

    return x, tiny


def bench_process(I: int, H: int, T: int) -> dict:
    """Seconds per step of one stream.process call over T steps of an LSTM, beside torch and
    onnxruntime running the same sequence."""
    import torch

    module = torch_lstm(I, H)
    x, tiny = _process_call(module, T)
    sess = onnx_recurrent_session(module)
    xt = torch.from_numpy(x)[:, None]
    feeds = {"X": x[:, None], "initial_h": np.zeros((1, 1, H), np.float32),
             "initial_c": np.zeros((1, 1, H), np.float32)}

    def tor():
        with torch.inference_mode():
            return module(xt)[0]

    def ort():
        return sess.run(None, feeds)[0]

    a = tiny()
    _agree(a, tor().numpy(), "process torch")
    _agree(a, ort(), "process onnxruntime")
    return {k: v / T for k, v in interleaved_times({"tinyrnn": tiny, "torch": tor, "onnxruntime": ort}).items()}


def bench_rtneural(T: int = 48000) -> dict:
    """Seconds per step of ``process`` for RTNeural's three models, taking turns for 10 s.

    Only tinyrnn runs here (RTNeural's times are the issue's), so no other runtime shares
    the machine's slow stretches; the longer span gives each model fast ones to be timed in.
    """
    calls = {name: _process_call(torch_lstm(I, H, cell=cell), T)[1]
             for name, (I, H, cell) in {"LSTM 1->32": (1, 32, "lstm"), "GRU 1->16": (1, 16, "gru"),
                                        "LSTM 64->64": (64, 64, "lstm")}.items()}
    return {k: v / T for k, v in interleaved_times(calls, span=10.0).items()}


def bench_run(H: int = 256, T: int = 1000) -> dict:
    """Offline: one sequence of T steps through LSTM H (I = H)."""
    import torch

    module = torch_lstm(H, H)
    model = tinyrnn_from_torch(module)
    sess = onnx_recurrent_session(module)
    x = np.random.default_rng(0).normal(size=(T, H)).astype(np.float32)
    xt = torch.from_numpy(x)[:, None]
    feeds = {"X": x[:, None], "initial_h": np.zeros((1, 1, H), np.float32),
             "initial_c": np.zeros((1, 1, H), np.float32)}

    def tiny():
        return model.run(x)

    def tor():
        with torch.inference_mode():
            return module(xt)[0]

    def ort():
        return sess.run(None, feeds)[0]

    _agree(tiny(), tor().numpy(), "run torch")
    _agree(tiny(), ort(), "run onnxruntime")
    return interleaved_times({"tinyrnn": tiny, "torch": tor, "onnxruntime": ort})


def bench_short(H: int = 32, T: int = 16) -> dict:
    """Offline, one short sequence per call: ``run``'s fixed cost beside torch's and onnxruntime's."""
    return bench_run(H, T)


def bench_batch(H: int = 256, B: int = 64) -> tuple[dict, dict]:
    """B streams stepping together, and the same streams split over two threads."""
    import torch

    module = torch_lstm(H, H)
    model = tinyrnn_from_torch(module)
    x = np.random.default_rng(0).normal(size=(B, H)).astype(np.float32)
    stream = model.stream(batch=B)
    halves = [model.stream(batch=B // 2), model.stream(batch=B // 2)]
    xt = torch.from_numpy(x)[None]
    state = [torch.zeros(1, B, H), torch.zeros(1, B, H)]

    def tiny():
        return stream.step(x)

    def tor():
        with torch.inference_mode():
            _, (h, c) = module(xt, tuple(state))
            state[:] = [h, c]
        return h

    ort = onnx_lstm_stepper(module, x)

    first = model.stream(batch=B).step(x)
    _agree(first, module(xt)[0].detach().numpy(), "batch torch")
    _agree(first, ort().reshape(B, H), "batch onnxruntime")  # its first step, from zeros
    # two threads, each stepping its own 32 streams 200 times; compare with one thread
    # stepping both halves in turn (same work)
    steps = 200

    def worker(s, xs):
        for _ in range(steps):
            s.step(xs)

    def serial():
        for _ in range(steps):
            halves[0].step(x[:B // 2])
            halves[1].step(x[B // 2:])

    def parallel():
        ts = [threading.Thread(target=worker, args=(halves[i], x[i * B // 2:(i + 1) * B // 2])) for i in (0, 1)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    # the speed-up needs both cores fast at once: the median of each round's ratio, not a
    # ratio of minimums taken in different rounds
    t = interleaved_rounds({"serial": serial, "parallel": parallel}, round_time=0.2, min_rounds=8)
    t1, t2 = min(t["serial"]) / steps, min(t["parallel"]) / steps
    speedup = float(np.median(np.array(t["serial"]) / np.array(t["parallel"])))
    return (interleaved_times({"tinyrnn": tiny, "torch": tor, "onnxruntime": ort}),
            {"one thread": t1, "two threads": t2, "speed-up": speedup})


def bench_quant(n: int) -> dict:
    """One step of LSTM n with float32, fp16 and int8 weights."""
    import torch

    base = tinyrnn_from_torch(torch_lstm(n, n))
    x = np.random.default_rng(0).normal(size=n).astype(np.float32)
    out = np.empty(n, np.float32)
    fns = {}
    for scheme, model in (("float32", base), ("fp16", base.quantize("fp16")), ("int8", base.quantize("int8"))):
        fns[scheme] = (lambda s: lambda: s.step(x, out=out))(model.stream())
    return interleaved_times(fns)


STARTUP_SCRIPTS = {
    "tinyrnn": """
        import numpy as np, tinyrnn
        m = tinyrnn.load({model!r})
        y = m.stream().step(np.zeros({n}, np.float32))
    """,
    "torch": """
        import torch
        torch.set_num_threads(1)
        cell = torch.nn.LSTMCell({n}, {n})
        with torch.inference_mode():
            y = cell(torch.zeros(1, {n}))
    """,
    "onnxruntime": """
        import numpy as np, onnxruntime as ort
        so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
        s = ort.InferenceSession({onnx!r}, so, providers=["CPUExecutionProvider"])
        y = s.run(None, {{"X": np.zeros((1, 1, {n}), np.float32),
                         "initial_h": np.zeros((1, 1, {n}), np.float32),
                         "initial_c": np.zeros((1, 1, {n}), np.float32)}})
    """,
}


def _process_cost(code: str, env=None, runs: int = 5) -> tuple[float, float]:
    """Median wall seconds and max RSS (MB) of a fresh Python running ``code``."""
    # An installed package ships compiled bytecode, as torch's and onnxruntime's do here; with
    # PYTHONDONTWRITEBYTECODE set (some CI images set it), an editable tinyrnn would be
    # compiled from source in every process (~0.1 s) and the comparison would be unfair.
    env = {k: v for k, v in (os.environ if env is None else env).items() if k != "PYTHONDONTWRITEBYTECODE"}
    times, rss = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        # peak RSS from /proc: ru_maxrss of a forked child counts the parent's pages too
        r = subprocess.run([sys.executable, "-c", code + "\nimport sys\nsys.stderr.write([l for l in "
                            "open('/proc/self/status') if l.startswith('VmHWM')][0])"],
                           capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t0)
        if r.returncode:
            raise RuntimeError(r.stderr)
        rss.append(int(r.stderr.strip().splitlines()[-1].split()[1]) / 1024)
    return float(np.median(times)), float(np.median(rss))


def bench_startup(n: int = 128) -> dict:
    """Whole-process cost: interpreter start, imports, model load, first answer."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        module = torch_lstm(n, n)
        model_path = os.path.join(tmp, "m.trnn")
        tinyrnn_from_torch(module).save(model_path)
        onnx_path = os.path.join(tmp, "m.onnx")
        onnx.save(_onnx_model(module), onnx_path)
        res = {}
        for name, script in STARTUP_SCRIPTS.items():
            code = textwrap.dedent(script).format(model=model_path, onnx=onnx_path, n=n)
            res[name] = _process_cost(code)
            if name == "tinyrnn":
                cold_env = dict(os.environ, NUMBA_CACHE_DIR=os.path.join(tmp, "cold-cache"))
                cold = []
                for i in range(3):  # a fresh, empty cache every time
                    cold_env["NUMBA_CACHE_DIR"] = os.path.join(tmp, f"cold-cache-{i}")
                    cold.append(_process_cost(code, cold_env, runs=1))
                res["tinyrnn, cold cache"] = (float(np.median([c[0] for c in cold])),
                                              float(np.median([c[1] for c in cold])))
    return res


def _onnx_model(module):
    """The one-step LSTM graph of ``onnx_recurrent_session`` as a ModelProto."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from common import onnx_weights_from_torch

    W, R, B = onnx_weights_from_torch(module)
    I, H = module.input_size, module.hidden_size
    inputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, s) for k, s in
              (("X", [1, 1, I]), ("initial_h", [1, 1, H]), ("initial_c", [1, 1, H]))]
    outputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, s) for k, s in
               (("Y", [1, 1, 1, H]), ("Y_h", [1, 1, H]), ("Y_c", [1, 1, H]))]
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "initial_h", "initial_c"], ["Y", "Y_h", "Y_c"],
                            hidden_size=H)
    inits = [numpy_helper.from_array(a.astype(np.float32), k) for a, k in ((W, "W"), (R, "R"), (B, "B"))]
    m = helper.make_model(helper.make_graph([node], "lstm", inputs, outputs, inits),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def sweep(sizes) -> dict:
    """Step time against hidden size, for the plot."""
    return {n: bench_step(n) for n in sizes}


# --- report ------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=["step", "process", "rtneural", "run", "short", "batch", "quant",
                                                       "startup"])
    parser.add_argument("--json", help="write the raw numbers here")
    parser.add_argument("--plot", help="plot step time against hidden size (needs matplotlib) to this PNG")
    args = parser.parse_args(argv)
    want = set(args.only or ["step", "process", "rtneural", "run", "short", "batch", "quant", "startup"])
    single_thread()
    import onnxruntime
    import torch

    import tinyrnn

    raw: dict = {}
    rows: list[tuple[str, dict]] = []
    if "step" in want:
        for n in (32, 128, 512):
            raw[f"step LSTM {n}"] = r = bench_step(n)
            rows.append((f"`stream.step`, batch 1, LSTM I=H={n}", r))
    if "process" in want:
        raw["process LSTM 1->16"] = r = bench_process(1, 16, 48000)
        rows.append(("`stream.process` LSTM 1->16, 48 000 steps (per step)", r))
    if "run" in want:
        raw["run LSTM 256"] = r = bench_run()
        rows.append(("`run` offline, B=1, T=1000, LSTM 256", r))
    if "short" in want:
        raw["run LSTM 32 T16"] = r = bench_short()
        rows.append(("`run` offline, B=1, T=16, LSTM 32 (per call)", r))
    if "batch" in want:
        r, threads = bench_batch()
        raw["batch 64 LSTM 256"], raw["batch threads"] = r, threads
        rows.append(("64 streams stepping together, LSTM 256", r))

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}; "
          f"tinyrnn {tinyrnn.__version__}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; "
          f"one thread each\n")
    if rows:
        print("| workload | tinyrnn | torch | onnxruntime | vs torch | vs onnxruntime |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, r in rows:
            o = r.get("onnxruntime")
            vs_ort = f"{r['tinyrnn'] / o:.2f}x" if o else "-"
            print(f"| {name} | {fmt(r['tinyrnn'])} | {fmt(r['torch'])} | {fmt(o) if o else '-'} "
                  f"| {r['tinyrnn'] / r['torch']:.2f}x | {vs_ort} |")
        print()
    if "batch" in want:
        t = raw["batch threads"]
        print(f"64 streams of LSTM 256 as 2 x 32: one thread {fmt(t['one thread'])} per step, two threads "
              f"{fmt(t['two threads'])}: speed-up {t['speed-up']:.2f}x (median of rounds)\n")
    if "rtneural" in want:
        print("| per-sample model, `stream.process` | tinyrnn per step | RTNeural per step | ratio |")
        print("|---|---:|---:|---:|")
        for name, r in bench_rtneural().items():
            raw[f"rtneural {name}"] = r
            print(f"| {name} | {fmt(r)} | {RTNEURAL_NS[name]} ns | {r * 1e9 / RTNEURAL_NS[name]:.2f}x |")
        print()
    if "quant" in want:
        print("| LSTM, one step | float32 | fp16 | int8 | int8 / float32 |")
        print("|---|---:|---:|---:|---:|")
        for n in (256, 512, 1024):
            raw[f"quant {n}"] = r = bench_quant(n)
            print(f"| {n} | {fmt(r['float32'])} | {fmt(r['fp16'])} | {fmt(r['int8'])} | "
                  f"{r['int8'] / r['float32']:.2f}x |")
        print()
    if "startup" in want:
        raw["startup"] = r = bench_startup()
        print("| new process: import, load, first step (LSTM 128) | wall time | max RSS |")
        print("|---|---:|---:|")
        for name, (t, mb) in r.items():
            print(f"| {name} | {t:.2f} s | {mb:.0f} MB |")
        print()
    if args.plot:
        sizes = (16, 32, 64, 128, 256, 512, 1024)
        raw["sweep"] = data = sweep(sizes)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for who in ("tinyrnn", "torch", "onnxruntime"):
            ax.loglog(sizes, [data[n][who] * 1e6 for n in sizes], marker="o", label=who)
        ax.set_xlabel("LSTM hidden size (I = H)")
        ax.set_ylabel("µs per step (batch 1, one thread)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
