"""Valid model files to damage, the header surgery to damage them with, and the check every
damaged file must pass. Shared by the hypothesis test (tests/test_format_fuzz.py) and the
atheris fuzz target (tests/fuzz/fuzz_load.py).

The rule being checked: ``tinyrnn.loads`` on any bytes either raises ``ModelFormatError``
(with a message) or returns a model that runs cleanly on valid input. Anything else (another
exception type, a crash, an output of the wrong shape) is a bug.
"""

from __future__ import annotations

import json
import struct
import warnings

import numpy as np

import tinyrnn
from builders import layered_text_model, random_recurrent
from tinyrnn import InputSpec, Model
from tinyrnn.layers import Activation, Dense


def sample_models(seed: int = 7) -> dict[str, Model]:
    """Small models covering every layer kind, option and stored dtype."""
    rng = np.random.default_rng(seed)
    text = layered_text_model(rng, {"source": "test"})
    rnn, _ = random_recurrent(rng, "rnn", 2, 3, name="rnn", activations=["relu"])
    fc = Dense("fc", None, {"W": rng.normal(0, 1, (3, 2)).astype(np.float32),
                            "b": rng.normal(0, 1, 2).astype(np.float32)}, 3, 2)
    feats = Model([rnn, fc, Activation("act", None, "leakyrelu", 0.1)], InputSpec.features(2))
    out = {"text": text, "features_int8": feats.quantize("int8"), "text_fp16": text.quantize("fp16")}
    try:  # the graph layers (a Silero-like model's), where present
        from tinyrnn.graph_layers import Concat, Pad, Reduce, Reshape, Slice
    except ImportError:  # pragma: no cover - a tree without them
        return out
    graph = [Slice("a", ["input"], 1, 1, 5, 2), Slice("b", ["input"], 1, 0, 2), Concat("c", ["b", "a", "b"], 1),
             Reshape("y", ["c"], (4, 9)), Pad("p", ["y"], 1, 1, 1, "constant"), Reduce("r", ["p"], "mean", 1, False)]
    out["graph"] = Model(graph, InputSpec.features(6, 5))
    return out


def sample_files(seed: int = 7) -> dict[str, bytes]:
    return {k: tinyrnn.format.dumps(m) for k, m in sample_models(seed).items()}


# --- header surgery ------------------------------------------------------------------------


def split(raw: bytes) -> tuple[dict, dict, bytes]:
    """``(header without __metadata__, architecture, data bytes)`` of a valid file."""
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    arch = json.loads(header.pop("__metadata__")["tinyrnn"])
    return header, arch, raw[8 + n:]


def join(header: dict, arch, data: bytes, metadata: bool = True) -> bytes:
    """A file from its parts (``arch`` is stored as the metadata JSON string)."""
    head = dict(header)
    if metadata:
        head["__metadata__"] = {"tinyrnn": json.dumps(arch)}
    text = json.dumps(head).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def paths(node, prefix=()) -> list[tuple]:
    """Every path (tuple of keys/indices) to a node of a JSON tree, the root excluded."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        out.extend(paths(v, prefix + (k,)))
    return out


def set_path(root, path: tuple, value, delete: bool = False) -> None:
    node = root
    for k in path[:-1]:
        node = node[k]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value


# --- the check -----------------------------------------------------------------------------


def exercise(model: Model, seed: int = 0) -> None:
    """Run a model that loaded on valid input: offline, and as a stream when it is causal.

    Raises AssertionError on a wrong output shape; lets any unexpected exception through.
    """
    rng = np.random.default_rng(seed)
    T = 3
    if model.input.tokens:
        x = rng.integers(0, model.input.vocab_size, (2, T))
    else:
        x = rng.normal(0, 1, (2, T, *model.input.shape)).astype(np.float32)
    y = model.run(x)
    assert y.shape == (2, T, *model.output_shape), (y.shape, model.output_shape)
    if model.streamable:
        s = model.stream()
        step = s.step(x[0, 0])
        assert step.shape == model.output_shape
        assert s.process(x[0]).shape == (T, *model.output_shape)
    if model.vocab is not None:
        model.decode(x[0])


def check_bytes(raw: bytes) -> str:
    """Load ``raw``; returns ``"refused"`` or ``"loaded"``. Fails on anything else."""
    # numpy's RuntimeWarnings (an overflow in a cast, say) are errors here: they mean a value
    # slipped past validation and turned into something else on its way to a kernel
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            model = tinyrnn.loads(raw)
        except tinyrnn.ModelFormatError as e:
            assert str(e), "a ModelFormatError must say what is wrong"
            return "refused"
        exercise(model)
    return "loaded"
