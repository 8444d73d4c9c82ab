"""Shared pieces of the benchmarks: one LSTM's weights in three runtimes, and a timer.

Every workload is built from one set of random weights and handed to tinyrnn, PyTorch and
onnxruntime, each pinned to one thread, so the numbers compare the runtimes and nothing
else. ``compare.py`` times the runtimes taking turns (``interleaved_times``); the other
scripts take medians over repeats of a calibrated loop (``median_time``).
"""

from __future__ import annotations

import numpy as np


def single_thread() -> None:
    """Pin torch to one thread (numba's kernels are single-threaded already)."""
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1) if not getattr(single_thread, "_done", False) else None
    single_thread._done = True


def fmt(s: float) -> str:
    """Seconds as ns, µs or ms, for the tables."""
    if s < 1e-6:
        return f"{s * 1e9:.0f} ns"
    if s < 1e-3:
        return f"{s * 1e6:.2f} µs"
    return f"{s * 1e3:.2f} ms"


def median_time(fn, min_time: float = 0.2, repeats: int = 7) -> float:
    """Median seconds per call of ``fn()`` over ``repeats`` loops of ``min_time`` / 4 to / 2 each
    (tinyrnn's own timer, after one warm-up call for compilation and allocators)."""
    from tinyrnn.bench import median_time as timed

    fn()
    return timed(fn, budget=min_time * repeats, repeats=repeats)


def interleaved_rounds(fns: dict, span: float = 3.0, round_time: float = 0.05, min_rounds: int = 15) -> dict:
    """Seconds per call of each ``fns[name]()`` in every round: ``{name: [s, ...]}``.

    Each round times every function once, a loop of about ``round_time`` s each (calibrated
    after a warm-up call), alternating the order; rounds go on for at least ``span`` s and
    ``min_rounds`` rounds. The machines this runs on change speed for seconds at a time
    (shared cores: 1.3-1.4x between the two states, benchmarks/RESULTS.md); timing one
    runtime after the other put one in a fast stretch and the next in a slow one, and
    ratios moved by that much between runs. Taking turns gives every function the same
    stretches.
    """
    import time

    loops = {}
    for name, fn in fns.items():
        fn()
        n = 1
        while True:
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            if time.perf_counter() - t0 >= round_time / 2 or n >= 1 << 20:
                break
            n *= 2
        loops[name] = n
    times = {name: [] for name in fns}
    start, rounds = time.perf_counter(), 0
    names = list(fns)
    while rounds < min_rounds or time.perf_counter() - start < span:
        for name in (names if rounds % 2 == 0 else names[::-1]):
            fn, n = fns[name], loops[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            times[name].append((time.perf_counter() - t0) / n)
        rounds += 1
    return times


def interleaved_times(fns: dict, **kw) -> dict:
    """Each function's fastest round of ``interleaved_rounds``: its time on the machine at its
    best (the minimum, as ``timeit`` advises: slower rounds measure interference)."""
    return {name: min(ts) for name, ts in interleaved_rounds(fns, **kw).items()}


def torch_lstm(I: int, H: int, seed: int = 0, cell: str = "lstm", layers: int = 1):
    """A PyTorch nn.LSTM/nn.GRU with seeded random weights, in eval mode."""
    import torch

    torch.manual_seed(seed)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    return cls(I, H, num_layers=layers).eval()


def onnx_weights_from_torch(module):
    """ONNX-layout W, R, B of a one-layer torch nn.LSTM / nn.GRU / nn.RNN."""
    W = module.weight_ih_l0.detach().numpy()
    R = module.weight_hh_l0.detach().numpy()
    b = np.concatenate([module.bias_ih_l0.detach().numpy(), module.bias_hh_l0.detach().numpy()])
    H = module.hidden_size
    if isinstance(module, __import__("torch").nn.LSTM):
        order = [0, 3, 1, 2]  # torch i,f,g,o -> onnx i,o,f,c
    elif isinstance(module, __import__("torch").nn.GRU):
        order = [1, 0, 2]  # torch r,z,n -> onnx z,r,h
    else:
        order = [0]

    def re(a):
        blocks = np.split(a, len(order), axis=0)
        return np.concatenate([blocks[i] for i in order], axis=0)

    Wb, Rb = np.split(b, 2)
    return re(W)[None], re(R)[None], np.concatenate([re(Wb), re(Rb)])[None]


def tinyrnn_from_torch(module):
    """The same one-layer recurrent module as a tinyrnn Model."""
    import torch

    from tinyrnn import InputSpec, Model
    from tinyrnn.layers import Recurrent

    W, R, B = onnx_weights_from_torch(module)
    cell = {torch.nn.LSTM: "lstm", torch.nn.GRU: "gru", torch.nn.RNN: "rnn"}[type(module)]
    extra = {"linear_before_reset": True} if cell == "gru" else {}
    layer = Recurrent.from_onnx(cell, cell, W, R, B, **extra)
    return Model([layer], InputSpec.features(module.input_size))


def onnx_recurrent_session(module, seq_len=None):
    """An onnxruntime session (one thread) running an ONNX LSTM/GRU node with the module's
    weights. Inputs X (T, B, I), initial_h (and initial_c) (1, B, H); outputs Y, Y_h (and
    Y_c). B is left symbolic, so one session serves a single stream and a batch."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    W, R, B = onnx_weights_from_torch(module)
    I, H = module.input_size, module.hidden_size
    op = {torch.nn.LSTM: "LSTM", torch.nn.GRU: "GRU", torch.nn.RNN: "RNN"}[type(module)]
    lstm = op == "LSTM"
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [seq_len or "T", "B", I]),
              helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, [1, "B", H])]
    node_in = ["X", "W", "R", "B", "", "initial_h"]
    outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [seq_len or "T", 1, "B", H]),
               helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, "B", H])]
    node_out = ["Y", "Y_h"]
    if lstm:
        inputs.append(helper.make_tensor_value_info("initial_c", TensorProto.FLOAT, [1, "B", H]))
        node_in.append("initial_c")
        outputs.append(helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, [1, "B", H]))
        node_out.append("Y_c")
    attrs = {"hidden_size": H}
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    node = helper.make_node(op, node_in, node_out, **attrs)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in ((W, "W"), (R, "R"), (B, "B"))]
    graph = helper.make_graph([node], "rnn", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def onnx_lstm_stepper(module, x):
    """A function running one onnxruntime LSTM step on x (B, I) per call, h and c carried to
    the next call as a stream carries its state (from zeros); returns h (1, B, H)."""
    sess = onnx_recurrent_session(module, seq_len=1)
    B, H = x.shape[0], module.hidden_size
    feeds = {"X": np.ascontiguousarray(x[None]), "initial_h": np.zeros((1, B, H), np.float32),
             "initial_c": np.zeros((1, B, H), np.float32)}

    def step():
        _, h, c = sess.run(None, feeds)
        feeds["initial_h"], feeds["initial_c"] = h, c
        return h

    return step
