"""tinyrnn as an ONNX backend (``onnx.backend.base.Backend``).

``prepare(model)`` checks the model and returns a ``TinyRNNRep``; ``rep.run(inputs)``
binds every input that carries weights as a constant, converts the graph with
``from_onnx`` (cached per weight values), runs it with tinyrnn and returns the graph's
outputs in the graph's own layout: ``Y`` as ``(T, D, B, H)`` (or ``(B, T, D, H)`` with
``layout=1``), ``Y_h``/``Y_c`` from the final state. State inputs (``initial_h``,
``initial_c``) start the run, a ``sequence_lens`` input becomes ``lengths``. This is what
lets ONNX's own node tests for LSTM, GRU and RNN run against tinyrnn::

    from tinyrnn_converters import onnx_backend
    rep = onnx_backend.prepare(model_proto)
    outputs = rep.run([X, W, R])          # or a dict name -> array

Errors: ``UnsupportedModelError`` / ``ModelFormatError`` from the import, ``InputError``
for inputs of the wrong number or shape.
"""

from __future__ import annotations

import hashlib
from collections import namedtuple

import numpy as np
from onnx.backend.base import Backend, BackendRep

from tinyrnn.errors import InputError

from .onnx import classify_inputs
from .onnx_fold import initial_values, load_model


def to_batch_first(x: np.ndarray, input_axes: list) -> np.ndarray:
    """An input in the graph's axis order (``input_axes`` like ``["T", "B", "F"]``) as
    tinyrnn's ``(B, T, ...)``."""
    order = [input_axes.index("B"), input_axes.index("T")] + [i for i, r in enumerate(input_axes) if r == "F"]
    return np.transpose(x, order)


def to_graph_layout(y: np.ndarray, axes: list, feat: list) -> np.ndarray:
    """tinyrnn's output ``y (B, T, F)`` in the graph's view: ``axes`` lists, per graph axis,
    its atoms ("B", "T" or feature-factor ints), ``feat`` the feature factors."""
    B, T = y.shape[:2]
    src = y.reshape(B, T, *feat)
    names = ["B", "T", *range(len(feat))]
    flat = [a for ax in axes for a in ax]
    order = [names.index(a) for a in flat]
    order += [i for i in range(len(names)) if i not in order]  # size-1 factors no axis shows
    moved = np.transpose(src, order)
    sizes = {"B": B, "T": T, **{k: f for k, f in enumerate(feat)}}
    return moved.reshape([int(np.prod([sizes[a] for a in ax], dtype=np.int64)) for ax in axes])


class TinyRNNRep(BackendRep):
    """A prepared ONNX model; ``run`` converts (once per weight values) and runs it."""

    def __init__(self, model, opset: int):
        self.model, self.opset = model, opset
        consts = set(initial_values(model, None))
        self.roles = classify_inputs(model.graph, consts)
        self.input_names = [i.name for i in model.graph.input if i.name not in consts]
        self.output_names = [o.name for o in model.graph.output]
        self._cache: dict = {}

    def _convert(self, feeds: dict):
        from .onnx import from_onnx

        weights = {k: v for k, v in feeds.items() if self.roles.get(k) == "weight"}
        key = hashlib.sha1(b"".join(k.encode() + np.ascontiguousarray(v).tobytes()
                                    for k, v in sorted(weights.items()))).hexdigest()
        if key not in self._cache:
            self._cache = {key: from_onnx(self.model, constants=weights)}
        return self._cache[key]

    def run(self, inputs, **kwargs):
        """Outputs (a namedtuple in graph order) for ``inputs`` (list in input order, or dict)."""
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
            if len(inputs) > len(self.input_names):
                raise InputError(f"the model takes {len(self.input_names)} inputs {self.input_names}, "
                                 f"found {len(inputs)}")
            feeds = dict(zip(self.input_names, inputs))
        feeds = {k: np.asarray(v) for k, v in feeds.items()}
        m = self._convert(feeds)
        meta = m.metadata["onnx"]
        x = feeds.get(meta["input"])
        if x is None:
            raise InputError(f"input {meta['input']!r} is missing")
        xb = to_batch_first(x, meta["input_axes"])
        B = xb.shape[0]
        state = None
        if meta["state_inputs"]:
            state = {}
            for layer in m.recurrent_layers:
                for k, shp in layer.state_shapes().items():
                    state[f"{layer.name}.{k}"] = np.zeros((B, *shp), np.float32)
            for s in meta["state_inputs"]:
                arr = feeds.get(s["input"])
                if arr is None:
                    continue  # an optional state input left out: zeros
                rows = slice(s["start"], s["stop"])
                part = arr[rows] if s["layout"] == 0 else arr[:, rows]
                if part.ndim == 2:
                    part = part[None] if s["layout"] == 0 else part[:, None]
                state[f"{s['layer']}.{s['kind']}"] = np.ascontiguousarray(
                    np.transpose(part, (1, 0, 2)) if s["layout"] == 0 else part, np.float32)
        lengths = feeds.get(meta["lengths"]) if meta["lengths"] else None
        y, final = m.run(xb, lengths=lengths, state=state, return_state=True)
        results = []
        for name in self.output_names:
            if name == meta["output"]:
                results.append(to_graph_layout(y, meta["output_axes"], meta["output_feat"]))
                continue
            so = next((s for s in meta["state_outputs"] if s["output"] == name), None)
            if so is None:
                raise InputError(f"output {name!r} is neither the per-step output nor recurrent state")
            parts = [final[f"{layer}.{kind}"] for layer, kind, _ in so["parts"]]  # each (B, D, H)
            st = np.concatenate(parts, axis=1)
            results.append(np.transpose(st, (1, 0, 2)) if so["layout"] == 0 else st)
        Outputs = namedtuple("Outputs", [f"o{i}" for i in range(len(results))])
        return Outputs(*results)


class TinyRNNBackend(Backend):
    """``onnx.backend.base.Backend`` running models through tinyrnn on the CPU."""

    @classmethod
    def is_compatible(cls, model, device: str = "CPU", **kwargs) -> bool:
        try:
            load_model(model)
        except Exception:
            return False
        return device.upper().startswith("CPU")

    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs) -> TinyRNNRep:
        super().prepare(model, device, **kwargs)
        model, opset, _ = load_model(model)
        return TinyRNNRep(model, opset)

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device: str = "CPU", outputs_info=None, **kwargs):
        raise NotImplementedError("tinyrnn runs whole models; use prepare(model).run(inputs)")

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper().startswith("CPU")


prepare = TinyRNNBackend.prepare
run_model = TinyRNNBackend.run_model
run_node = TinyRNNBackend.run_node
supports_device = TinyRNNBackend.supports_device
is_compatible = TinyRNNBackend.is_compatible
