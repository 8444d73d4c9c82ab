"""``Model``: a validated graph of layers plus its input description and vocabulary.

A model is immutable once built: its layers and tensors are checked at construction (or at
load), its weights are read-only arrays (memory-mapped from the file when loaded), and the
kernel-ready forms backends derive from them are cached on it. Running never mutates a
model, so one model can serve any number of streams and threads.
"""

from __future__ import annotations

import json
import math
import threading
from typing import Any

import numpy as np

from . import spec
from .errors import DeviceError, InputError, ModelFormatError
from .layers import Embedding, Layer, Recurrent, layer_from_config
from .stream import Stream, check_input, check_state, flatten_state, zero_state


_F32 = np.dtype(np.float32)  # np.empty takes a dtype faster than a type
MAX_STEP_VALUES = 1 << 26  # floats one step of one stream may hold over all layers (256 MB)
# ``run`` keeps its plans for short inputs (Model._take_plan): those whose buffers hold
# at most this many floats (1 MiB), for this many sizes, as many of each as threads ran
# it at once up to a bound: at most 32 MiB per model, kilobytes for per-sample models
RUN_PLAN_VALUES = 1 << 18
RUN_PLAN_SIZES = 8
RUN_PLAN_THREADS = 4


class InputSpec:
    """What a model reads per step: token ids (``tokens=True``) or a float feature array."""

    def __init__(self, tokens: bool = False, shape: tuple[int, ...] = (), vocab_size: int | None = None):
        self.tokens = bool(tokens)
        self.shape = () if tokens else tuple(int(s) for s in shape)
        self.vocab_size = vocab_size
        if self.tokens and not (isinstance(vocab_size, int) and vocab_size >= 1):
            raise ModelFormatError(f"a token input needs a positive vocab_size, found {vocab_size!r}")
        if not self.tokens and (not self.shape or any(s < 1 for s in self.shape)):
            raise ModelFormatError(f"a float input needs a shape of positive sizes, found {shape!r}")
        if not self.tokens and math.prod(self.shape) > 1 << 24:
            raise ModelFormatError(f"a float input of shape {self.shape} has more than 2^24 values per step")

    @classmethod
    def features(cls, *shape: int) -> "InputSpec":
        """Float input with per-step feature shape ``shape``."""
        return cls(False, shape)

    @classmethod
    def token_ids(cls, vocab_size: int) -> "InputSpec":
        """Integer token ids in ``[0, vocab_size)``."""
        return cls(True, (), vocab_size)

    def to_json(self) -> dict:
        if self.tokens:
            return {"type": "tokens", "vocab_size": self.vocab_size}
        return {"type": "float", "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: Any) -> "InputSpec":
        if not isinstance(d, dict) or d.get("type") not in ("tokens", "float"):
            raise ModelFormatError(f"'input' must be {{'type': 'tokens'|'float', ...}}, found {d!r}")
        if d["type"] == "tokens":
            v = d.get("vocab_size")
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1 << 24:
                raise ModelFormatError(f"input vocab_size must be an integer in [1, 2^24], found {v!r}")
            return cls.token_ids(v)
        shape = d.get("shape")
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 4
                or any(isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 1 << 24 for s in shape)):
            raise ModelFormatError(f"input shape must be a list of 1 to 4 sizes in [1, 2^24], found {shape!r}")
        return cls.features(*shape)

    def __repr__(self):
        return f"tokens (vocabulary {self.vocab_size})" if self.tokens else f"float {self.shape}"


class Model:
    """A recurrent model ready to run: ``run`` offline, ``stream`` step by step.

    Build one from layers (converters do this), or get one from ``tinyrnn.load``::

        Model(layers, input=InputSpec.features(8))          # layers wired in sequence
        Model(layers, input=InputSpec.token_ids(98), vocab=list_of_98_strings)

    A layer whose ``inputs`` is empty reads the previous layer's output (the first reads
    the model input, named ``"input"``); the model's output is the last layer's unless
    ``output`` names another. Raises ``ModelFormatError`` for any inconsistency.
    """

    def __init__(self, layers: list[Layer], input: InputSpec, output: str | None = None,
                 vocab: list[str] | None = None, metadata: dict | None = None, states: dict | None = None):
        if not layers:
            raise ModelFormatError("a model needs at least one layer")
        self.layers = list(layers)
        # graph state: name -> {"shape": per-stream shape, "next": layer whose output becomes
        # its value for the next step}; layers read it by name (see _check_states)
        self.states = _check_states(states)
        self.input = input
        self.vocab = list(vocab) if vocab is not None else None
        self.metadata = dict(metadata or {})
        self._wire()
        self.output = output if output is not None else self.layers[-1].name
        self._check_graph()
        self._check_vocab()
        self._backend_cache: dict[str, Any] = {}
        self._token_index = None
        # ``run``'s plans kept for the next call of the same size (see ``_take_plan``)
        self._run_plans: dict[tuple, list] = {}
        self._run_lock = threading.Lock()

    # --- construction checks ------------------------------------------------------------
    def _wire(self) -> None:
        prev = "input"
        for layer in self.layers:
            if not layer.inputs:
                layer.inputs = [prev]
            prev = layer.name

    def _check_graph(self) -> None:
        shapes: dict[str, tuple[int, ...]] = {"input": self.input.shape}
        shapes.update({name: st["shape"] for name, st in self.states.items()})
        used = {st["next"] for st in self.states.values()}
        for layer in self.layers:
            if layer.name in shapes:
                raise ModelFormatError(f"layer name {layer.name!r} is used twice (or is the reserved 'input')")
            lo, hi = layer.arity
            if not lo <= len(layer.inputs) <= hi:
                want = str(lo) if lo == hi else f"{lo} to {hi}"
                raise ModelFormatError(f"layer {layer.name!r}: takes {want} inputs, found {len(layer.inputs)}")
            for src in layer.inputs:
                if src not in shapes:
                    raise ModelFormatError(f"layer {layer.name!r} reads {src!r}, which is not the model input "
                                           f"or an earlier layer")
                used.add(src)
            if self.input.tokens and "input" in layer.inputs and not isinstance(layer, Embedding):
                raise ModelFormatError(f"layer {layer.name!r} reads token ids directly; only an embedding can")
            if isinstance(layer, Embedding) and self.input.tokens and layer.vocab_size < self.input.vocab_size:
                # inputs are checked against the model's vocab_size only: a smaller table
                # would let a valid token id read past its end
                raise ModelFormatError(f"layer {layer.name!r}: embedding table has {layer.vocab_size} rows but "
                                       f"the input takes {self.input.vocab_size} token ids")
            shapes[layer.name] = tuple(layer.output_shape([shapes[s] for s in layer.inputs]))
        if self.output not in shapes or self.output == "input" or self.output in self.states:
            raise ModelFormatError(f"output {self.output!r} is not a layer of the model")
        for name, st in self.states.items():
            nxt = st["next"]
            if nxt not in shapes or nxt in self.states or nxt == "input":
                raise ModelFormatError(f"state {name!r}: its next value {nxt!r} is not a layer of the model")
            if shapes[nxt] != st["shape"]:
                raise ModelFormatError(f"state {name!r} has shape {st['shape']}, but layer {nxt!r} (its next "
                                       f"value) gives {shapes[nxt]}")
        used.add(self.output)
        per_step = sum(math.prod(shape) for shape in shapes.values())
        if per_step > MAX_STEP_VALUES:
            # layers without tensors (activations) take their sizes from the input, which no
            # tensor bytes back: bound what one step of one stream may allocate
            raise ModelFormatError(f"one step of this model holds {per_step} values across its layers; "
                                   f"at most {MAX_STEP_VALUES} are allowed")
        unused = [layer.name for layer in self.layers if layer.name not in used]
        if unused:
            raise ModelFormatError(f"layers {unused} feed nothing: remove them or name one as the output")
        self.shapes = shapes
        self._step_values = per_step

    def _check_vocab(self) -> None:
        if self.vocab is None:
            return
        if not self.input.tokens:
            raise ModelFormatError("a vocabulary needs a model that reads token ids")
        if not all(isinstance(t, str) for t in self.vocab):
            raise ModelFormatError("vocabulary entries must be strings")
        if len(self.vocab) != self.input.vocab_size:
            raise ModelFormatError(f"vocabulary has {len(self.vocab)} entries, the input takes "
                                   f"{self.input.vocab_size} token ids")

    # --- facts --------------------------------------------------------------------------
    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-step output feature shape."""
        return self.shapes[self.output]

    @property
    def recurrent_layers(self) -> list[Recurrent]:
        return [layer for layer in self.layers if isinstance(layer, Recurrent)]

    @property
    def streamable(self) -> bool:
        """True when every recurrent layer runs forward in time (a stream is causal)."""
        return all(layer.direction == "forward" for layer in self.recurrent_layers)

    @property
    def dtype(self) -> str:
        """Weight storage: 'float32', 'float16', 'int8', or 'mixed'."""
        kinds = {layer.weights_dtype for layer in self.layers if layer.params}
        return kinds.pop() if len(kinds) == 1 else ("float32" if not kinds else "mixed")

    def num_params(self) -> int:
        return sum(layer.num_params() for layer in self.layers)

    def nbytes(self) -> int:
        """Bytes of stored tensors."""
        return sum(layer.nbytes() for layer in self.layers)

    # --- serialisation ------------------------------------------------------------------
    def architecture(self) -> dict:
        """The JSON description written into a ``.trnn`` file's metadata."""
        from . import __version__

        return {
            "format_version": spec.FORMAT_VERSION,
            "producer": f"tinyrnn {__version__}",
            "input": self.input.to_json(),
            "layers": [{"name": l.name, "type": l.type, "inputs": l.inputs, **l.config()} for l in self.layers],
            "output": self.output,
            "vocab": self.vocab,
            "metadata": self.metadata,
            # written only when present, so models without graph state keep their files as before
            **({"states": {k: {"shape": list(v["shape"]), "next": v["next"]} for k, v in states.items()}}
               if (states := getattr(self, "states", None)) else {}),
        }

    def tensors(self) -> dict[str, np.ndarray]:
        """Every stored tensor, named ``<layer>.<param>``."""
        return {f"{l.name}.{k}": v for l in self.layers for k, v in l.params.items()}

    @classmethod
    def from_architecture(cls, arch: Any, tensors: dict[str, np.ndarray]) -> "Model":
        """Rebuild a model from its JSON description and tensors; ``ModelFormatError`` if
        anything disagrees (the format reader calls this after checking the byte layout)."""
        if not isinstance(arch, dict):
            raise ModelFormatError(f"the architecture must be a JSON object, found {type(arch).__name__}")
        entries = arch.get("layers")
        if not isinstance(entries, list) or not entries:
            raise ModelFormatError("the architecture lists no layers")
        if len(entries) > 10_000:
            raise ModelFormatError(f"the architecture lists {len(entries)} layers; at most 10000 are read")
        grouped: dict[str, dict[str, np.ndarray]] = {}
        for tname, arr in tensors.items():
            lname, _, pname = tname.rpartition(".")
            if not lname:
                raise ModelFormatError(f"tensor {tname!r} is not named <layer>.<param>")
            grouped.setdefault(lname, {})[pname] = arr
        layers = []
        for entry in entries:
            lname = entry.get("name") if isinstance(entry, dict) else None
            # a non-string name (a list, say) is unhashable: let layer_from_config name it
            layer = layer_from_config(entry, grouped.pop(lname, {}) if isinstance(lname, str) else {})
            layers.append(layer)
        if grouped:
            raise ModelFormatError(f"tensors of no layer: {sorted(f'{k}.*' for k in grouped)}")
        output = arch.get("output")
        if output is not None and not isinstance(output, str):
            raise ModelFormatError(f"'output' must be a layer name, found {output!r}")
        vocab = arch.get("vocab")
        if vocab is not None and not isinstance(vocab, list):
            raise ModelFormatError(f"'vocab' must be a list of strings, found {type(vocab).__name__}")
        meta = arch.get("metadata") or {}
        if not isinstance(meta, dict):
            raise ModelFormatError(f"'metadata' must be an object, found {type(meta).__name__}")
        return cls(layers, InputSpec.from_json(arch.get("input")), output, vocab, meta, arch.get("states"))

    def save(self, path) -> None:
        """Write the model to ``path`` as a ``.trnn`` (safetensors) file, atomically."""
        from .format import save

        save(self, path)

    def quantize(self, scheme: str) -> "Model":
        """A new model with every weight matrix stored as ``scheme``: ``"int8"`` or ``"fp16"``.

        int8 is symmetric with one float32 scale per output column of each matrix (per row
        of an embedding table); fp16 stores half-precision weights. Biases, peepholes and
        state stay float32; ``save`` writes the quantized tensors (safetensors I8/F16 plus
        ``<name>_scale`` F32). The metadata records ``{"quantization": {"scheme": ...,
        "source_dtype": ...}}``; this model is left unchanged. See ``tinyrnn.quantize``
        for the math and for ``accuracy_report``. Raises ``QuantizationError`` for an
        unknown scheme or fp16 weights beyond float16's range.
        """
        from .quantize import quantize_model

        return quantize_model(self, scheme)

    def __reduce__(self):
        # pickling carries the .trnn bytes, not Python objects (cheap, and safe to unpickle)
        from .format import dumps, loads

        return (loads, (dumps(self),))

    # --- text models --------------------------------------------------------------------
    def encode(self, text: str) -> np.ndarray:
        """Token ids (int64) for ``text``; longest vocabulary entry first.

        Raises ``InputError`` for a model without vocabulary or text it cannot spell.
        """
        if self.vocab is None:
            raise InputError("this model has no vocabulary; feed it token ids or features")
        if self._token_index is None:
            index = {}
            for i, tok in enumerate(self.vocab):
                index.setdefault(tok, i)
            self._token_index = (index, max(len(t) for t in self.vocab))
        index, longest = self._token_index
        ids, i = [], 0
        while i < len(text):
            for n in range(min(longest, len(text) - i), 0, -1):
                tid = index.get(text[i:i + n])
                if tid is not None:
                    ids.append(tid)
                    i += n
                    break
            else:
                raise InputError(f"character {text[i]!r} at position {i} is not in the model's vocabulary")
        return np.array(ids, np.int64)

    def decode(self, ids) -> str:
        """Text for token ids (any integer array-like)."""
        if self.vocab is None:
            raise InputError("this model has no vocabulary")
        arr = np.asarray(ids).reshape(-1)
        if arr.size and (arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() >= len(self.vocab)):
            raise InputError(f"token ids must be integers in [0, {len(self.vocab)}), found "
                             f"{arr.dtype} in [{arr.min()}, {arr.max()}]")
        return "".join(self.vocab[i] for i in arr.tolist())

    # --- running ------------------------------------------------------------------------
    def stream(self, batch: int | None = None, device: str = "cpu", check_finite: bool = False):
        """A stateful stream: ``step`` one input at a time, ``process`` blocks of steps.

        ``batch=None`` gives one unbatched stream (``step(x (F,)) -> (out,)``); ``batch=B``
        gives B independent streams (``step(x (B, F)) -> (B, out)``). ``check_finite``
        makes every input be checked for NaN/inf (``NonFiniteError``); by default they
        propagate. Raises ``UnsupportedModelError`` for models with layers that run
        backwards in time.
        """
        return Stream(self, batch=batch, device=device, check_finite=check_finite)

    def run(self, x, lengths=None, state=None, return_state: bool = False, device: str = "cpu",
            check_finite: bool = False):
        """Run whole sequences offline (bidirectional layers allowed).

        ``x``: ``(B, T, *features)`` float or ``(B, T)`` token ids; unbatched ``(T, *features)``
        or ``(T,)`` is answered unbatched. ``lengths`` (B,): steps valid per sequence, the
        rest is padding whose outputs are zero. ``state``: a dict like ``Stream.state``
        (``"<layer>.h"``/``"<layer>.c"`` -> ``(B, D, Hr)``) to start from instead of zeros.
        Returns ``y (B, T, *out)`` float32, and the final state too with ``return_state``.
        Raises ``InputError`` for inputs of the wrong shape, dtype or values. Short inputs
        run through buffers kept on the model from an earlier call of the same size (at
        most 32 MiB in all; see ``_take_plan``); results are always new arrays.
        """
        backend = get_backend(device)
        xb, batched = check_input(self, x, block=True, check_finite=check_finite)
        B, T = xb.shape[0], xb.shape[1]
        lens = _check_lengths(lengths, B, T, batched)
        kept = 0 < B * T * self._step_values <= RUN_PLAN_VALUES
        plan, st = self._take_plan(backend, B, T) if kept else (None, backend.new_state(self, B))
        try:
            if state is not None:
                check_state(state, st, backend, check_finite)
            elif kept:  # a kept plan's state holds its last call's final state
                zero_state(backend, st)
            if T == 0:
                y = np.zeros((B, 0, *self.output_shape), np.float32)
            else:
                if plan is None:
                    plan = backend.build_plan(self, B, T, st)
                plan.input[...] = xb
                if lens is None:
                    plan.lengths.fill(T)
                else:
                    plan.lengths[:] = lens
                if kept:  # the plan's output buffer stays with the plan
                    y = np.empty(plan.output.shape, _F32)
                    backend.run_plan_into(plan, y)
                else:
                    y = backend.to_host(backend.run_plan(plan), copy=False)
                if lens is not None:
                    mask = np.arange(T)[None, :] >= lens[:, None]  # (B, T) padding
                    y[mask] = 0.0
            out_state = flatten_state(backend, st) if return_state else None
        finally:
            if kept:
                self._keep_plan(backend, B, T, plan, st)
        y = y if batched else y[0]
        if return_state:
            return y, out_state
        return y

    def _take_plan(self, backend, B: int, T: int) -> tuple:
        """A plan and its state for ``run`` of B x T steps: one kept from an earlier call, or new.

        Building a plan (buffers, kernel entry points) costs ~60 µs, most of a short
        sequence's ``run`` (B = 1, T = 16, LSTM 32: 84 µs a call, 18 µs with a kept plan;
        ``benchmarks/compare.py --only short``). Plans whose buffers hold at most
        ``RUN_PLAN_VALUES`` floats are therefore kept on the model, as many of a size as
        threads ran it at once (up to ``RUN_PLAN_THREADS``), for the ``RUN_PLAN_SIZES``
        sizes used last; a thread takes one out for the whole call, so threads never share
        a plan, and the call resets its state, lengths and input before running it.
        """
        with self._run_lock:
            pool = self._run_plans.get((backend, B, T))
            if pool:
                return pool.pop()
        st = backend.new_state(self, B)
        return backend.build_plan(self, B, T, st), st

    def _keep_plan(self, backend, B: int, T: int, plan, st) -> None:
        """Give a plan taken by ``_take_plan`` back for the next call, dropping the size used
        least recently beyond ``RUN_PLAN_SIZES``."""
        with self._run_lock:
            pool = self._run_plans.pop((backend, B, T), [])
            self._run_plans[(backend, B, T)] = pool  # last: the most recently used size
            if len(pool) < RUN_PLAN_THREADS:
                pool.append((plan, st))
            while len(self._run_plans) > RUN_PLAN_SIZES:  # the size used least recently first
                del self._run_plans[next(iter(self._run_plans))]

    def __repr__(self) -> str:
        lines = [f"tinyrnn.Model: {len(self.layers)} layers, {self.num_params():,} parameters, "
                 f"{self.dtype}, {self.nbytes() / 1e6:.2f} MB"]
        lines.append(f"  input   {self.input!r}")
        width = max(len(l.name) for l in self.layers)
        for layer in self.layers:
            src = "" if layer.inputs == [self._previous(layer)] else f"  <- {', '.join(layer.inputs)}"
            lines.append(f"  {layer.name:<{width}}  {layer.type:<10} {layer.describe():<40} "
                         f"{layer.num_params():>12,}{src}")
        lines.append(f"  output  {self.output} {self.output_shape}")
        return "\n".join(lines)

    def _previous(self, layer: Layer) -> str:
        i = self.layers.index(layer)
        return "input" if i == 0 else self.layers[i - 1].name


def _check_states(states) -> dict:
    """Validated graph states: ``{name: {"shape": (sizes), "next": layer name}}``."""
    from .layers import _NAME

    if states is None:
        return {}
    if not isinstance(states, dict) or len(states) > 64:
        raise ModelFormatError(f"'states' must map at most 64 names to {{shape, next}}, found {states!r}")
    out = {}
    for name, st in states.items():
        if not isinstance(name, str) or not _NAME.match(name) or name == "input":
            raise ModelFormatError(f"state name must match {_NAME.pattern} (and not be 'input'), found {name!r}")
        shape = st.get("shape") if isinstance(st, dict) else None
        nxt = st.get("next") if isinstance(st, dict) else None
        if (not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 4
                or any(isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 1 << 24 for s in shape)):
            raise ModelFormatError(f"state {name!r}: 'shape' must list 1 to 4 sizes in [1, 2^24], found {shape!r}")
        if not isinstance(nxt, str):
            raise ModelFormatError(f"state {name!r}: 'next' must name a layer, found {nxt!r}")
        out[name] = {"shape": tuple(shape), "next": nxt}
    return out


def _check_lengths(lengths, B: int, T: int, batched: bool):
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if not batched and arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.shape != (B,) or arr.dtype.kind not in "iu":
        raise InputError(f"lengths must be {B} integers (one per sequence), found {arr.dtype} {arr.shape}")
    if B and (arr.min() < 0 or arr.max() > T):
        raise InputError(f"lengths must lie in [0, {T}], found [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64)


_CPU = None  # the CPU backend module, once imported (imported on first use)


def get_backend(device: str):
    """The backend module for ``device`` ('cpu' or 'cuda'); ``DeviceError`` otherwise."""
    global _CPU
    if device == "cpu":
        # remembered: a function-level import costs ~1 µs, and ``run`` and ``stream`` ask
        # on every call. CUDA is not: its availability is checked on every call, as a
        # device can go away.
        if _CPU is None:
            from .backends import cpu as _CPU
        return _CPU
    if device == "cuda":
        from .backends import load_cuda

        return load_cuda()
    raise DeviceError(f"device must be 'cpu' or 'cuda', found {device!r}")


def architecture_json(model: Model) -> str:
    """Compact JSON of the architecture (what the file stores)."""
    return json.dumps(model.architecture(), separators=(",", ":"), ensure_ascii=False)
