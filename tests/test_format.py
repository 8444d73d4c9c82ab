"""The .trnn file: round trips, safetensors compatibility, and validation."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import tinyrnn
from builders import layered_text_model, random_recurrent
from tinyrnn import InputSpec, Model


@pytest.fixture
def text_model(rng):
    return layered_text_model(rng, {"source": "test", "bpc": 1.5})


def test_round_trip_gives_identical_outputs(tmp_path, rng, text_model):
    path = tmp_path / "m.trnn"
    text_model.save(path)
    loaded = tinyrnn.load(path)
    ids = rng.integers(0, 5, (2, 8))
    np.testing.assert_array_equal(loaded.run(ids), text_model.run(ids))
    assert loaded.architecture() == text_model.architecture()
    assert loaded.vocab == text_model.vocab and loaded.metadata == {"source": "test", "bpc": 1.5}
    for name, arr in text_model.tensors().items():
        np.testing.assert_array_equal(loaded.tensors()[name], arr)


def test_loaded_tensors_are_memory_mapped_read_only(tmp_path, text_model):
    path = tmp_path / "m.trnn"
    text_model.save(path)
    loaded = tinyrnn.load(path)
    w = loaded.layers[1].params["W"]
    assert not w.flags.writeable
    assert w.base is not None and not w.flags.owndata  # a view into the mapped file


def test_safetensors_package_reads_it(tmp_path, text_model):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    path = tmp_path / "m.trnn"
    text_model.save(path)
    tensors = load_file(str(path))
    assert set(tensors) == set(text_model.tensors())
    for k, v in tensors.items():
        np.testing.assert_array_equal(v, text_model.tensors()[k])
    with safe_open(str(path), "np") as f:
        arch = json.loads(f.metadata()["tinyrnn"])
    assert arch["format_version"] == 1 and arch["output"] == "probs"


def test_a_file_written_by_safetensors_loads(tmp_path, text_model):
    """Another tool may write the same content without our alignment care."""
    from safetensors.numpy import save_file

    path = tmp_path / "other.trnn"
    save_file(dict(text_model.tensors()), str(path),
              metadata={"tinyrnn": json.dumps(text_model.architecture())})
    loaded = tinyrnn.load(path)
    ids = np.array([0, 1, 2, 3, 4])
    np.testing.assert_array_equal(loaded.run(ids), text_model.run(ids))


def test_pickle_carries_the_file_bytes(rng, text_model):
    import pickle

    data = pickle.dumps(text_model)
    assert b"tinyrnn" in data and len(data) < 2 * len(tinyrnn.format.dumps(text_model)) + 1000
    back = pickle.loads(data)
    ids = rng.integers(0, 5, 6)
    np.testing.assert_array_equal(back.run(ids), text_model.run(ids))


def _rewrite(path, out, edit):
    """Load a file's header as JSON, let ``edit(header, arch)`` change it, write ``out``."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    arch = json.loads(header["__metadata__"]["tinyrnn"])
    edit(header, arch)
    header["__metadata__"]["tinyrnn"] = json.dumps(arch)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    out.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def _lstm_entry(arch):
    return next(l for l in arch["layers"] if l["type"] == "lstm")


BAD_EDITS = {
    "future version": (lambda h, a: a.update(format_version=2), "newer than this tinyrnn"),
    "unknown layer type": (lambda h, a: a["layers"][0].update(type="transformer"), "unknown layer type"),
    "hidden size lies": (lambda h, a: _lstm_entry(a).update(hidden_size=5), r"must have shape"),
    "missing tensor": (lambda h, a: a["layers"].append(
        {"name": "extra", "type": "dense", "inputs": ["probs"], "in_features": 5, "out_features": 2}),
        "tensor 'W' is missing"),
    "dtype unknown": (lambda h, a: h["lstm.W"].update(dtype="Q7"), "has dtype 'Q7'"),
    "shape vs bytes": (lambda h, a: h["lstm.W"].update(shape=[1, 3, 17]), "needs .* bytes"),
    "huge dimension": (lambda h, a: h["lstm.W"].update(shape=[10**12, 3, 16]), "needs .* bytes"),
    "offset past end": (lambda h, a: h["lstm.W"].update(data_offsets=[0, 10**9]), "outside the file"),
    "negative offset": (lambda h, a: h["lstm.W"].update(data_offsets=[-4, 188]), "outside the file"),
    "dangling input": (lambda h, a: a["layers"][1].update(inputs=["nowhere"]), "reads 'nowhere'"),
    "vocab size": (lambda h, a: a.update(vocab=["a"]), "vocabulary has 1 entries"),
    "bad activation": (lambda h, a: _lstm_entry(a).update(activations=[["cube", 0, 0]] * 3), "activation"),
    "string hidden": (lambda h, a: _lstm_entry(a).update(hidden_size="4"), "must be an integer"),
    "proj too big": (lambda h, a: _lstm_entry(a).update(proj_size=9), r"proj_size"),
    "tensor of no layer": (lambda h, a: a["layers"].pop(), "tensors of no layer|reads|output"),
    "overlapping offsets": (lambda h, a: h["lstm.proj"].update(data_offsets=[o - 4 for o in h["lstm.proj"]["data_offsets"]]),
                            "overlaps the tensor before it"),
    "gap between tensors": (lambda h, a: h["lstm.proj"].update(data_offsets=[o + 4 for o in h["lstm.proj"]["data_offsets"]]),
                            "gap of 4 bytes|outside the file"),
    # values of the wrong JSON type where a hashable one was looked up (once a TypeError)
    "dtype not a string": (lambda h, a: h["lstm.W"].update(dtype=["F32"]), "has dtype"),
    "type not a string": (lambda h, a: a["layers"][0].update(type=["lstm"]), "'type' must be"),
    "name not a string": (lambda h, a: a["layers"][0].update(name=["emb"]), "layer name must match"),
    "empty tensor, absurd axes": (lambda h, a: h["lstm.P"].update(shape=[2**70, 0], data_offsets=[0, 0]),
                                  r"2\^48"),
    # finite as JSON but not as float32: the kernels would see infinity
    "alpha beyond float32": (lambda h, a: a["layers"][2].update(activations=[["hardsigmoid", 1e300, 0.4],
                                                                              ["softsign", 0, 0]]), "activation"),
    "clip beyond float32": (lambda h, a: a["layers"][2].update(clip=1e39), "finite float32"),
    "clip an enormous int": (lambda h, a: a["layers"][2].update(clip=10**400), "finite float32"),
    # a token id the input accepts must have a row in the table (else the kernel reads past it)
    "embedding smaller than the input": (lambda h, a: a.update(input={"type": "tokens", "vocab_size": 6},
                                                               vocab=None), "embedding table has 5 rows"),
}


@pytest.mark.parametrize("case", sorted(BAD_EDITS))
def test_lying_headers_are_refused(tmp_path, text_model, case):
    edit, match = BAD_EDITS[case]
    good = tmp_path / "good.trnn"
    text_model.save(good)
    bad = tmp_path / "bad.trnn"
    _rewrite(good, bad, edit)
    with pytest.raises(tinyrnn.ModelFormatError, match=match):
        tinyrnn.load(bad)


def test_truncated_file(tmp_path, text_model):
    path = tmp_path / "m.trnn"
    text_model.save(path)
    raw = path.read_bytes()
    for cut in (0, 5, 8, 20, len(raw) // 2, len(raw) - 1):
        (tmp_path / "cut.trnn").write_bytes(raw[:cut])
        with pytest.raises(tinyrnn.ModelFormatError):
            tinyrnn.load(tmp_path / "cut.trnn")


def test_plain_safetensors_file(tmp_path):
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(tinyrnn.ModelFormatError, match="without tinyrnn metadata"):
        tinyrnn.load(tmp_path / "plain.safetensors")


def test_missing_file_and_garbage(tmp_path):
    with pytest.raises(tinyrnn.ModelNotFoundError, match="cannot open"):
        tinyrnn.load(tmp_path / "nope.trnn")
    (tmp_path / "junk.trnn").write_bytes(b"\xff" * 64)
    with pytest.raises(tinyrnn.ModelFormatError, match="header length"):
        tinyrnn.load(tmp_path / "junk.trnn")
    with pytest.raises(tinyrnn.ModelFormatError, match="bytes of a .trnn"):
        tinyrnn.loads("not bytes")


def test_nonfinite_weights_are_refused(tmp_path, rng):
    layer, _ = random_recurrent(rng, "rnn", 2, 3)
    w = layer.params["W"].copy()
    w[0, 0, 0] = np.nan
    layer.params["W"] = w
    layer.inputs = ["input"]
    m = Model.__new__(Model)  # bypass construction checks to write a bad file
    m.layers, m.input, m.output, m.vocab, m.metadata = [layer], InputSpec.features(2), "rec", None, {}
    path = tmp_path / "nan.trnn"
    tinyrnn.format.save(m, path)
    with pytest.raises(tinyrnn.ModelFormatError, match="NaN or infinity"):
        tinyrnn.load(path)


def _float_activation_file(tmp_path, edit):
    from tinyrnn.layers import Activation

    m = Model([Activation("act", None, "tanh")], InputSpec.features(4))
    good = tmp_path / "act.trnn"
    m.save(good)
    bad = tmp_path / "act_bad.trnn"
    _rewrite(good, bad, edit)
    return bad


@pytest.mark.parametrize("edit, match", [
    # no tensor backs an activation's size: the input shape alone must be bounded
    (lambda h, a: a["input"].update(shape=[2**24, 2**24]), r"more than 2\^24 values per step"),
    (lambda h, a: a.update(input={"type": "float", "shape": [4096, 4096]}, layers=[
        {"name": f"a{i}", "type": "activation", "inputs": ["input" if i == 0 else f"a{i - 1}"], "fn": "relu"}
        for i in range(4)], output="a3"), "values across its layers"),
    (lambda h, a: a["layers"][0].update(fn=["tanh"]), "'fn' must be one of"),
])
def test_sizes_no_tensor_backs_are_bounded(tmp_path, edit, match):
    with pytest.raises(tinyrnn.ModelFormatError, match=match):
        tinyrnn.load(_float_activation_file(tmp_path, edit))


def test_duplicate_keys_are_refused(tmp_path, text_model):
    raw = tinyrnn.format.dumps(text_model)
    n = struct.unpack("<Q", raw[:8])[0]
    header = raw[8:8 + n].decode().rstrip()
    # the same tensor twice: json would silently keep the second
    entry = header[header.index('"emb.table"'):header.index("}", header.index('"emb.table"')) + 1]
    text = ("{" + entry + "," + header[1:]).encode()
    text += b" " * (-len(text) % 8)
    with pytest.raises(tinyrnn.ModelFormatError, match="names 'emb.table' twice"):
        tinyrnn.loads(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    # a key twice inside the architecture
    arch = text_model.architecture()
    meta = json.dumps(arch)
    meta = meta.replace('"format_version": 1', '"format_version": 1, "format_version": 1')
    h = json.loads(raw[8:8 + n])
    h["__metadata__"]["tinyrnn"] = meta
    text = json.dumps(h).encode()
    text += b" " * (-len(text) % 8)
    with pytest.raises(tinyrnn.ModelFormatError, match="names 'format_version' twice"):
        tinyrnn.loads(struct.pack("<Q", len(text)) + text + raw[8 + n:])
