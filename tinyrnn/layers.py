"""Layers: what each kind holds, how it is configured, what shapes it maps.

This is the front end. A layer knows its configuration (JSON-able), its stored tensors
(the ``.trnn`` layout), and the per-step feature shape it produces; it knows nothing about
kernels. Backends (``tinyrnn.backends.cpu``, ``.cuda``) turn layers into kernel calls.

Every value flowing between layers has shape ``(B, T, *feature)``: B streams, T steps and a
per-step feature shape. Feed-forward layers act on each step independently; recurrent
layers carry state from one step to the next.

``Layer.from_config`` validates everything a file could get wrong (types, ranges, tensor
names, shapes and dtypes) and raises ``ModelFormatError``; a layer that exists has been
checked, which is what lets the kernels skip bounds checks.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

import numpy as np

from . import spec
from .errors import ModelFormatError

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
MAX_DIM = 1 << 24  # no feature, hidden or vocabulary size beyond 16M: a file claiming one lies


# --- validation helpers -----------------------------------------------------------------


def _fail(layer: str, msg: str) -> ModelFormatError:
    return ModelFormatError(f"layer {layer!r}: {msg}")


def _get_int(cfg: dict, key: str, layer: str, lo: int = 1, hi: int = MAX_DIM, default=None) -> int:
    v = cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(layer, f"{key!r} must be an integer, found {v!r}")
    if not lo <= v <= hi:
        raise _fail(layer, f"{key!r} must be in [{lo}, {hi}], found {v}")
    return v


def _get_bool(cfg: dict, key: str, layer: str, default: bool = False) -> bool:
    v = cfg.get(key, default)
    if not isinstance(v, bool):
        raise _fail(layer, f"{key!r} must be true or false, found {v!r}")
    return v


def _get_float(cfg: dict, key: str, layer: str, default=None, allow_none=False):
    v = cfg.get(key, default)
    if v is None and allow_none:
        return None
    if not _finite32(v):
        raise _fail(layer, f"{key!r} must be a finite float32 number, found {v!r}")
    return float(v)


_F32_MAX = float(np.finfo(np.float32).max)


def _finite32(v) -> bool:
    """A JSON number the kernels can hold: finite once cast to float32 (1e300 is not)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v) and abs(float(v)) <= _F32_MAX
    except OverflowError:  # an int too large for a float
        return False


def _get_choice(cfg: dict, key: str, layer: str, choices, default=None) -> str:
    v = cfg.get(key, default)
    # the str test first: a list or dict from a hostile file is unhashable, and `in` on a
    # dict of choices would raise TypeError instead of naming the problem
    if not isinstance(v, str) or v not in choices:
        raise _fail(layer, f"{key!r} must be one of {sorted(choices)}, found {v!r}")
    return v


def _check_tensor(layer: str, name: str, arr, shape: tuple, dtypes: tuple) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise _fail(layer, f"tensor {name!r} is missing")
    if tuple(arr.shape) != tuple(shape):
        raise _fail(layer, f"tensor {name!r} must have shape {tuple(shape)}, found {tuple(arr.shape)}")
    if arr.dtype.name not in dtypes:
        raise _fail(layer, f"tensor {name!r} must be {' or '.join(dtypes)}, found {arr.dtype.name}")
    return arr


def _weights_dtype(cfg: dict, layer: str) -> str:
    return _get_choice(cfg, "weights", layer, spec.WEIGHT_DTYPES, default="float32")


def _frozen(arr: np.ndarray) -> np.ndarray:
    """A read-only, C-contiguous, native-endian array (one numba specialisation for all)."""
    out = np.ascontiguousarray(arr)
    if out.dtype.byteorder == ">":
        out = out.astype(out.dtype.newbyteorder("<"))
    if out.flags.writeable:
        out = out.view()
        out.flags.writeable = False
    return out


# --- base -------------------------------------------------------------------------------


class Layer:
    """One node of a model: reads named values, writes the value named after itself."""

    type: ClassVar[str] = ""
    stateful: ClassVar[bool] = False
    # tensors a weight matrix of this layer may come with: "<name>_scale" for int8
    matrices: ClassVar[tuple[str, ...]] = ()
    # (fewest, most) inputs the layer reads
    arity: ClassVar[tuple[int, int]] = (1, 1)

    def __init__(self, name: str, inputs: list[str], params: dict[str, np.ndarray]):
        self.name = name
        # empty means "the previous layer's output" (the model wires it up)
        self.inputs = list(inputs) if inputs else []
        self.params = {k: _frozen(v) for k, v in params.items()}

    # subclasses implement ------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Architecture fields of this layer as written into the file (JSON-able)."""
        raise NotImplementedError

    def output_shape(self, in_shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        """Per-step feature shape produced from the inputs' feature shapes."""
        raise NotImplementedError

    def expected_tensors(self) -> dict[str, tuple[tuple[int, ...], tuple[str, ...]]]:
        """Name -> (shape, allowed dtypes) of every tensor this layer must hold."""
        return {}

    def describe(self) -> str:
        """A short human description for ``print(model)``."""
        return self.type

    # shared --------------------------------------------------------------------------
    @property
    def weights_dtype(self) -> str:
        return getattr(self, "weights", "float32")

    def num_params(self) -> int:
        return int(sum(v.size for k, v in self.params.items() if not k.endswith("_scale")))

    def nbytes(self) -> int:
        return int(sum(v.nbytes for v in self.params.values()))

    def validate_tensors(self) -> None:
        """Check that ``params`` holds exactly the expected tensors, shapes and dtypes."""
        expected = self.expected_tensors()
        for name, (shape, dtypes) in expected.items():
            _check_tensor(self.name, name, self.params.get(name), shape, dtypes)
        extra = sorted(set(self.params) - set(expected))
        if extra:
            raise _fail(self.name, f"unexpected tensors {extra}")
        for name, arr in self.params.items():
            if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
                raise _fail(self.name, f"tensor {name!r} holds NaN or infinity")

    def _matrix(self, name: str, shape: tuple, scale_shape: tuple) -> dict:
        """Expected entries for a weight matrix stored as ``self.weights``."""
        out = {name: (shape, (self.weights_dtype,))}
        if self.weights_dtype == "int8":
            out[name + "_scale"] = (scale_shape, ("float32",))
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {self.describe()}>"


# --- feed-forward layers ----------------------------------------------------------------


class Embedding(Layer):
    """Token ids -> rows of a table. Input feature shape ``()`` (ids), output ``(dim,)``.

    Tensors: ``table (vocab_size, dim)``; int8 tables add ``table_scale (vocab_size,)``.
    """

    type = "embedding"
    matrices = ("table",)

    def __init__(self, name, inputs, params, vocab_size: int, dim: int, weights="float32"):
        self.vocab_size, self.dim, self.weights = vocab_size, dim, weights
        super().__init__(name, inputs, params)

    @classmethod
    def from_config(cls, name, inputs, cfg, params):
        return cls(name, inputs, params, _get_int(cfg, "vocab_size", name),
                   _get_int(cfg, "dim", name), _weights_dtype(cfg, name))

    def config(self):
        return {"vocab_size": self.vocab_size, "dim": self.dim, "weights": self.weights}

    def expected_tensors(self):
        return self._matrix("table", (self.vocab_size, self.dim), (self.vocab_size,))

    def output_shape(self, in_shapes):
        if in_shapes[0] != ():
            raise _fail(self.name, f"an embedding reads token ids, found features of shape {in_shapes[0]}")
        return (self.dim,)

    def describe(self):
        return f"{self.vocab_size} tokens -> {self.dim}"


class Dense(Layer):
    """``y = x @ W + b`` on the last axis (PyTorch Linear, ONNX Gemm/MatMul+Add).

    Tensors: ``W (in_features, out_features)`` (PyTorch's weight transposed), ``b
    (out_features,)``; int8 adds ``W_scale (out_features,)``.
    """

    type = "dense"
    matrices = ("W",)

    def __init__(self, name, inputs, params, in_features: int, out_features: int, weights="float32"):
        self.in_features, self.out_features, self.weights = in_features, out_features, weights
        super().__init__(name, inputs, params)

    @classmethod
    def from_config(cls, name, inputs, cfg, params):
        return cls(name, inputs, params, _get_int(cfg, "in_features", name),
                   _get_int(cfg, "out_features", name), _weights_dtype(cfg, name))

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features, "weights": self.weights}

    def expected_tensors(self):
        out = self._matrix("W", (self.in_features, self.out_features), (self.out_features,))
        out["b"] = ((self.out_features,), ("float32",))
        return out

    def output_shape(self, in_shapes):
        if in_shapes[0] != (self.in_features,):
            raise _fail(self.name, f"expects features of shape ({self.in_features},), found {in_shapes[0]}")
        return (self.out_features,)

    def describe(self):
        return f"{self.in_features} -> {self.out_features}"


class Activation(Layer):
    """An elementwise function (any entry of ``spec.ACTIVATIONS``) with alpha/beta."""

    type = "activation"

    def __init__(self, name, inputs, fn: str, alpha=None, beta=None):
        if fn not in spec.ACTIVATIONS:
            raise _fail(name, f"unknown activation {fn!r}; known: {sorted(spec.ACTIVATIONS)}")
        self.fn = fn
        self.alpha, self.beta = spec.activation_params(fn, alpha, beta)
        super().__init__(name, inputs, {})

    @classmethod
    def from_config(cls, name, inputs, cfg, params):
        return cls(name, inputs, _get_choice(cfg, "fn", name, spec.ACTIVATIONS),
                   _get_float(cfg, "alpha", name, None, allow_none=True),
                   _get_float(cfg, "beta", name, None, allow_none=True))

    def config(self):
        return {"fn": self.fn, "alpha": self.alpha, "beta": self.beta}

    def output_shape(self, in_shapes):
        return in_shapes[0]

    def describe(self):
        return self.fn


class Softmax(Layer):
    """Softmax, or log-softmax with ``log=True``, over the last axis."""

    type = "softmax"

    def __init__(self, name, inputs, log: bool = False):
        self.log = bool(log)
        super().__init__(name, inputs, {})

    @classmethod
    def from_config(cls, name, inputs, cfg, params):
        return cls(name, inputs, _get_bool(cfg, "log", name))

    def config(self):
        return {"log": self.log}

    def output_shape(self, in_shapes):
        if len(in_shapes[0]) != 1:
            raise _fail(self.name, f"softmax needs a feature vector, found shape {in_shapes[0]}")
        return in_shapes[0]

    def describe(self):
        return "log-softmax" if self.log else "softmax"


# --- recurrent layers -------------------------------------------------------------------


class Recurrent(Layer):
    """An ONNX RNN, LSTM or GRU layer (``type`` is ``"rnn"``, ``"lstm"`` or ``"gru"``).

    Config: ``input_size``, ``hidden_size``, ``direction`` (forward, reverse,
    bidirectional), ``activations`` (list of ``[name, alpha, beta]``), ``clip`` (null or a
    positive number); LSTM adds ``input_forget``, ``peepholes``, ``proj_size`` (0: none);
    GRU adds ``linear_before_reset``. Tensors (see ``tinyrnn.spec`` for the layout):
    ``W (D, I, G*H)``, ``R (D, Hr, G*H)``, ``B (D, 2*G*H)``, LSTM ``P (D, 3*H)`` with
    peepholes and ``proj (D, H, Hr)`` with a projection; int8 adds ``W_scale``, ``R_scale``
    ``(D, G*H)`` and ``proj_scale (D, Hr)``.

    Output per step: ``(D * Hr,)``, directions concatenated (forward first).
    State per stream: ``h (D, Hr)`` and, for LSTM, ``c (D, H)``.
    """

    stateful = True
    matrices = ("W", "R", "proj")

    def __init__(self, name, inputs, params, cell: str, input_size: int, hidden_size: int,
                 direction: str = "forward", activations=None, clip=None, input_forget=False,
                 peepholes=False, proj_size: int = 0, linear_before_reset=False, weights="float32"):
        if cell not in spec.CELL_GATES:
            raise _fail(name, f"unknown cell {cell!r}")
        self.type = cell
        self.cell = cell
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.direction = direction
        self.activations = _normalise_activations(cell, activations, 2 if direction == "bidirectional" else 1)
        self.clip = clip
        self.input_forget = bool(input_forget)
        self.peepholes = bool(peepholes)
        self.proj_size = int(proj_size)
        self.linear_before_reset = bool(linear_before_reset)
        self.weights = weights
        super().__init__(name, inputs, params)

    @classmethod
    def from_config(cls, name, inputs, cfg, params, cell: str):
        acts = cfg.get("activations")
        n = spec.CELL_ACTIVATION_COUNT[cell]
        if acts is not None:
            if not isinstance(acts, list) or len(acts) not in (n, 2 * n):
                raise _fail(name, f"'activations' must list {n} entries for {cell} (or {2 * n} for a "
                                  f"bidirectional layer), found {acts!r}")
            for a in acts:
                if (not isinstance(a, list) or len(a) != 3 or a[0] not in spec.CELL_ACTIVATIONS
                        or not all(_finite32(v) for v in a[1:])):
                    raise _fail(name, f"an activation must be [name, alpha, beta] with name in "
                                      f"{list(spec.CELL_ACTIVATIONS)}, found {a!r}")
        clip = _get_float(cfg, "clip", name, None, allow_none=True)
        if clip is not None and clip <= 0:
            raise _fail(name, f"'clip' must be positive, found {clip}")
        hidden = _get_int(cfg, "hidden_size", name)
        return cls(
            name, inputs, params, cell,
            input_size=_get_int(cfg, "input_size", name),
            hidden_size=hidden,
            direction=_get_choice(cfg, "direction", name, ("forward", "reverse", "bidirectional"), "forward"),
            activations=acts,
            clip=clip,
            input_forget=_get_bool(cfg, "input_forget", name) if cell == "lstm" else False,
            peepholes=_get_bool(cfg, "peepholes", name) if cell == "lstm" else False,
            proj_size=_get_int(cfg, "proj_size", name, lo=0, hi=hidden - 1 if hidden > 1 else 0, default=0)
            if cell == "lstm" else 0,
            linear_before_reset=_get_bool(cfg, "linear_before_reset", name) if cell == "gru" else False,
            weights=_weights_dtype(cfg, name),
        )

    @classmethod
    def from_onnx(cls, cell: str, name: str, W, R, B=None, P=None, proj=None, inputs=None,
                  direction=None, **config) -> "Recurrent":
        """Build a layer from weights in ONNX's layout (converters and tests use this).

        ``W (D, G*H, I)``, ``R (D, G*H, Hr)``, ``B (D, 2*G*H)`` or None (zeros), ``P (D, 3*H)``
        or None, ``proj (D, Hr, H)`` (PyTorch's ``weight_hr`` per direction) or None. Gate
        order is ONNX's. ``config`` takes the keyword arguments of the constructor
        (activations, clip, input_forget, linear_before_reset). Weights are float32.
        """
        W = np.asarray(W, np.float32)
        R = np.asarray(R, np.float32)
        if W.ndim != 3 or R.ndim != 3 or W.shape[0] != R.shape[0] or W.shape[1] != R.shape[1]:
            raise ModelFormatError(f"W must be (D, G*H, I) and R (D, G*H, Hr) with matching D and G*H, "
                                   f"found W {W.shape} and R {R.shape}")
        D, GH, I = W.shape
        G = spec.CELL_GATES[cell]
        if GH % G:
            raise ModelFormatError(f"{cell} W rows must be a multiple of {G}, found {GH}")
        H = GH // G
        params = {"W": W.transpose(0, 2, 1), "R": R.transpose(0, 2, 1),
                  "B": np.zeros((D, 2 * GH), np.float32) if B is None else np.asarray(B, np.float32)}
        if P is not None:
            params["P"] = np.asarray(P, np.float32)
        if proj is not None:
            params["proj"] = np.asarray(proj, np.float32).transpose(0, 2, 1)
        if direction is None:
            direction = "bidirectional" if D == 2 else "forward"
        layer = cls(name, inputs, params, cell, input_size=I, hidden_size=H, direction=direction,
                    peepholes=P is not None, proj_size=0 if proj is None else R.shape[2], **config)
        layer.validate_tensors()
        return layer

    # sizes ---------------------------------------------------------------------------
    @property
    def gates(self) -> int:
        return spec.CELL_GATES[self.cell]

    @property
    def num_directions(self) -> int:
        return 2 if self.direction == "bidirectional" else 1

    @property
    def recurrent_size(self) -> int:
        """Hr: width of h and of each direction's output (proj_size if projected)."""
        return self.proj_size or self.hidden_size

    def config(self):
        cfg = {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "direction": self.direction,
            "activations": self.activations,
            "clip": self.clip,
            "weights": self.weights,
        }
        if self.cell == "lstm":
            cfg.update(input_forget=self.input_forget, peepholes=self.peepholes, proj_size=self.proj_size)
        if self.cell == "gru":
            cfg["linear_before_reset"] = self.linear_before_reset
        return cfg

    def expected_tensors(self):
        D, I, H, G, Hr = self.num_directions, self.input_size, self.hidden_size, self.gates, self.recurrent_size
        out = {}
        out.update(self._matrix("W", (D, I, G * H), (D, G * H)))
        out.update(self._matrix("R", (D, Hr, G * H), (D, G * H)))
        out["B"] = ((D, 2 * G * H), ("float32",))
        if self.peepholes:
            out["P"] = ((D, 3 * H), ("float32",))
        if self.proj_size:
            out.update(self._matrix("proj", (D, H, Hr), (D, Hr)))
        return out

    def activations_for(self, d: int) -> list[list]:
        """Direction d's activation triples."""
        n = spec.CELL_ACTIVATION_COUNT[self.cell]
        return self.activations[n * d:n * (d + 1)] if len(self.activations) > n else self.activations

    def output_shape(self, in_shapes):
        if in_shapes[0] != (self.input_size,):
            raise _fail(self.name, f"expects features of shape ({self.input_size},), found {in_shapes[0]}")
        return (self.num_directions * self.recurrent_size,)

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-stream state arrays (without the leading batch axis)."""
        D = self.num_directions
        out = {"h": (D, self.recurrent_size)}
        if self.cell == "lstm":
            out["c"] = (D, self.hidden_size)
        return out

    def describe(self):
        bits = [f"{self.input_size} -> {self.hidden_size}"]
        if self.proj_size:
            bits.append(f"proj {self.proj_size}")
        if self.direction != "forward":
            bits.append(self.direction)
        if self.peepholes:
            bits.append("peepholes")
        if self.input_forget:
            bits.append("coupled")
        if self.linear_before_reset:
            bits.append("linear_before_reset")
        if self.clip is not None:
            bits.append(f"clip {self.clip:g}")
        default = [[a, *spec.activation_params(a)] for a in spec.CELL_DEFAULT_ACTIVATIONS[self.cell]]
        if self.activations not in (default, default * self.num_directions):
            bits.append("/".join(a[0] for a in self.activations))
        return ", ".join(bits)


def _normalise_activations(cell: str, activations, directions: int) -> list[list]:
    """Each entry as ``[name, alpha, beta]`` with ONNX defaults filled in.

    Accepts names (``"tanh"``), ``[name]`` or ``[name, alpha, beta]`` (alpha/beta may be
    None); ``None`` means the cell's defaults. As in ONNX, a bidirectional layer may list
    the forward direction's activations followed by the reverse's.
    """
    if activations is None:
        activations = spec.CELL_DEFAULT_ACTIVATIONS[cell]
    n = spec.CELL_ACTIVATION_COUNT[cell]
    if len(activations) not in {n, n * directions}:
        counts = f"{n} or {n * directions}" if directions == 2 else str(n)
        raise ModelFormatError(f"a {cell} cell takes {counts} activations, found {len(activations)}")
    out = []
    for a in activations:
        if isinstance(a, str):
            a = [a]
        a = list(a) + [None] * (3 - len(a))
        name = str(a[0]).lower()
        if name not in spec.CELL_ACTIVATIONS:
            raise ModelFormatError(f"{a[0]!r} is not a recurrent-cell activation; known: "
                                   f"{list(spec.CELL_ACTIVATIONS)}")
        out.append([name, *spec.activation_params(name, a[1], a[2])])
    return out


LAYER_TYPES: dict[str, type[Layer]] = {
    "embedding": Embedding,
    "dense": Dense,
    "activation": Activation,
    "softmax": Softmax,
}


def _register_graph_layers() -> None:
    # graph_layers builds on this module, so its types join the registry once both exist
    from .graph_layers import GRAPH_LAYER_TYPES

    LAYER_TYPES.update(GRAPH_LAYER_TYPES)


_register_graph_layers()


def layer_from_config(entry: Any, params: dict[str, np.ndarray]) -> Layer:
    """Build and validate one layer from its file entry and its tensors."""
    if not isinstance(entry, dict):
        raise ModelFormatError(f"a layer entry must be an object, found {type(entry).__name__}")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ModelFormatError(f"layer name must match {_NAME.pattern}, found {name!r}")
    inputs = entry.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise _fail(name, f"'inputs' must be a non-empty list of names, found {inputs!r}")
    kind = entry.get("type")
    if not isinstance(kind, str):
        raise _fail(name, f"'type' must be a layer type name, found {kind!r}")
    if kind in spec.CELL_GATES:
        layer = Recurrent.from_config(name, inputs, entry, params, kind)
    elif kind in LAYER_TYPES:
        layer = LAYER_TYPES[kind].from_config(name, inputs, entry, params)
    else:
        raise _fail(name, f"unknown layer type {kind!r}; known: {sorted([*spec.CELL_GATES, *LAYER_TYPES])}")
    layer.validate_tensors()
    return layer
