"""pytest-benchmark suites for the performance issue's workloads, one group per workload.

    python -m pytest benchmarks/test_speed.py --benchmark-only --benchmark-group-by=group

Each group times tinyrnn, torch and onnxruntime on the same weights (one thread each), so
pytest-benchmark's table shows them side by side; ``benchmarks/compare.py`` prints the same
workloads as ratios. Not timed in the test run (``testpaths`` is ``tests``; the project's
pytest options skip benchmarks unless ``--benchmark-only`` is given), but run there once,
untimed, by ``tests/test_benchmarks.py``, so a benchmark that breaks is noticed.
"""

from __future__ import annotations

import numpy as np
import pytest

from common import onnx_lstm_stepper, onnx_recurrent_session, single_thread, tinyrnn_from_torch, torch_lstm

torch = pytest.importorskip("torch")
RUNTIMES = ["tinyrnn", "torch", "onnxruntime"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    single_thread()


def _step_fn(runtime: str, n: int):
    lstm = torch_lstm(n, n)
    x = np.random.default_rng(0).normal(size=n).astype(np.float32)
    if runtime == "tinyrnn":
        stream = tinyrnn_from_torch(lstm).stream()
        return lambda: stream.step(x)
    if runtime == "torch":
        cell = torch.nn.LSTMCell(n, n).eval()
        state = [torch.zeros(1, n), torch.zeros(1, n)]
        xt = torch.from_numpy(x)[None]

        def step():
            with torch.inference_mode():
                state[:] = cell(xt, tuple(state))

        return step
    return onnx_lstm_stepper(lstm, x[None])


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("n", [32, 128, 512])
def test_step(benchmark, runtime, n):
    benchmark.group = f"step LSTM {n}"
    benchmark(_step_fn(runtime, n))


def _sequence_fn(runtime: str, I: int, H: int, T: int, B: int = 1, cell: str = "lstm", process: bool = False):
    module = torch_lstm(I, H, cell=cell)
    x = np.random.default_rng(0).normal(size=(B, T, I)).astype(np.float32)
    if runtime == "tinyrnn":
        model = tinyrnn_from_torch(module)
        if process:
            stream = model.stream()
            return lambda: stream.process(x[0])
        return lambda: model.run(x)
    if runtime == "torch":
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(1, 0, 2)))

        def fwd():
            with torch.inference_mode():
                module(xt)

        return fwd
    sess = onnx_recurrent_session(module)
    feeds = {"X": np.ascontiguousarray(x.transpose(1, 0, 2)), "initial_h": np.zeros((1, B, H), np.float32)}
    if cell == "lstm":
        feeds["initial_c"] = np.zeros((1, B, H), np.float32)
    return lambda: sess.run(None, feeds)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_process_per_sample(benchmark, runtime):
    """48 000 steps of a per-sample LSTM(1->16) in one call."""
    benchmark.group = "process LSTM 1->16, 48000 steps"
    benchmark(_sequence_fn(runtime, 1, 16, 48000, process=True))


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("cell, I, H", [("lstm", 1, 32), ("gru", 1, 16), ("lstm", 64, 64)])
def test_process_rtneural_sizes(benchmark, runtime, cell, I, H):
    """The sizes RTNeural publishes (244, 110, 1760 ns per step on this machine kind)."""
    benchmark.group = f"process {cell.upper()} {I}->{H}, 4800 steps"
    benchmark(_sequence_fn(runtime, I, H, 4800, cell=cell, process=True))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_run_offline(benchmark, runtime):
    benchmark.group = "run B=1 T=1000 LSTM 256"
    benchmark(_sequence_fn(runtime, 256, 256, 1000))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_run_short(benchmark, runtime):
    """One 16-step sequence per call: what a call costs besides its arithmetic (``compare.py``'s ``short``)."""
    benchmark.group = "run B=1 T=16 LSTM 32, per call"
    benchmark(_sequence_fn(runtime, 32, 32, 16))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_batch_step(benchmark, runtime):
    benchmark.group = "64 streams, one step, LSTM 256"
    if runtime == "tinyrnn":
        module = torch_lstm(256, 256)
        stream = tinyrnn_from_torch(module).stream(batch=64)
        x = np.random.default_rng(0).normal(size=(64, 256)).astype(np.float32)
        benchmark(lambda: stream.step(x))
    else:
        benchmark(_sequence_fn(runtime, 256, 256, 1, B=64))
