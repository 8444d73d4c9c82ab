"""Graph layers (conv1d, pad, slice, concat, elementwise, reduce, reshape) against onnxruntime.

Each case builds the same computation twice: as a one-node ONNX graph run by onnxruntime
(the reference) and as a tinyrnn model, on random float32 inputs shaped ``(B, T, *feature)``
(ONNX sees ``(B*T, *feature)``). Tolerance: 1e-5 relative + absolute (float32 sums of up
to a few hundred terms in another order).
"""

from __future__ import annotations

import numpy as np
import pytest

import tinyrnn
from tinyrnn import InputSpec, Model, ModelFormatError
from tinyrnn.graph_layers import Concat, Conv1d, Elementwise, Pad, Reduce, Reshape, Slice

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)


def ort_run(nodes, inputs: dict[str, np.ndarray], inits: dict[str, np.ndarray], out_name="y", opset=18):
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in inputs.items()],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)[0]


def tiny_run(layers, feature, x):
    m = Model(layers, InputSpec.features(*feature))
    y = m.run(x)
    # every graph layer survives a .trnn round trip unchanged
    y2 = tinyrnn.loads(tinyrnn.format.dumps(m)).run(x)
    np.testing.assert_array_equal(y, y2)
    return y


def flat(x):
    return x.reshape(-1, *x.shape[2:])


@pytest.mark.parametrize("cfg", [
    dict(C_in=3, C_out=5, K=3, stride=1, pads=(1, 1), dil=1, groups=1, L=11),
    dict(C_in=4, C_out=6, K=5, stride=2, pads=(2, 0), dil=2, groups=2, L=17),
    dict(C_in=6, C_out=6, K=3, stride=3, pads=(0, 3), dil=1, groups=6, L=13),  # depthwise
    dict(C_in=1, C_out=10, K=16, stride=8, pads=(0, 0), dil=1, groups=1, L=64),  # STFT-like
    dict(C_in=8, C_out=2, K=1, stride=1, pads=(0, 0), dil=1, groups=1, L=1),  # 1x1 on one frame
])
@pytest.mark.parametrize("bias", [True, False])
def test_conv1d_matches_onnxruntime(rng, cfg, bias):
    B, T = 2, 3
    W = rng.normal(0, 0.5, (cfg["C_out"], cfg["C_in"] // cfg["groups"], cfg["K"])).astype(np.float32)
    b = rng.normal(0, 0.5, cfg["C_out"]).astype(np.float32)
    x = rng.normal(0, 1, (B, T, cfg["C_in"], cfg["L"])).astype(np.float32)
    node = helper.make_node("Conv", ["x", "W"] + (["b"] if bias else []), ["y"], kernel_shape=[cfg["K"]],
                            strides=[cfg["stride"]], pads=list(cfg["pads"]), dilations=[cfg["dil"]],
                            group=cfg["groups"])
    ref = ort_run([node], {"x": flat(x)}, {"W": W, **({"b": b} if bias else {})})
    params = {"W": W, **({"b": b} if bias else {})}
    layer = Conv1d("conv", [], params, cfg["C_in"], cfg["C_out"], cfg["K"], cfg["stride"], cfg["pads"],
                   cfg["dil"], cfg["groups"], bias)
    y = tiny_run([layer], (cfg["C_in"], cfg["L"]), x)
    np.testing.assert_allclose(flat(y), ref, **TOL)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("axis,before,after", [(1, 0, 4), (1, 3, 2), (0, 1, 1)])
def test_pad_matches_onnxruntime(rng, mode, axis, before, after):
    B, T, feat = 2, 2, (4, 7)
    x = rng.normal(0, 1, (B, T, *feat)).astype(np.float32)
    pads = [0] * 6
    pads[1 + axis] = before
    pads[4 + axis] = after
    node = helper.make_node("Pad", ["x", "pads", "v"], ["y"], mode=mode)
    ref = ort_run([node], {"x": flat(x)}, {"pads": np.array(pads, np.int64), "v": np.array(1.5, np.float32)})
    y = tiny_run([Pad("pad", [], axis, before, after, mode, 1.5)], feat, x)
    np.testing.assert_array_equal(flat(y), ref)


def test_reflect_pad_longer_than_axis_is_refused():
    with pytest.raises(ModelFormatError, match="reflect padding"):
        Model([Pad("pad", [], 0, 5, 0, "reflect")], InputSpec.features(4))


def test_slice_concat_reshape_match_onnxruntime(rng):
    B, T, feat = 3, 2, (6, 5)
    x = rng.normal(0, 1, (B, T, *feat)).astype(np.float32)
    nodes = [
        helper.make_node("Slice", ["x", "s0", "e0", "a0", "st0"], ["a"]),
        helper.make_node("Slice", ["x", "s1", "e1", "a1"], ["b"]),
        helper.make_node("Concat", ["b", "a", "b"], ["c"], axis=2),
        helper.make_node("Reshape", ["c", "shape"], ["y"]),
    ]
    inits = {"s0": np.array([1], np.int64), "e0": np.array([5], np.int64), "a0": np.array([2], np.int64),
             "st0": np.array([2], np.int64), "s1": np.array([0], np.int64), "e1": np.array([2], np.int64),
             "a1": np.array([2], np.int64), "shape": np.array([B * T, 4, 9], np.int64)}
    ref = ort_run(nodes, {"x": flat(x)}, inits)
    layers = [Slice("a", ["input"], 1, 1, 5, 2), Slice("b", ["input"], 1, 0, 2),
              Concat("c", ["b", "a", "b"], 1), Reshape("y", ["c"], (4, 9))]
    y = tiny_run(layers, feat, x)
    np.testing.assert_array_equal(flat(y), ref)


UNARY_ONNX = {"relu": "Relu", "sqrt": "Sqrt", "abs": "Abs", "neg": "Neg", "exp": "Exp", "log": "Log", "reciprocal": "Reciprocal"}
BINARY_ONNX = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "max": "Max", "min": "Min"}


@pytest.mark.parametrize("op", sorted(UNARY_ONNX))
def test_unary_matches_onnxruntime(rng, op):
    x = rng.uniform(0.1, 3, (2, 3, 4, 5)).astype(np.float32)
    if op == "relu":
        x -= 1.5
    ref = ort_run([helper.make_node(UNARY_ONNX[op], ["x"], ["y"])], {"x": flat(x)}, {})
    y = tiny_run([Elementwise("e", [], {}, op)], (4, 5), x)
    np.testing.assert_allclose(flat(y), ref, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("op", sorted(BINARY_ONNX))
@pytest.mark.parametrize("form", ["two_inputs", "scalar", "row", "scalar_first"])
def test_binary_matches_onnxruntime(rng, op, form):
    x = rng.uniform(0.5, 2, (2, 3, 4, 5)).astype(np.float32)
    if form == "two_inputs":
        # a model has one input, so the second operand is computed from it: x and 1/x
        layers = [Elementwise("inv", ["input"], {}, "reciprocal"), Elementwise("e", ["input", "inv"], {}, op)]
        nodes = [helper.make_node("Reciprocal", ["x"], ["inv"]), helper.make_node(BINARY_ONNX[op], ["x", "inv"], ["y"])]
        ref = ort_run(nodes, {"x": flat(x)}, {})
        y = tiny_run(layers, (4, 5), x)
    else:
        c = (np.array(2.0, np.float32) if form != "row" else rng.uniform(0.5, 2, (5,)).astype(np.float32))
        inputs = ["c", "x"] if form == "scalar_first" else ["x", "c"]
        ref = ort_run([helper.make_node(BINARY_ONNX[op], inputs, ["y"])], {"x": flat(x)}, {"c": c})
        y = tiny_run([Elementwise("e", [], {"c": c}, op, c_first=form == "scalar_first")], (4, 5), x)
    np.testing.assert_allclose(flat(y), ref, rtol=2e-6, atol=1e-7)


def test_binary_operand_shapes_are_checked():
    with pytest.raises(ModelFormatError, match="does not broadcast"):
        Model([Elementwise("e", [], {"c": np.ones(3, np.float32)}, "add")], InputSpec.features(4, 5))
    with pytest.raises(ModelFormatError, match="takes 2 operands"):
        Model([Elementwise("e", [], {}, "add")], InputSpec.features(4))


@pytest.mark.parametrize("op,onnx_op", [("mean", "ReduceMean"), ("sum", "ReduceSum"), ("max", "ReduceMax"),
                                        ("min", "ReduceMin")])
@pytest.mark.parametrize("axis,keep", [(0, True), (1, False), (2, True)])
def test_reduce_matches_onnxruntime(rng, op, onnx_op, axis, keep):
    x = rng.normal(0, 1, (2, 3, 4, 5, 3)).astype(np.float32)
    node = helper.make_node(onnx_op, ["x", "axes"], ["y"], keepdims=int(keep))
    ref = ort_run([node], {"x": flat(x)}, {"axes": np.array([axis + 1], np.int64)})
    y = tiny_run([Reduce("r", [], op, axis, keep)], (4, 5, 3), x)
    np.testing.assert_allclose(flat(y), ref, rtol=1e-6, atol=1e-6)


def test_bad_configs_are_model_format_errors():
    with pytest.raises(ModelFormatError, match="groups"):
        Conv1d("c", [], {}, 3, 4, 3, groups=2)
    with pytest.raises(ModelFormatError, match="shorter than"):
        Model([Conv1d("c", [], {"W": np.ones((2, 1, 5), np.float32), "b": np.zeros(2, np.float32)}, 1, 2, 5)],
              InputSpec.features(1, 3))
    with pytest.raises(ModelFormatError, match="start < stop"):
        Slice("s", [], 0, 3, 3)
    with pytest.raises(ModelFormatError, match="takes 2 to 64 inputs"):
        Model([Concat("c", ["input"], 0)], InputSpec.features(3))
    with pytest.raises(ModelFormatError, match="cannot view"):
        Model([Reshape("r", [], (4,))], InputSpec.features(3))
    layer = Conv1d("c", [], {"W": np.ones((2, 1, 5), np.float32)}, 1, 2, 5)
    with pytest.raises(ModelFormatError, match="tensor 'b' is missing"):
        layer.validate_tensors()


@pytest.mark.parametrize("n_fft,hop,bins,L", [(256, 128, 129, 640), (16, 4, 9, 40), (8, 8, 3, 8), (4, 2, 3, 10), (2, 1, 2, 5)])
def test_dft_magnitude_matches_numpy_fft(rng, n_fft, hop, bins, L):
    from tinyrnn.graph_layers import DftMagnitude

    window = rng.uniform(0.1, 1, n_fft).astype(np.float32)
    x = rng.normal(0, 1, (2, 3, 1, L)).astype(np.float32)
    y = tiny_run([DftMagnitude("dft", [], {"window": window}, n_fft, hop, bins)], (1, L), x)
    frames = (L - n_fft) // hop + 1
    idx = np.arange(frames)[:, None] * hop + np.arange(n_fft)[None, :]
    spec = np.abs(np.fft.rfft(x[:, :, 0, :].astype(np.float64)[..., idx] * window, axis=-1))  # (B, T, F, n//2+1)
    want = np.swapaxes(spec[..., :bins], -1, -2)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_dft_magnitude_config_is_checked():
    from tinyrnn.graph_layers import DftMagnitude

    with pytest.raises(ModelFormatError, match="power of two"):
        DftMagnitude("d", [], {"window": np.ones(6, np.float32)}, 6, 2, 3)
    with pytest.raises(ModelFormatError, match="'bins'"):
        DftMagnitude("d", [], {"window": np.ones(8, np.float32)}, 8, 2, 6)
    with pytest.raises(ModelFormatError, match="one channel"):
        Model([DftMagnitude("d", [], {"window": np.ones(8, np.float32)}, 8, 2, 5)], InputSpec.features(2, 8))
