"""Step graphs whose state is not a cell's: carried as graph state (``Model.states``).

The reference is onnxruntime running the same ONNX graph call by call with its state.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinyrnn
from tinyrnn import InputSpec, Model, ModelFormatError
from tinyrnn.graph_layers import Elementwise

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from tinyrnn_converters import from_onnx  # noqa: E402
from tinyrnn_converters.onnx_step import pack_state, unpack_state  # noqa: E402


def leaky_integrator(rng, F=6):
    """``acc' = 0.9 * acc + x @ W``; ``y = relu(acc') * 2``: state (B, F) -> accN."""
    W = rng.normal(0, 0.5, (F, F)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Mul", ["acc", "decay"], ["kept"]),
        helper.make_node("Add", ["kept", "xw"], ["accN"]),
        helper.make_node("Relu", ["accN"], ["r"]),
        helper.make_node("Mul", ["r", "two"], ["y"]),
    ]
    g = helper.make_graph(
        nodes, "integrator",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", F]),
         helper.make_tensor_value_info("acc", TensorProto.FLOAT, ["batch", F])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", F]),
         helper.make_tensor_value_info("accN", TensorProto.FLOAT, ["batch", F])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(np.array(0.9, np.float32), "decay"),
         numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def ort_steps(proto, X):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    acc = np.zeros((X.shape[0], X.shape[2]), np.float32)
    ys = []
    for t in range(X.shape[1]):
        y, acc = sess.run(None, {"x": X[:, t], "acc": acc})
        ys.append(y)
    return np.stack(ys, 1), acc


def test_graph_state_matches_onnxruntime(rng):
    proto = leaky_integrator(rng)
    model = from_onnx(proto)
    assert list(model.states) == ["acc"] and not model.recurrent_layers
    X = rng.normal(0, 1, (3, 20, 6)).astype(np.float32)
    want, want_acc = ort_steps(proto, X)
    s = model.stream(batch=3)
    np.testing.assert_allclose(s.process(X[:, :7]), want[:, :7], rtol=1e-5, atol=1e-5)
    steps = np.stack([s.step(X[:, t]) for t in range(7, 20)], 1)
    np.testing.assert_allclose(steps, want[:, 7:], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s.state["acc"], want_acc, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pack_state(model, s.state)["acc"], want_acc, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.run(X), want, rtol=1e-5, atol=1e-5)


def test_graph_state_snapshot_reset_and_file(rng, tmp_path):
    model = from_onnx(leaky_integrator(rng))
    X = rng.normal(0, 1, (2, 12, 6)).astype(np.float32)
    s = model.stream(batch=2)
    s.process(X[:, :5])
    snap = s.state
    rest = s.process(X[:, 5:])
    s.reset(0)
    assert not s.state["acc"][0].any() and s.state["acc"][1].any()
    s.state = snap
    np.testing.assert_array_equal(s.process(X[:, 5:]), rest)
    s.state = unpack_state(model, pack_state(model, snap))
    np.testing.assert_array_equal(s.process(X[:, 5:]), rest)
    path = tmp_path / "integrator.trnn"
    model.save(path)
    loaded = tinyrnn.load(path)
    assert loaded.states == model.states
    s2 = loaded.stream(batch=2)
    s2.state = snap
    np.testing.assert_array_equal(s2.process(X[:, 5:]), rest)


def test_graph_state_is_validated():
    two = {"c": np.array(2.0, np.float32)}
    layer = Elementwise("next", ["acc"], two, "mul")
    Model([layer], InputSpec.features(4), output="next", states={"acc": {"shape": [4], "next": "next"}})
    from_input = Elementwise("next", ["input"], two, "mul")
    with pytest.raises(ModelFormatError, match="has shape"):
        Model([from_input], InputSpec.features(3), output="next", states={"acc": {"shape": [4], "next": "next"}})
    with pytest.raises(ModelFormatError, match="not a layer"):
        Model([layer], InputSpec.features(4), output="next", states={"acc": {"shape": [4], "next": "nope"}})
    with pytest.raises(ModelFormatError, match="state name"):
        Model([layer], InputSpec.features(4), output="next", states={"in/put": {"shape": [4], "next": "next"}})
    with pytest.raises(ModelFormatError, match="'shape'"):
        Model([layer], InputSpec.features(4), output="next", states={"acc": {"shape": [], "next": "next"}})


def stft_graph(basis, hop):
    """x (B, L) -> |conv(x, basis)| as Silero writes it, plus a trivial state so it is a step graph."""
    C, _, N = basis.shape
    K = C // 2
    i64 = lambda *v: numpy_helper.from_array(np.array(v, np.int64))  # noqa: E731
    nodes = [
        helper.make_node("Unsqueeze", ["x", "one"], ["x3"]),
        helper.make_node("Conv", ["x3", "basis"], ["spec"], kernel_shape=[N], strides=[hop], pads=[0, 0]),
        helper.make_node("Slice", ["spec", "s0", "sK", "one"], ["re"]),
        helper.make_node("Slice", ["spec", "sK", "sC", "one"], ["im"]),
        helper.make_node("Pow", ["re", "two"], ["re2"]),
        helper.make_node("Pow", ["im", "two"], ["im2"]),
        helper.make_node("Add", ["re2", "im2"], ["p"]),
        helper.make_node("Sqrt", ["p"], ["mag"]),
        helper.make_node("Flatten", ["mag"], ["flat"], axis=1),
        helper.make_node("ReduceSum", ["flat", "one"], ["total"], keepdims=1),
        helper.make_node("Add", ["st", "total"], ["stN"]),
    ]
    inits = [numpy_helper.from_array(basis, "basis"), numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    for name, v in (("one", 1), ("s0", 0), ("sK", K), ("sC", C)):
        t = i64(v)
        t.name = name
        inits.append(t)
    g = helper.make_graph(
        nodes, "stft",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64]),
         helper.make_tensor_value_info("st", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["batch", K * ((64 - N) // hop + 1)]),
         helper.make_tensor_value_info("stN", TensorProto.FLOAT, ["batch", 1])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("dft", [True, False])
def test_stft_front_end_fuses_only_a_real_dft_basis(rng, dft):
    N, hop = 16, 8
    n = np.arange(N)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * n / N)).astype(np.float64)
    K = N // 2 + 1
    k = np.arange(K)[:, None]
    basis = np.concatenate([window * np.cos(2 * np.pi * k * n / N), -window * np.sin(2 * np.pi * k * n / N)])
    if not dft:
        basis = basis + rng.normal(0, 0.01, basis.shape)  # close to a DFT, but not one
    basis = basis[:, None, :].astype(np.float32)
    proto = stft_graph(basis, hop)
    model = from_onnx(proto)
    types = [l.type for l in model.layers]
    assert ("dft_magnitude" in types) == dft and ("conv1d" in types) != dft
    X = rng.normal(0, 1, (2, 5, 64)).astype(np.float32)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    st = np.zeros((2, 1), np.float32)
    want = []
    for t in range(5):
        y, st = sess.run(None, {"x": X[:, t], "st": st})
        want.append(y)
    np.testing.assert_allclose(model.stream(batch=2).process(X), np.stack(want, 1), rtol=1e-5, atol=1e-5)
