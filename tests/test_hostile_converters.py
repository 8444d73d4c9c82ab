"""Hostile inputs to the converters: pickles that are not plain state_dicts, ONNX graphs with
cycles, missing initializers, external data outside the model's folder, absurd shapes, and
damaged bytes. Each ends in ModelFormatError / UnsupportedModelError (or ModelNotFoundError
for a missing file); none runs foreign code, hangs or crashes.

A watchdog (SIGALRM) turns a hang into a failure. Tests skip where the converter functions
or torch/onnx are absent.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import struct

import numpy as np
import pytest

import tinyrnn

tc = pytest.importorskip("tinyrnn_converters")
HAS_ONNX = hasattr(tc, "from_onnx")
HAS_CKPT = hasattr(tc, "load_checkpoint")
HAS_TORCH = hasattr(tc, "from_torch")
REFUSED = (tinyrnn.ModelFormatError, tinyrnn.UnsupportedModelError)


@contextlib.contextmanager
def watchdog(seconds: int = 60):
    """Fail instead of hanging (main thread, POSIX; a no-op elsewhere)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def fire(*_):
        raise TimeoutError(f"no answer within {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# --- PyTorch checkpoints ---------------------------------------------------------------------

torch_needed = pytest.mark.skipif(not HAS_CKPT, reason="the converter has no load_checkpoint")


class _Payload:
    """Unpickling this creates a file: proof that foreign code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@torch_needed
def test_pickle_with_code_is_refused_and_not_run(tmp_path, torch):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    lstm = torch.nn.LSTM(3, 4)
    sd = dict(lstm.state_dict())
    sd["extra"] = _Payload(marker)
    torch.save(sd, path)
    with watchdog(), pytest.raises(tinyrnn.ModelFormatError, match="weights_only"):
        tc.load_checkpoint(path)
    assert not marker.exists(), "unpickling ran code from the file"


@torch_needed
def test_whole_module_pickle_is_refused(tmp_path, torch):
    path = tmp_path / "module.pt"
    torch.save(torch.nn.LSTM(3, 4), path)  # the class, not a state_dict
    with watchdog(), pytest.raises(tinyrnn.ModelFormatError, match="weights_only|not a state_dict"):
        tc.load_checkpoint(path)


@torch_needed
@pytest.mark.parametrize("obj, match", [
    ({"weight_ih_l0": 1.0}, "not a state_dict"),
    ([1, 2, 3], "not a state_dict"),
    ({}, "not a state_dict"),
    ("text", "not a state_dict"),
])
def test_plain_pickles_that_are_not_state_dicts(tmp_path, torch, obj, match):
    path = tmp_path / "x.pt"
    torch.save(obj, path)
    with watchdog(), pytest.raises(tinyrnn.ModelFormatError, match=match):
        tc.load_checkpoint(path)


@torch_needed
def test_damaged_checkpoint_bytes(tmp_path, torch):
    good = tmp_path / "good.pt"
    torch.save(torch.nn.GRU(3, 4).state_dict(), good)
    raw = good.read_bytes()
    assert tc.load_checkpoint(good).run(np.zeros((2, 3), np.float32)).shape == (2, 4)
    rng = np.random.default_rng(0)
    cases = [raw[:n] for n in (0, 10, len(raw) // 2, len(raw) - 1)]
    cases += [b"\x80\x04garbage" * 10, rng.bytes(300)]
    for _ in range(20):
        bad = bytearray(raw)
        for pos in rng.integers(0, len(raw), 4):
            bad[pos] ^= int(rng.integers(1, 256))
        cases.append(bytes(bad))
    for i, data in enumerate(cases):
        path = tmp_path / f"bad{i}.pt"
        path.write_bytes(data)
        with watchdog():
            try:
                m = tc.load_checkpoint(path)
            except REFUSED:
                continue
        # a flip in slack bytes may leave a valid state_dict: then it must run
        assert m.run(np.zeros((2, 3), np.float32)).shape == (2, 4)
    with pytest.raises(tinyrnn.ModelNotFoundError):
        tc.load_checkpoint(tmp_path / "missing.pt")


@torch_needed
def test_state_dicts_that_lie(tmp_path, torch):
    lstm = torch.nn.LSTM(3, 4)
    base = {k: v.clone() for k, v in lstm.state_dict().items()}
    cases = {
        "hidden mismatch": {**base, "weight_hh_l0": torch.zeros(16, 5)},
        "ragged gates": {**base, "weight_ih_l0": torch.zeros(15, 3)},
        "bias size": {**base, "bias_ih_l0": torch.zeros(7)},
        "nan weight": {**base, "weight_ih_l0": torch.full((16, 3), float("nan"))},
        "3-d weight": {**base, "weight_ih_l0": torch.zeros(16, 3, 1)},
        "layer 1 without 0": {k.replace("_l0", "_l1"): v for k, v in base.items()},
        "huge empty": {**base, "weight_ih_l0": torch.zeros(0, 10**9)},
    }
    for name, sd in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.pt"
        torch.save(sd, path)
        with watchdog(), pytest.raises(REFUSED):
            tc.load_checkpoint(path)
            pytest.fail(f"{name}: loaded")


@pytest.mark.skipif(not HAS_TORCH, reason="the converter has no from_torch")
def test_from_torch_refuses_non_modules(torch):
    for junk in (None, 3, "lstm", {"weight_ih_l0": torch.zeros(4, 3)}):
        with pytest.raises(tinyrnn.UnsupportedModelError):
            tc.from_torch(junk)


# --- ONNX ------------------------------------------------------------------------------------

onnx_needed = pytest.mark.skipif(not HAS_ONNX, reason="the converter has no from_onnx")


@pytest.fixture
def onnx():
    return pytest.importorskip("onnx")


def _lstm_graph(onnx, H=4, I=3, nodes=None, inits=None, inputs=None, opset=17):
    """A one-LSTM ONNX model; ``nodes``/``inits``/``inputs`` replace the defaults."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    W = numpy_helper.from_array(rng.normal(0, 0.5, (1, 4 * H, I)).astype(np.float32), "W")
    R = numpy_helper.from_array(rng.normal(0, 0.5, (1, 4 * H, H)).astype(np.float32), "R")
    lstm = helper.make_node("LSTM", ["X", "W", "R"], ["Y", "Yh"], hidden_size=H)
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", 1, "B", H])
    graph = helper.make_graph(nodes if nodes is not None else [lstm], "g",
                              inputs if inputs is not None else [x], [y],
                              initializer=inits if inits is not None else [W, R])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _convert(path_or_model):
    with watchdog():
        return tc.from_onnx(path_or_model)


@onnx_needed
def test_the_valid_graph_converts(onnx):
    m = _convert(_lstm_graph(onnx))
    assert m.run(np.zeros((5, 3), np.float32)).shape[-1] == 4


@onnx_needed
def test_graph_with_a_cycle(onnx):
    from onnx import helper

    a = helper.make_node("Add", ["X", "b_out"], ["a_out"])
    b = helper.make_node("Relu", ["a_out"], ["b_out"])
    lstm = helper.make_node("LSTM", ["b_out", "W", "R"], ["Y", "Yh"], hidden_size=4)
    model = _lstm_graph(onnx, nodes=[a, b, lstm])
    with pytest.raises(REFUSED):
        _convert(model)
    # the same cycle listed in an order a naive topological walk would accept first
    model = _lstm_graph(onnx, nodes=[lstm, b, a])
    with pytest.raises(REFUSED):
        _convert(model)


@onnx_needed
def test_missing_initializer(onnx):
    from onnx import numpy_helper

    W = numpy_helper.from_array(np.zeros((1, 16, 3), np.float32), "W")
    with pytest.raises(REFUSED, match="R"):
        _convert(_lstm_graph(onnx, inits=[W]))


def _external(onnx, tmp_path, location: str, make_target: bool = True):
    """A model folder whose W initializer's bytes are said to live at ``location``."""
    from onnx import TensorProto

    model = _lstm_graph(onnx)
    W = model.graph.initializer[0]
    data = np.asarray(onnx.numpy_helper.to_array(W)).tobytes()
    W.ClearField("raw_data")
    W.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(len(data)))):
        entry = W.external_data.add()
        entry.key, entry.value = k, v
    folder = tmp_path / "model"
    folder.mkdir(parents=True, exist_ok=True)
    if make_target:
        target = (folder / location) if not os.path.isabs(location) else None
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@onnx_needed
def test_external_data_inside_the_folder_loads(onnx, tmp_path):
    m = _convert(_external(onnx, tmp_path, "weights.bin"))
    assert m.run(np.zeros((2, 3), np.float32)).shape == (2, 4)


@onnx_needed
@pytest.mark.parametrize("location", ["../secret.bin", "../../secret.bin", "sub/../../secret.bin"])
def test_external_data_outside_the_folder_is_refused(onnx, tmp_path, location):
    path = _external(onnx, tmp_path, location)
    assert (path.parent / location).resolve().exists()  # the bytes are there to be stolen
    with pytest.raises(REFUSED):
        _convert(path)


@onnx_needed
def test_external_data_absolute_or_symlinked_out_is_refused(onnx, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.zeros(48, np.float32).tobytes())
    with pytest.raises(REFUSED):
        _convert(_external(onnx, tmp_path, str(secret), make_target=False))
    path = _external(onnx, tmp_path / "b", "link.bin", make_target=False)
    (path.parent / "link.bin").symlink_to(secret)
    with pytest.raises(REFUSED):
        _convert(path)


@onnx_needed
def test_absurd_shapes(onnx):
    from onnx import TensorProto, helper, numpy_helper

    # an initializer claiming 10^12 floats with no bytes behind them
    huge = TensorProto(name="R", data_type=TensorProto.FLOAT, dims=[1, 16, 10**12])  # no data at all
    W = numpy_helper.from_array(np.zeros((1, 16, 3), np.float32), "W")
    with pytest.raises(REFUSED):
        _convert(_lstm_graph(onnx, inits=[W, huge]))
    # hidden_size far beyond the weights
    model = _lstm_graph(onnx)
    model.graph.node[0].attribute[0].i = 10**9
    with pytest.raises(REFUSED):
        _convert(model)
    # an input whose feature size is absurd (the weights disagree too)
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", 10**12])
    with pytest.raises(REFUSED):
        _convert(_lstm_graph(onnx, inputs=[x]))


@onnx_needed
def test_damaged_onnx_bytes(onnx, tmp_path):
    raw = _lstm_graph(onnx).SerializeToString()
    rng = np.random.default_rng(1)
    cases = [raw[:n] for n in (0, 1, 7, len(raw) // 3, len(raw) // 2, len(raw) - 1)]
    cases += [rng.bytes(200), b"\x08" * 100]
    for _ in range(25):
        bad = bytearray(raw)
        for pos in rng.integers(0, len(raw), 3):
            bad[pos] ^= int(rng.integers(1, 256))
        cases.append(bytes(bad))
    outcomes = {"refused": 0, "loaded": 0}
    for i, data in enumerate(cases):
        path = tmp_path / f"bad{i}.onnx"
        path.write_bytes(data)
        try:
            m = _convert(path)
        except REFUSED:
            outcomes["refused"] += 1
            continue
        outcomes["loaded"] += 1  # a flip inside a float weight is still a valid model
        m.run(np.zeros((2, 3), np.float32))
    assert outcomes["refused"] >= len(cases) // 2, outcomes
    with pytest.raises(tinyrnn.ModelNotFoundError):
        tc.from_onnx(tmp_path / "missing.onnx")


@torch_needed
def test_generated_state_dict_lies(tmp_path, torch):
    """hypothesis: one tensor of a valid 2-layer bidirectional state_dict reshaped, dropped
    or renamed. Refused, or a model that runs."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    base = {}
    for cell, mod in (("lstm", torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)),
                      ("gru", torch.nn.GRU(3, 4, num_layers=2, bidirectional=True)),
                      ("lstm_proj", torch.nn.LSTM(3, 4, proj_size=2))):
        base[cell] = {f"rnn.{k}": v.detach().clone() for k, v in mod.state_dict().items()}

    @settings(max_examples=int(os.environ.get("TINYRNN_FUZZ_EXAMPLES", "60")), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(cell=st.sampled_from(sorted(base)), which=st.integers(0, 100), action=st.sampled_from(
        ["reshape", "drop", "rename", "dtype"]), shape=st.lists(st.integers(0, 17), max_size=3),
        name=st.sampled_from(["rnn.weight_ih_l5", "rnn.bias_hh_l0_reverse", "rnn.weight_hr_l1",
                              "head.weight", "emb.weight", "x"]))
    def case(cell, which, action, shape, name):
        sd = dict(base[cell])
        key = sorted(sd)[which % len(sd)]
        if action == "reshape":
            sd[key] = torch.zeros(shape)
        elif action == "drop":
            del sd[key]
        elif action == "rename":
            sd[name] = sd.pop(key)
        else:
            sd[key] = sd[key].to(torch.float64 if shape else torch.int64)
        path = tmp_path / "sd.pt"
        torch.save(sd, path)
        with watchdog():
            try:
                m = tc.load_checkpoint(path)
            except REFUSED:
                return
        x = np.zeros((2, 5, *m.input.shape), np.float32) if not m.input.tokens else np.zeros((2, 5), np.int64)
        assert m.run(x).shape[:2] == (2, 5)

    case()


@onnx_needed
def test_folding_refuses_absurd_constant_tensors(onnx):
    """A shape-making op with a constant absurd shape must be refused before numpy tries to
    allocate it (10^5 x 10^5 floats would be 40 GB)."""
    from onnx import TensorProto, helper, numpy_helper

    for op, inits, extra in (
        ("ConstantOfShape", [numpy_helper.from_array(np.array([10**5, 10**5], np.int64), "shape")], {}),
        ("Expand", [numpy_helper.from_array(np.zeros(1, np.float32), "v"),
                    numpy_helper.from_array(np.array([10**5, 10**5], np.int64), "shape")], {}),
        ("Tile", [numpy_helper.from_array(np.zeros((2, 2), np.float32), "v"),
                  numpy_helper.from_array(np.array([10**5, 10**5], np.int64), "shape")], {}),
        ("Range", [numpy_helper.from_array(np.array(0, np.int64), "v"),
                   numpy_helper.from_array(np.array(10**11, np.int64), "shape"),
                   numpy_helper.from_array(np.array(1, np.int64), "d")], {}),
    ):
        names = [i.name for i in inits]
        big = helper.make_node(op, names, ["big"], **extra)
        shape = helper.make_node("Shape", ["big"], ["bs"])
        add = helper.make_node("Add", ["X", "bsf"], ["X2"])
        cast = helper.make_node("Cast", ["bs"], ["bsf"], to=TensorProto.FLOAT)
        rng = np.random.default_rng(0)
        W = numpy_helper.from_array(rng.normal(0, 0.5, (1, 16, 3)).astype(np.float32), "W")
        R = numpy_helper.from_array(rng.normal(0, 0.5, (1, 16, 4)).astype(np.float32), "R")
        lstm = helper.make_node("LSTM", ["X2", "W", "R"], ["Y", "Yh"], hidden_size=4)
        model = _lstm_graph(onnx, nodes=[big, shape, cast, add, lstm], inits=[*inits, W, R])
        with pytest.raises(REFUSED, match="would make a constant"):
            _convert(model)


@onnx_needed
def test_generated_onnx_lies(onnx):
    """hypothesis: one attribute, initializer shape or node input of a valid LSTM/GRU graph
    changed. Refused, or a model that runs; never a hang (watchdog) or another error."""
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from onnx import helper, numpy_helper

    def gru_graph():
        from onnx import TensorProto

        rng = np.random.default_rng(1)
        W = numpy_helper.from_array(rng.normal(0, 0.5, (2, 12, 3)).astype(np.float32), "W")
        R = numpy_helper.from_array(rng.normal(0, 0.5, (2, 12, 4)).astype(np.float32), "R")
        B = numpy_helper.from_array(rng.normal(0, 0.5, (2, 24)).astype(np.float32), "B")
        gru = helper.make_node("GRU", ["X", "W", "R", "B"], ["Y", "Yh"], hidden_size=4, direction="bidirectional",
                               linear_before_reset=1, clip=5.0)
        x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", 3])
        y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", 2, "B", 4])
        g = helper.make_graph([gru], "g", [x], [y], initializer=[W, R, B])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    bases = [_lstm_graph(onnx).SerializeToString(), gru_graph().SerializeToString()]
    values = st.one_of(st.integers(-2**40, 2**40), st.sampled_from([0, 1, -1, 10**9]),
                       st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                       st.sampled_from(["forward", "reverse", "bidirectional", "Tanh", "Relu", "X", "W", "Y", ""]))

    @settings(max_examples=int(os.environ.get("TINYRNN_FUZZ_EXAMPLES", "60")), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(base=st.sampled_from([0, 1]), what=st.sampled_from(["attr", "dims", "input", "output", "opset"]),
           idx=st.integers(0, 50), value=values, dims=st.lists(st.integers(0, 40), max_size=4))
    def case(base, what, idx, value, dims):
        model = onnx.ModelProto()
        model.ParseFromString(bases[base])
        node = model.graph.node[0]
        if what == "attr":
            a = node.attribute[idx % len(node.attribute)]
            if a.type == onnx.AttributeProto.INT and isinstance(value, int):
                a.i = value
            elif a.type == onnx.AttributeProto.FLOAT and isinstance(value, float):
                a.f = value
            elif a.type == onnx.AttributeProto.STRING and isinstance(value, str):
                a.s = value.encode()
            else:
                node.attribute.append(helper.make_attribute("activations", [str(value)]))
        elif what == "dims":
            init = model.graph.initializer[idx % len(model.graph.initializer)]
            del init.dims[:]
            init.dims.extend(dims)
        elif what == "input":
            node.input[idx % len(node.input)] = str(value)
        elif what == "output":
            node.output[idx % len(node.output)] = str(value)
        else:
            model.opset_import[0].version = int(value) if isinstance(value, int) and abs(value) < 10**6 else 1
        try:
            m = _convert(model)
        except REFUSED:
            return
        x = np.zeros((2, 5, *m.input.shape), np.float32) if not m.input.tokens else np.zeros((2, 5), np.int64)
        assert m.run(x).shape[:2] == (2, 5)

    case()
