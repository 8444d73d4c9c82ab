"""Plan-time fusion of graph layers (``tinyrnn.backends.graph_plan.fuse``).

Each model is checked twice: against an independent reference (onnxruntime for convs and
activations, numpy's FFT for the DFT, numpy slicing for views), and bit for bit against the
same model planned without fusion, since fusion only moves work into a neighbouring call.
The tests also pin which layers fuse (fewer compiled calls is the point) and which must not
(a value with a second reader).
"""

from __future__ import annotations

import numpy as np
import pytest

from tinyrnn import InputSpec, Model
from tinyrnn.backends import cpu
from tinyrnn.backends.graph_plan import fuse
from tinyrnn.graph_layers import Concat, Conv1d, DftMagnitude, Elementwise, Pad, Reduce, Reshape, Slice
from tinyrnn.layers import Activation

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)


def ort_run(nodes, x: np.ndarray, inits: dict[str, np.ndarray]) -> np.ndarray:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def n_calls(model, B=2, T=3) -> int:
    return len(cpu.build_plan(model, B, T, cpu.new_state(model, B)).calls)


def unfused(layers_fn, feature, **kw) -> Model:
    """The same model with fusion switched off (an empty entry in the plan cache)."""
    m = Model(layers_fn(), InputSpec.features(*feature), **kw)
    m._backend_cache["cpu_fuse"] = {}
    return m


def check(layers_fn, feature, x, want, **kw):
    """Run fused and unfused; compare to ``want`` and to each other. Returns the fused model."""
    m = Model(layers_fn(), InputSpec.features(*feature), **kw)
    y = m.run(x)
    np.testing.assert_allclose(y.reshape(want.shape), want, **TOL)
    np.testing.assert_array_equal(y, unfused(layers_fn, feature, **kw).run(x))
    # a stream (one plan per step) gives the same as the block plan
    s = m.stream(batch=x.shape[0])
    steps = np.stack([s.step(x[:, t]) for t in range(x.shape[1])], axis=1)
    np.testing.assert_allclose(steps, y, rtol=1e-6, atol=1e-6)
    return m


def test_activations_fuse_into_convs(rng):
    """abs before conv (on its inputs), relu and sigmoid after convs (on outputs); the neg
    after the sigmoid has no conv to join and stays a call of its own."""
    B, T, C, L = 2, 3, 4, 9
    W1 = rng.normal(0, 0.5, (6, C, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.5, 6).astype(np.float32)
    W2 = rng.normal(0, 0.5, (2, 6, 1)).astype(np.float32)
    b2 = rng.normal(0, 0.5, 2).astype(np.float32)
    x = rng.normal(0, 1, (B, T, C, L)).astype(np.float32)

    def layers():
        return [Elementwise("abs", ["input"], {}, "abs"),
                Conv1d("c1", ["abs"], {"W": W1, "b": b1}, C, 6, 3, 2, (1, 1)),
                Elementwise("relu", ["c1"], {}, "relu"),
                Conv1d("c2", ["relu"], {"W": W2, "b": b2}, 6, 2, 1),
                Activation("sig", ["c2"], "sigmoid"),
                Elementwise("neg", ["sig"], {}, "neg")]

    nodes = [helper.make_node("Abs", ["x"], ["a"]),
             helper.make_node("Conv", ["a", "W1", "b1"], ["c1"], kernel_shape=[3], strides=[2], pads=[1, 1]),
             helper.make_node("Relu", ["c1"], ["r"]),
             helper.make_node("Conv", ["r", "W2", "b2"], ["c2"], kernel_shape=[1]),
             helper.make_node("Sigmoid", ["c2"], ["s"]),
             helper.make_node("Neg", ["s"], ["y"])]
    want = ort_run(nodes, x.reshape(B * T, C, L), {"W1": W1, "b1": b1, "W2": W2, "b2": b2})
    m = check(layers, (C, L), x, want)
    f = fuse(m)
    assert f["abs"] == {"drop": True} and f["c1"]["reads"] == "input"
    assert f["relu"] == {"alias": "c1"} and f["sig"] == {"alias": "c2"} and "neg" not in f
    assert n_calls(m) == 3 and n_calls(unfused(layers, (C, L))) == 6


def test_a_conv_output_with_two_readers_is_not_fused(rng):
    """The conv's raw output is also concatenated: relu must not overwrite it."""
    B, T, C, L = 2, 2, 3, 5
    W = rng.normal(0, 0.5, (3, C, 3)).astype(np.float32)
    x = rng.normal(0, 1, (B, T, C, L)).astype(np.float32)

    def layers():
        return [Conv1d("c", ["input"], {"W": W}, C, 3, 3, 1, (1, 1), bias=False),
                Elementwise("relu", ["c"], {}, "relu"),
                Concat("y", ["c", "relu"], 0)]

    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3], pads=[1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Concat", ["c", "r"], ["y"], axis=1)]
    want = ort_run(nodes, x.reshape(B * T, C, L), {"W": W})
    m = check(layers, (C, L), x, want)
    assert "relu" not in fuse(m)


def test_activation_read_twice_is_not_fused_into_the_next_conv(rng):
    B, T, C, L = 1, 2, 2, 4
    W = rng.normal(0, 0.5, (2, C, 1)).astype(np.float32)
    x = rng.normal(0, 1, (B, T, C, L)).astype(np.float32)

    def layers():
        return [Elementwise("relu", ["input"], {}, "relu"),
                Conv1d("c", ["relu"], {"W": W}, C, 2, 1, bias=False),
                Elementwise("y", ["c", "relu"], {}, "add")]

    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Conv", ["r", "W"], ["c"], kernel_shape=[1]),
             helper.make_node("Add", ["c", "r"], ["y"])]
    want = ort_run(nodes, x.reshape(B * T, C, L), {"W": W})
    m = check(layers, (C, L), x, want)
    assert "relu" not in fuse(m)


@pytest.mark.parametrize("mode", ["reflect", "edge", "constant"])
@pytest.mark.parametrize("before,after", [(0, 8), (5, 3)])
def test_pad_folds_into_the_dft(rng, mode, before, after):
    """Pad -> Reshape -> DFT becomes one call whose index map reads the unpadded input."""
    n_fft, hop, L = 16, 4, 30
    window = rng.uniform(0.1, 1, n_fft).astype(np.float32)
    x = rng.normal(0, 1, (2, 3, L)).astype(np.float32)
    Lp = L + before + after

    def layers():
        return [Pad("pad", ["input"], 0, before, after, mode, 0.25),
                Reshape("as2d", ["pad"], (1, Lp)),
                DftMagnitude("dft", ["as2d"], {"window": window}, n_fft, hop, n_fft // 2 + 1)]

    np_mode = {"reflect": "reflect", "edge": "edge", "constant": "constant"}[mode]
    kw = {"constant_values": 0.25} if mode == "constant" else {}
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0), (before, after)], mode=np_mode, **kw)
    frames = (Lp - n_fft) // hop + 1
    idx = np.arange(frames)[:, None] * hop + np.arange(n_fft)[None, :]
    want = np.swapaxes(np.abs(np.fft.rfft(xp[..., idx] * window, axis=-1)), -1, -2)
    m = check(layers, (L,), x, want.astype(np.float32))
    f = fuse(m)
    assert f["pad"] == {"drop": True} and f["as2d"] == {"drop": True} and f["dft"]["reads"] == "input"
    assert n_calls(m) == 1


def test_whole_axis_slice_and_single_value_reduce_are_views(rng):
    x = rng.normal(0, 1, (2, 3, 4, 1)).astype(np.float32)

    def layers():
        return [Elementwise("e", ["input"], {}, "square"),
                Slice("whole", ["e"], 0, 0, 4),
                Reduce("mean", ["whole"], "mean", 1, keepdims=False),
                Slice("part", ["mean"], 0, 1, 4)]

    m = check(layers, (4, 1), x, (x ** 2)[:, :, 1:4, 0])
    f = fuse(m)
    assert f["whole"] == {"alias": "e"} and f["mean"] == {"alias": "whole"} and "part" not in f
    assert n_calls(m) == 2
