"""Import ONNX *step graphs*: models called once per step with their state passed in and out.

Silero VAD is the reference: ``(input (B, 576), state (2, B, 128), sr) -> (output (B, 1),
stateN (2, B, 128))``. There is no time axis in such a graph; each call is one step of a
stream. The import:

1. binds ``constants`` (``{"sr": 16000}``) and folds every node whose inputs are known,
   including shape arithmetic: the batch size is the only unknown size, kept as the
   symbol ``"B"`` inside shape vectors so nothing pins it;
2. inlines every ``If`` whose condition folded; an ``If`` whose condition still depends on
   a run-time input is an ``UnsupportedModelError`` naming the input that would fold it;
3. maps the remaining nodes onto tinyrnn layers (``HANDLERS``: one function per op type,
   ``@handler("Op")``; add an op there). Every runtime tensor is a tinyrnn value seen
   through an ONNX shape with ``"B"`` at the batch axis; its per-step features are the
   other axes in order;
4. wires state: a graph input that returns as an output (``state`` -> ``stateN``) whose
   pieces (``Gather``/``Slice`` along a non-batch axis) feed a recurrent cell's
   ``initial_h``/``initial_c`` and come back from its ``Y_h``/``Y_c`` (through
   ``Squeeze``/``Unsqueeze``/``Concat``) becomes that cell's own state: the stream holds
   it, starts it at zeros, and ``step`` returns the other output only. The packing is
   recorded in ``model.metadata["onnx_state"]`` (``pack_state``/``unpack_state`` convert).

Before all this, ``recognize_lstm_cells`` rewrites LSTM cells written out as Gemm, Split,
Sigmoid, Tanh and Mul (PyTorch ``LSTMCell`` exported without an LSTM op, as in
``silero_vad_op18_ifless.onnx``) into ONNX ``LSTM`` nodes, so they run on the fused kernel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from tinyrnn import InputSpec, Model
from tinyrnn.errors import ModelFormatError, UnsupportedModelError
from tinyrnn.graph_layers import Concat, Conv1d, DftMagnitude, Elementwise, Pad, Reduce, Reshape, Slice
from tinyrnn.layers import Activation, Dense, Recurrent

B = "B"  # the batch-size symbol inside shape vectors


# --- values -----------------------------------------------------------------------------


@dataclass
class Rt:
    """A runtime tensor: tinyrnn value ``src`` (per-step features ``feat``) seen as ``shape``.

    ``shape`` holds ``"B"`` at the batch axis. ``tag`` marks a piece of recurrent state:
    ``("in", input_name, index)`` for a slice of a state input, ``("out", layer, "h"|"c")``
    for a cell's final state. ``src`` is None for values no layer can read (a cell's c).
    """

    src: str | None
    feat: tuple
    shape: tuple
    tag: tuple | None = None
    deps: frozenset = field(default_factory=frozenset)

    @property
    def baxis(self) -> int:
        return self.shape.index(B)

    @property
    def features(self) -> tuple:
        return tuple(d for d in self.shape if d != B)

    def view(self, shape, keep_tag=True) -> "Rt":
        return Rt(self.src, self.feat, tuple(shape), self.tag if keep_tag else None, self.deps)


@dataclass
class Packed:
    """State pieces joined along a non-batch axis (what ``stateN`` is made of)."""

    parts: list
    shape: tuple


def _is_sym(v) -> bool:
    return isinstance(v, np.ndarray) and v.dtype == object


def _static(v) -> bool:
    return isinstance(v, np.ndarray)


# --- the importer -----------------------------------------------------------------------

HANDLERS: dict = {}


def handler(*ops):
    """Register ``fn(imp, node, inputs, attrs) -> list of output values`` for op types."""
    def deco(fn):
        for op in ops:
            HANDLERS[op] = fn
        return fn
    return deco


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class StepImporter:
    def __init__(self, model, constants: dict | None, input_shapes: dict | None, source: str,
                 general: bool = False):
        from onnx import numpy_helper

        # general=False: state must live in recurrent cells (fast, block-wise process);
        # general=True: state inputs are graph states (Model.states) any layer may read
        self.general = general
        self.graph_states: dict = {}
        self.state_as_data = False
        self.model, self.graph, self.source = model, model.graph, source
        self.env: dict = {}
        self.layers: list = []
        self.names: set = {"input"}
        self.reshapes: dict = {}
        self.problems: dict = {}
        self.bindings: dict = {}  # (state input, index) -> (layer, "h"|"c")
        constants = dict(constants or {})
        inits = {t.name for t in self.graph.initializer}
        for t in self.graph.initializer:
            self.env[t.name] = numpy_helper.to_array(t)
        graph_inputs = [i for i in self.graph.input if i.name not in inits]
        unknown = sorted(set(constants) - {i.name for i in graph_inputs})
        if unknown:
            raise UnsupportedModelError(f"constants name {unknown}, which are not inputs of the graph; inputs: "
                                        f"{[i.name for i in graph_inputs]}")
        out_names = [o.name for o in self.graph.output]
        self.state_pairs = {}
        data_inputs = []
        for inp in graph_inputs:
            tt = inp.type.tensor_type
            if inp.name in constants:
                from onnx import helper

                dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
                self.env[inp.name] = np.asarray(constants[inp.name], dtype)
                continue
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
            partner = next((o for o in out_names if o != inp.name and o.startswith(inp.name)), None)
            if tt.elem_type not in (1, 10, 11) or len(dims) < 2:
                # a control input (Silero's sr): fine as long as nothing computed needs it
                self.env[inp.name] = Rt(None, (), (), None, frozenset([inp.name]))
            elif partner is not None:
                self.state_pairs[inp.name] = partner
                shape = self._state_shape(inp.name, dims)
                if general:
                    sname = self.fresh(inp.name)
                    feat = tuple(d for d in shape if d != B)
                    self.graph_states[inp.name] = sname
                    self.env[inp.name] = Rt(sname, feat, shape, None, frozenset([inp.name]))
                else:
                    self.env[inp.name] = Rt(None, (), shape, ("in", inp.name, None), frozenset([inp.name]))
            else:
                data_inputs.append((inp, dims))
        if len(data_inputs) != 1:
            raise UnsupportedModelError(f"a step graph needs exactly one data input besides its state, found "
                                        f"{[i.name for i, _ in data_inputs]}; bind the others with constants=")
        inp, dims = data_inputs[0]
        feat = self._data_shape(inp.name, dims, input_shapes, constants)
        self.input_name = inp.name
        self.input_feat = feat
        self.env[inp.name] = Rt("input", feat, (B, *feat), None, frozenset([inp.name]))
        data_outputs = [o for o in out_names if o not in self.state_pairs.values()]
        if len(data_outputs) != 1:
            raise UnsupportedModelError(f"a step graph needs exactly one output besides its state, found "
                                        f"{data_outputs}")
        self.output_name = data_outputs[0]

    def _state_shape(self, name, dims):
        if len(dims) < 2:
            raise UnsupportedModelError(f"state input {name!r} must have a batch axis and a state axis, "
                                        f"found shape {dims}")
        # the batch axis is the dynamic one (Silero: [2, batch, 128])
        dyn = [i for i, d in enumerate(dims) if d is None]
        if not dyn:  # exported for batch 1 (OpenVINO): the one axis of size 1 is the batch
            dyn = [i for i, d in enumerate(dims) if d == 1]
            dims = [None if i in dyn else d for i, d in enumerate(dims)]
        if len(dyn) != 1:
            raise UnsupportedModelError(f"state input {name!r} must have exactly one dynamic (batch) axis, "
                                        f"found shape {dims}")
        return tuple(B if d is None else d for d in dims)

    def _silero_state(self) -> bool:
        st = self.env.get("state")
        return isinstance(st, Rt) and st.shape == (2, B, 128)

    def _data_shape(self, name, dims, input_shapes, constants):
        if input_shapes and name in input_shapes:
            feat = tuple(int(s) for s in np.atleast_1d(input_shapes[name]))
        elif all(d is not None for d in dims[1:]) and dims[1:]:
            feat = tuple(dims[1:])
        elif len(dims) == 2 and ("sr" in constants or self._silero_state()):
            # Silero's own wrapper feeds 512 new samples plus 64 of context at 16 kHz, and
            # 256 plus 32 at 8 kHz: the step the model was trained for (the variants
            # without an sr input are 16 kHz models)
            sr = int(np.asarray(constants.get("sr", 16000)))
            feat = (576,) if sr == 16000 else (288,) if sr == 8000 else None
            if feat is None:
                raise UnsupportedModelError(f"sr={sr}: Silero VAD runs at 8000 or 16000 Hz")
        else:
            raise UnsupportedModelError(f"input {name!r} has dynamic sizes {dims[1:]}; give the per-step shape "
                                        f"with input_shapes={{{name!r}: (...)}}")
        if not feat or any(s < 1 for s in feat):
            raise UnsupportedModelError(f"input {name!r}: per-step shape must be positive sizes, found {feat}")
        return feat

    # --- building helpers -------------------------------------------------------------
    def add(self, layer):
        self.layers.append(layer)
        return layer.name

    def fresh(self, base: str) -> str:
        # exporters prefix inlined branches and functions; the names read better without
        base = re.sub(r"(F\d+::)|(If_\d+_(then|else)_branch__Inline_\d+__)|(_output_\d+$)", "", base)
        base = re.sub(r"[^A-Za-z0-9_.\-]", "_", base).strip("._-") or "layer"
        base = base[-100:].lstrip("._-") or "layer"
        if not re.match(r"^[A-Za-z0-9_]", base):
            base = "l" + base
        name, i = base, 1
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def read(self, v, node, feat=None) -> str:
        """tinyrnn name of runtime value ``v`` with per-step features ``feat`` (default: its own)."""
        if isinstance(v, Rt) and v.tag and v.tag[0] == "in":
            self.state_as_data = True  # state used by other ops than a cell: graph state
            raise Unsupported(f"{node.op_type if node else 'the output'} reads state input {v.tag[1]!r} as data")
        if not isinstance(v, Rt) or v.src is None:
            what = "a cell's state c" if isinstance(v, Rt) and v.tag else type(v).__name__
            raise Unsupported(f"{node.op_type if node else 'the output'} reads a value tinyrnn cannot compute "
                              f"as data ({what})")
        want = v.features if feat is None else tuple(feat)
        if want == v.feat:
            return v.src
        key = (v.src, want)
        if key not in self.reshapes:
            self.reshapes[key] = self.add(Reshape(self.fresh(f"{v.src}_as_{'x'.join(map(str, want))}"), [v.src],
                                                  want))
        return self.reshapes[key]

    def out(self, layer, shape, deps) -> Rt:
        self.add(layer)
        feat = tuple(d for d in shape if d != B)
        return Rt(layer.name, feat, tuple(shape), None, deps)

    # --- the walk ---------------------------------------------------------------------
    def run(self) -> Model:
        self.walk(self.graph.node)
        if self.problems and self.state_as_data and not self.general:
            raise _NeedGeneral("state read as data")
        if self.problems:
            lines = "\n".join(f"  - {msg} (first at node {where!r})" for msg, where in self.problems.items())
            raise UnsupportedModelError(f"{self.source}: tinyrnn cannot represent:\n{lines}")
        y = self.env.get(self.output_name)
        if not isinstance(y, Rt) or y.src is None or y.baxis != 0:
            raise UnsupportedModelError(f"output {self.output_name!r} is not a batch-first tensor tinyrnn computes")
        out = self.read(y, None)
        states = self.wire_graph_states() if self.general else self.wire_state()
        fuse_dft_magnitude(self.layers)
        layers = self._live([out, *(st["next"] for st in (states or {}).values())])
        meta = {"source": self.source, "converter": "tinyrnn_converters.onnx_step",
                "onnx_state": self.state_meta, "onnx_io": {"input": self.input_name, "output": self.output_name}}
        return Model(layers, InputSpec.features(*self.input_feat), output=out, metadata=meta, states=states)

    def wire_graph_states(self) -> dict:
        """Each state input -> a ``Model.states`` entry whose next value is the paired output."""
        states = {}
        self.state_meta = {}
        for sin, sout in self.state_pairs.items():
            v = self.env.get(sout)
            cur = self.env[sin]
            if not isinstance(v, Rt) or v.src is None or v.features != cur.features or v.baxis != cur.baxis:
                raise UnsupportedModelError(f"{self.source}: state output {sout!r} is not a run-time tensor of "
                                            f"{sin!r}'s shape {cur.shape}")
            name = self.graph_states[sin]
            states[name] = {"shape": list(cur.features), "next": self.read(v, None)}
            self.state_meta[sin] = {"output": sout, "shape": list(cur.shape), "graph_state": name}
        return states

    def _live(self, roots):
        by_name = {l.name: l for l in self.layers}
        out = roots[0]
        live, todo = set(), list(roots)
        for layer in self.layers:  # recurrent layers stay: their state is part of the model
            if layer.stateful:
                todo.append(layer.name)
        while todo:
            n = todo.pop()
            if n in live or n not in by_name:
                continue
            live.add(n)
            todo.extend(by_name[n].inputs)
        dead_state = [l.name for l in self.layers if l.stateful and l.name != out and not any(
            l.name in m.inputs for m in self.layers if m.name in live)]
        if dead_state:
            # a cell whose output feeds nothing would still be run: that is a converter bug
            raise UnsupportedModelError(f"recurrent layers {dead_state} feed no output")
        return [l for l in self.layers if l.name in live]

    def walk(self, nodes):
        for node in nodes:
            try:
                self.eval(node)
            except Unsupported as e:
                self.problems.setdefault(str(e), node.name or node.output[0])
                for o in node.output:
                    self.env[o] = Poison()

    def eval(self, node):
        ins = [self.env.get(n) if n else None for n in node.input]
        for n, v in zip(node.input, ins):
            if n and v is None:
                raise Unsupported(f"{node.op_type} reads {n!r}, which nothing produced")
        if any(isinstance(v, Poison) for v in ins):
            raise Unsupported("(follows an unsupported node)")
        attrs = _attrs(node)
        op = node.op_type
        sides = [v for v in ins if isinstance(v, Rt) and v.src is None and v.tag is None]
        if sides and op != "If":
            # derived from a control input: stays unknown; only an If (or a layer) that
            # needs its value reports it
            deps = _deps(*sides)
            for name in node.output:
                self.env[name] = Rt(None, (), (), None, deps)
            return
        if op == "If":
            return self.eval_if(node, ins[0])
        if op == "Constant":
            self.env[node.output[0]] = _constant(attrs)
            return
        if all(v is None or _static(v) for v in ins):
            outs = fold(node, ins, attrs)
        else:
            fn = HANDLERS.get(op)
            if fn is None:
                raise Unsupported(f"op {op}")
            outs = fn(self, node, ins, attrs)
        for name, v in zip(node.output, outs):
            if name:
                self.env[name] = v

    def eval_if(self, node, cond):
        if not _static(cond) or _is_sym(cond):
            deps = sorted(cond.deps) if isinstance(cond, Rt) else []
            why = f"run-time input(s) {deps}" if deps else "the batch size"
            hint = (f"; bind {'it' if len(deps) == 1 else 'them'} with constants={{{deps[0]!r}: ...}}"
                    if deps else "")
            raise UnsupportedModelError(f"{self.source}: If node {node.name or node.output[0]!r} has a "
                                        f"condition that depends on {why}, so its branch cannot be chosen at "
                                        f"import{hint}")
        branch = "then_branch" if bool(np.asarray(cond).reshape(-1)[0]) else "else_branch"
        g = next(a.g for a in node.attribute if a.name == branch)
        for t in g.initializer:
            from onnx import numpy_helper

            self.env[t.name] = numpy_helper.to_array(t)
        self.walk(g.node)
        for name, o in zip(node.output, g.output):
            if name:
                if o.name not in self.env:
                    raise Unsupported(f"If branch output {o.name!r} was not computed")
                self.env[name] = self.env[o.name]

    # --- state ------------------------------------------------------------------------
    def wire_state(self):
        self.state_meta = {}
        for sin, sout in self.state_pairs.items():
            v = self.env.get(sout)
            shape = self.env[sin].shape
            parts = v.parts if isinstance(v, Packed) else [v.tag] if isinstance(v, Rt) and v.tag else None
            if parts is None:
                raise _NeedGeneral(f"{self.source}: state output {sout!r} is not built from recurrent "
                                            f"cells' final states, so tinyrnn cannot carry it")
            bound = {idx: lk for (name, idx), lk in self.bindings.items() if name == sin}
            if len(parts) != len(bound) or any(bound.get(i) != (p[1], p[2]) for i, p in enumerate(parts)):
                raise UnsupportedModelError(f"{self.source}: state {sin!r} -> {sout!r}: the pieces read from "
                                            f"{sin!r} ({bound}) are not the pieces written to {sout!r} "
                                            f"({[p[1:] for p in parts]})")
            axis = next(i for i, d in enumerate(shape) if d != B)
            self.state_meta[sin] = {"output": sout, "shape": list(shape),
                                    "axis": axis, "parts": [f"{p[1]}.{p[2]}" for p in parts]}


class _NeedGeneral(UnsupportedModelError):
    """The state does not live in recurrent cells: import it as graph state instead."""


class Unsupported(Exception):
    """One node tinyrnn cannot convert (collected; reported together)."""


class Poison:
    """The value of a node that could not be converted."""


def _constant(attrs):
    from onnx import numpy_helper

    if "value" in attrs:
        return numpy_helper.to_array(attrs["value"])
    for k, dt in (("value_float", np.float32), ("value_int", np.int64)):
        if k in attrs:
            return np.array(attrs[k], dt)
    for k, dt in (("value_floats", np.float32), ("value_ints", np.int64)):
        if k in attrs:
            return np.array(attrs[k], dt)
    raise Unsupported(f"Constant with attributes {sorted(attrs)}")


# --- constant folding (shape vectors may hold "B") ----------------------------------------


def _norm(v):
    """A symbolic vector without a symbol left becomes a plain int64 array."""
    if _is_sym(v) and not any(isinstance(e, str) for e in v.reshape(-1)):
        return v.astype(np.int64)
    return v


def fold(node, ins, attrs):
    """Evaluate a node whose inputs are all known (symbolic shape vectors included)."""
    op = node.op_type
    if any(_is_sym(v) for v in ins if v is not None):
        return [_norm(v) for v in _fold_sym(node, ins, attrs)]
    from onnx.reference import ReferenceEvaluator

    feeds = {n: v for n, v in zip(node.input, ins) if n}
    try:
        outs = ReferenceEvaluator(node).run(None, feeds)
    except Exception as e:  # noqa: BLE001 - any evaluator failure is a conversion problem
        raise Unsupported(f"cannot fold {op}: {e}") from None
    return [np.asarray(o) for o in outs]


def _fold_sym(node, ins, attrs):
    op = node.op_type
    x = ins[0]
    if op in ("Identity", "Cast"):
        return [x]
    if op == "Size":
        return [np.array(x.size, np.int64)]
    if op == "Gather":
        return [np.take(x, np.asarray(ins[1]).astype(np.int64), axis=attrs.get("axis", 0))]
    if op == "Concat":
        return [np.concatenate([np.asarray(v, object).reshape(-1) for v in ins])]
    if op == "Unsqueeze" or op == "Squeeze":
        axes = ins[1] if len(ins) > 1 and ins[1] is not None else attrs.get("axes")
        if op == "Unsqueeze":
            return [np.expand_dims(x, tuple(int(a) for a in np.atleast_1d(axes)))]
        return [np.squeeze(x, None if axes is None else tuple(int(a) for a in np.atleast_1d(axes)))]
    if op == "Slice":
        starts, ends = np.atleast_1d(ins[1]), np.atleast_1d(ins[2])
        steps = np.atleast_1d(ins[4]) if len(ins) > 4 and ins[4] is not None else [1]
        n = x.shape[0]
        s, e, st = int(starts[0]), int(ends[0]), int(steps[0])
        return [x[slice(*slice(s, e, st).indices(n))]]
    if op in ("Equal", "Mul", "Add", "Sub", "Div"):
        a, b = (np.asarray(v, object) for v in ins[:2])
        if any(isinstance(e, str) for e in list(a.reshape(-1)) + list(b.reshape(-1))):
            raise Unsupported(f"{op} on a size that depends on the batch")
        return fold(node, [np.asarray(a.astype(np.int64)), np.asarray(b.astype(np.int64))], attrs)
    raise Unsupported(f"{op} on a shape that depends on the batch size")


# --- op handlers --------------------------------------------------------------------------


def _axis(v: Rt, a: int, node) -> int:
    """ONNX axis ``a`` of ``v`` as a feature axis; the batch axis is refused."""
    a = int(a) + (len(v.shape) if a < 0 else 0)
    if a == v.baxis:
        raise Unsupported(f"{node.op_type} along the batch axis")
    return a if a < v.baxis else a - 1


def _deps(*vs):
    out = frozenset()
    for v in vs:
        if isinstance(v, Rt):
            out |= v.deps
    return out


@handler("Shape")
def _shape(imp, node, ins, attrs):
    v = ins[0]
    dims = list(v.shape)[attrs.get("start", 0):attrs.get("end", len(v.shape))]
    return [_norm(np.array(dims, dtype=object))]


@handler("Size")
def _size(imp, node, ins, attrs):
    raise Unsupported("Size of a run-time tensor (it depends on the batch size)")


@handler("Identity", "Cast")
def _identity(imp, node, ins, attrs):
    if node.op_type == "Cast" and attrs.get("to") not in (1, 10, 11, 16):  # float, f16, f64, bf16
        raise Unsupported(f"Cast of a run-time tensor to type {attrs.get('to')}")
    return [ins[0]]


@handler("Unsqueeze", "Squeeze")
def _squeeze(imp, node, ins, attrs):
    v = ins[0]
    axes = ins[1] if len(ins) > 1 and ins[1] is not None else attrs.get("axes")
    shape = list(v.shape)
    if node.op_type == "Unsqueeze":
        n = len(shape) + len(np.atleast_1d(axes))
        for a in sorted(int(a) % n for a in np.atleast_1d(axes)):
            shape.insert(a, 1)
    else:
        if axes is None:
            axes = [i for i, d in enumerate(shape) if d == 1]
        drop = {int(a) % len(shape) for a in np.atleast_1d(axes)}
        if any(shape[a] != 1 for a in drop):
            raise Unsupported("Squeeze of an axis that is not 1 (or is the batch axis)")
        shape = [d for i, d in enumerate(shape) if i not in drop]
    return [v.view(shape)]


@handler("Reshape", "Flatten")
def _reshape(imp, node, ins, attrs):
    v = ins[0]
    if node.op_type == "Flatten":
        a = attrs.get("axis", 1)
        if a != 1 or v.baxis != 0:
            raise Unsupported("Flatten other than batch-first at axis 1")
        return [v.view((B, int(np.prod(v.features))))]
    target = list(np.asarray(ins[1], object).reshape(-1))
    if target.count(B) != 1:
        # a fixed target: the batch axis is the one that holds the rest
        known = [int(t) for t in target]
        if known.count(-1) != 1 and 0 not in known:
            raise Unsupported("Reshape whose target does not keep the batch size")
        target = [B if (t == -1 or (t == 0 and i == v.baxis)) else t for i, t in enumerate(known)]
    else:
        rest = int(np.prod(v.features))
        fixed = [int(t) for t in target if t != B and int(t) != -1]
        target = [(rest // int(np.prod(fixed)) if t == -1 else t) if t != B else B for t in target]
    if int(np.prod([t for t in target if t != B])) != int(np.prod(v.features)):
        raise Unsupported(f"Reshape of {v.shape} to {target}")
    return [v.view(target, keep_tag=False)]


@handler("Pad")
def _pad(imp, node, ins, attrs):
    v = ins[0]
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = np.asarray(ins[1] if len(ins) > 1 else attrs["pads"]).astype(np.int64).reshape(-1)
    value = float(np.asarray(ins[2]).reshape(-1)[0]) if len(ins) > 2 and ins[2] is not None else 0.0
    r = len(v.shape)
    if len(pads) != 2 * r or pads.min() < 0:
        raise Unsupported("Pad with negative pads or pads of the wrong length")
    if mode not in Pad.MODES:
        raise Unsupported(f"Pad mode {mode!r}")
    cur, shape = v, list(v.shape)
    for a in range(r):
        if pads[a] or pads[a + r]:
            fa = _axis(cur, a, node)
            shape[a] = shape[a] + int(pads[a] + pads[a + r])
            layer = Pad(imp.fresh(node.output[0]), [imp.read(cur, node)], fa, int(pads[a]), int(pads[a + r]),
                        mode, value)
            cur = imp.out(layer, shape, _deps(v))
    return [cur]


@handler("Conv")
def _conv(imp, node, ins, attrs):
    v, W = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    if not _static(W) or (b is not None and not _static(b)):
        raise Unsupported("Conv with run-time weights")
    if len(v.shape) != 3 or v.baxis != 0 or W.ndim != 3:
        raise Unsupported(f"Conv other than 1-D batch-first (found input {v.shape}, weights {W.shape})")
    auto = attrs.get("auto_pad", b"NOTSET")
    if (auto.decode() if isinstance(auto, bytes) else auto) not in ("NOTSET", "VALID"):
        raise Unsupported(f"Conv auto_pad={auto!r}")
    pads = attrs.get("pads", [0, 0])
    C_in, L = v.features
    g = attrs.get("group", 1)
    params = {"W": W.astype(np.float32)}
    if b is not None:
        params["b"] = b.astype(np.float32)
    layer = Conv1d(imp.fresh(node.output[0]), [imp.read(v, node)], params, C_in, W.shape[0], W.shape[2],
                   attrs.get("strides", [1])[0], pads, attrs.get("dilations", [1])[0], g, b is not None)
    L_out = layer.output_length(L)
    return [imp.out(layer, (B, W.shape[0], L_out), _deps(v))]


@handler("Slice")
def _slice(imp, node, ins, attrs):
    v = ins[0]
    starts, ends = np.atleast_1d(ins[1]), np.atleast_1d(ins[2])
    axes = np.atleast_1d(ins[3]) if len(ins) > 3 and ins[3] is not None else np.arange(len(starts))
    steps = np.atleast_1d(ins[4]) if len(ins) > 4 and ins[4] is not None else np.ones(len(starts), np.int64)
    cur = v
    shape = list(v.shape)
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = int(a) % len(shape)
        if int(st) < 1:
            raise Unsupported("Slice with a negative step")
        n = shape[a]
        if n == B:
            if int(s) == 0 and int(e) >= 2 ** 31 - 1 and int(st) == 1:  # the whole batch: nothing to do
                continue
            raise Unsupported("Slice along the batch axis")
        lo, hi, _ = slice(int(s), int(e), int(st)).indices(n)
        if lo == 0 and hi >= n and st == 1:
            continue
        if v.tag and v.tag[0] == "in" and len(range(lo, hi, int(st))) == 1:  # one piece of a state input
            shape[a] = 1
            cur = Rt(None, (), tuple(shape), ("in", v.tag[1], lo), v.deps)
            continue
        layer = Slice(imp.fresh(node.output[0]), [imp.read(cur, node)], _axis(cur, a, node), lo, hi, int(st))
        shape[a] = len(range(lo, hi, int(st)))
        cur = imp.out(layer, shape, _deps(v))
    return [cur]


@handler("Gather")
def _gather(imp, node, ins, attrs):
    v, idx = ins
    a = attrs.get("axis", 0) % len(v.shape)
    if not _static(idx) or idx.ndim != 0:
        raise Unsupported("Gather with other than one constant index")
    n = v.shape[a]
    i = int(idx) % n if n != B else None
    if i is None:
        raise Unsupported("Gather along the batch axis")
    shape = [d for k, d in enumerate(v.shape) if k != a]
    if v.tag and v.tag[0] == "in":
        return [Rt(None, (), tuple(shape), ("in", v.tag[1], i), v.deps)]
    layer = Slice(imp.fresh(node.output[0]), [imp.read(v, node)], _axis(v, a, node), i, i + 1)
    sliced = imp.out(layer, [1 if k == a else d for k, d in enumerate(v.shape)], _deps(v))
    return [sliced.view(shape)]


@handler("Concat")
def _concat(imp, node, ins, attrs):
    a = attrs["axis"] % len(ins[0].shape)
    if all(isinstance(v, Rt) and v.tag and v.tag[0] == "out" for v in ins):
        shape = list(ins[0].shape)
        shape[a] = len(ins)
        return [Packed([v.tag for v in ins], tuple(shape))]
    v0 = ins[0]
    srcs = [imp.read(v, node) for v in ins]
    fa = _axis(v0, a, node)
    shape = list(v0.shape)
    shape[a] = sum(v.shape[a] for v in ins)
    return [imp.out(Concat(imp.fresh(node.output[0]), srcs, fa), shape, _deps(*ins))]


_ACT = {"Sigmoid": "sigmoid", "Tanh": "tanh"}
_UNARY = {"Relu": "relu", "Sqrt": "sqrt", "Abs": "abs", "Neg": "neg", "Exp": "exp", "Log": "log", "Reciprocal": "reciprocal"}
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow", "Max": "max", "Min": "min"}


@handler(*_ACT, *_UNARY)
def _unary(imp, node, ins, attrs):
    v = ins[0]
    src = imp.read(v, node)
    name = imp.fresh(node.output[0])
    layer = Activation(name, [src], _ACT[node.op_type]) if node.op_type in _ACT else \
        Elementwise(name, [src], {}, _UNARY[node.op_type])
    return [imp.out(layer, v.shape, _deps(v))]


@handler(*_BINARY)
def _binary(imp, node, ins, attrs):
    a, b = ins
    op = _BINARY[node.op_type]
    for v, c in ((a, b), (b, a)):
        # x + 0, x * 1 (exporters add such terms to keep an input alive): nothing to compute
        if _static(c) and not _is_sym(c) and c.size and (
                (op in ("add", "sub") and not np.any(c) and (v is a or op == "add"))
                or (op == "mul" and np.all(c == 1))) and np.ndim(c) <= len(v.shape):
            return [v]
    if isinstance(a, Packed) or isinstance(b, Packed):
        raise Unsupported(f"{node.op_type} on packed recurrent state")
    name = imp.fresh(node.output[0])
    if isinstance(a, Rt) and isinstance(b, Rt):
        if a.shape != b.shape:
            raise Unsupported(f"{node.op_type} of run-time tensors of shapes {a.shape} and {b.shape}")
        layer = Elementwise(name, [imp.read(a, node), imp.read(b, node)], {}, op)
        return [imp.out(layer, a.shape, _deps(a, b))]
    v, c, c_first = (a, b, False) if isinstance(a, Rt) else (b, a, True)
    c = np.asarray(c, np.float32)
    # align the constant to v's axes (numpy rules), then drop the batch axis, where it must be 1
    if c.ndim > len(v.shape):
        raise Unsupported(f"{node.op_type} with a constant of more axes than the tensor")
    c = c.reshape((1,) * (len(v.shape) - c.ndim) + c.shape)
    if c.shape[v.baxis] != 1:
        raise Unsupported(f"{node.op_type} with a constant that varies along the batch axis")
    c = c.reshape([d for k, d in enumerate(c.shape) if k != v.baxis])
    layer = Elementwise(name, [imp.read(v, node)], {"c": np.ascontiguousarray(c)}, op, c_first)
    return [imp.out(layer, v.shape, _deps(v))]


@handler("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")
def _reduce(imp, node, ins, attrs):
    v = ins[0]
    axes = ins[1] if len(ins) > 1 and ins[1] is not None else attrs.get("axes")
    if axes is None or len(np.atleast_1d(axes)) == 0:
        if attrs.get("noop_with_empty_axes", 0):
            return [v]
        raise Unsupported(f"{node.op_type} over every axis (the batch axis too)")
    keep = bool(attrs.get("keepdims", 1))
    op = node.op_type[len("Reduce"):].lower()
    cur, shape = v, list(v.shape)
    for a in sorted((int(a) % len(shape) for a in np.atleast_1d(axes)), reverse=True):
        fa = _axis(cur, a, node)
        new = list(shape)
        new[a] = 1
        if not keep:
            del new[a]
        if not [d for d in new if d != B]:  # nothing left per step: keep the axis, view it away
            layer = Reduce(imp.fresh(node.output[0]), [imp.read(cur, node)], op, fa, True)
            kept = [1 if k == a else d for k, d in enumerate(shape)]
            cur = imp.out(layer, kept, _deps(v)).view(new)
        else:
            cur = imp.out(Reduce(imp.fresh(node.output[0]), [imp.read(cur, node)], op, fa, keep), new, _deps(v))
        shape = new
    return [cur]


@handler("Gemm", "MatMul")
def _gemm(imp, node, ins, attrs):
    x, W = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    if not isinstance(x, Rt) or not _static(W) or (c is not None and not _static(c)):
        raise Unsupported(f"{node.op_type} other than run-time input times constant weights")
    if node.op_type == "Gemm" and (attrs.get("transA", 0) or len(x.shape) != 2):
        raise Unsupported("Gemm with transA or a non-matrix input")
    if x.shape[-1] == B or W.ndim != 2:
        raise Unsupported(f"{node.op_type} that reduces over the batch axis")
    W = np.asarray(W, np.float32)
    if attrs.get("transB", 0):
        W = W.T
    W = W * np.float32(attrs.get("alpha", 1.0))
    bias = np.zeros(W.shape[1], np.float32) if c is None else \
        np.broadcast_to(np.asarray(c, np.float32) * np.float32(attrs.get("beta", 1.0)), (W.shape[1],))
    feat = x.features
    if feat[-1] != W.shape[0]:
        raise Unsupported(f"{node.op_type}: input features {feat} do not match weights {W.shape}")
    name = imp.fresh(node.output[0])
    if len(feat) != 1:
        raise Unsupported(f"{node.op_type} on features of more than one axis")
    layer = Dense(name, [imp.read(x, node)], {"W": np.ascontiguousarray(W), "b": np.ascontiguousarray(bias)},
                  W.shape[0], W.shape[1])
    shape = list(x.shape)
    shape[-1] = W.shape[1]
    return [imp.out(layer, shape, _deps(x))]


@handler("LSTM")
def _lstm(imp, node, ins, attrs):
    x = ins[0]
    W, R = ins[1], ins[2]
    Bv = ins[3] if len(ins) > 3 else None
    if len(ins) > 4 and ins[4] is not None:
        raise Unsupported("LSTM sequence_lens in a step graph")
    h0 = ins[5] if len(ins) > 5 else None
    c0 = ins[6] if len(ins) > 6 else None
    P = ins[7] if len(ins) > 7 else None
    if not all(v is None or _static(v) for v in (W, R, Bv, P)):
        raise Unsupported("LSTM with run-time weights")
    if attrs.get("direction", b"forward") not in (b"forward", "forward") or W.shape[0] != 1:
        raise Unsupported("a non-forward LSTM in a step graph")
    if attrs.get("layout", 0) != 0 or len(x.shape) != 3 or x.shape[0] != 1 or x.baxis != 1:
        raise Unsupported(f"LSTM over a sequence inside a step graph (input {x.shape}): only one step per "
                          f"call streams")
    extra = {k: attrs[k] for k in ("clip", "input_forget") if k in attrs}
    if "activations" in attrs:
        extra["activations"] = [a.decode() if isinstance(a, bytes) else a for a in attrs["activations"]]
    H = R.shape[-1]
    name = imp.fresh(node.name or node.output[0] or "lstm")
    layer = Recurrent.from_onnx("lstm", name, W, R, Bv, P=P, inputs=[imp.read(x, node, (x.features[-1],))],
                                **{k: (bool(v) if k == "input_forget" else v) for k, v in extra.items()})
    imp.add(layer)
    for key, s in (("h", h0), ("c", c0)):
        if s is None:
            continue
        if not (isinstance(s, Rt) and s.tag and s.tag[0] == "in" and s.tag[2] is not None):
            raise Unsupported(f"LSTM initial_{key} that is not a piece of a state input")
        imp.bindings[(s.tag[1], s.tag[2])] = (name, key)
    deps = _deps(x, h0, c0)
    y = Rt(name, (H,), (1, 1, B, H), None, deps)
    yh = Rt(name, (H,), (1, B, H), ("out", name, "h"), deps)
    yc = Rt(None, (), (1, B, H), ("out", name, "c"), deps)
    return [y, yh, yc]


# --- STFT front ends -------------------------------------------------------------------------


def fuse_dft_magnitude(layers: list) -> int:
    """Replace ``sqrt(conv_re^2 + conv_im^2)`` over a windowed DFT basis by ``DftMagnitude``.

    The pattern (Silero's STFT): a one-channel Conv1d without bias, padding or dilation whose
    first K filters are ``w[n] cos(2 pi k n / N)`` and next K are ``+-w[n] sin(...)``, sliced
    in two, each squared, added, square-rooted. The basis is checked numerically (to 1e-5 of
    the window's peak); the sqrt layer's name is kept, so its readers are untouched, and the
    bypassed layers fall away unless something else reads them. Returns the number fused.
    """
    by = {l.name: l for l in layers}
    count = 0
    for i, sq in enumerate(list(layers)):
        m = _match_dft(sq, by)
        if m is None:
            continue
        conv, K, window = m
        fused = DftMagnitude(sq.name, list(conv.inputs), {"window": window}, conv.kernel_size, conv.stride, K)
        fused.validate_tensors()
        layers[layers.index(sq)] = fused
        by[sq.name] = fused
        count += 1
    return count


def _match_dft(sq, by):
    def ew(layer, op, n_inputs, const=None):
        if not isinstance(layer, Elementwise) or layer.op != op or len(layer.inputs) != n_inputs:
            return False
        if const is None:
            return not layer.has_constant
        return layer.has_constant and layer.params["c"].size == 1 and float(layer.params["c"].reshape(-1)[0]) == const

    if not ew(sq, "sqrt", 1):
        return None
    add = by.get(sq.inputs[0])
    if not ew(add, "add", 2):
        return None
    pows = [by.get(n) for n in add.inputs]
    if not all(ew(p, "pow", 1, 2.0) or ew(p, "square", 1) for p in pows):
        return None
    slices = [by.get(p.inputs[0]) for p in pows]
    if not all(isinstance(s_, Slice) and s_.axis == 0 and s_.step == 1 for s_ in slices):
        return None
    if slices[0].inputs != slices[1].inputs:
        return None
    conv = by.get(slices[0].inputs[0])
    if (not isinstance(conv, Conv1d) or conv.in_channels != 1 or conv.groups != 1 or conv.dilation != 1
            or any(conv.padding) or conv.bias):
        return None
    C, N = conv.out_channels, conv.kernel_size
    if C % 2 or N & (N - 1):
        return None
    K = C // 2
    if sorted((s_.start, s_.stop) for s_ in slices) != [(0, K), (K, C)] or K > N // 2 + 1:
        return None
    W = conv.params["W"].astype(np.float64)[:, 0, :]  # (2K, N)
    w = W[0]
    n = np.arange(N)
    tol = 1e-5 * max(np.abs(w).max(), 1e-30)
    for k in range(K):
        ang = 2 * np.pi * k * n / N
        if np.abs(W[k] - w * np.cos(ang)).max() > tol:
            return None
        sin = w * np.sin(ang)
        if min(np.abs(W[K + k] - sin).max(), np.abs(W[K + k] + sin).max()) > tol:
            return None
    return conv, K, np.ascontiguousarray(w.astype(np.float32))


# --- hand-written LSTM cells ---------------------------------------------------------------


def recognize_lstm_cells(model):
    """Rewrite Gemm/Split/Sigmoid/Tanh/Mul LSTM cells (PyTorch gate order i, f, g, o) into
    ``LSTM`` nodes, in the main graph and in ``If`` branches. Returns the number rewritten."""
    import onnx
    from onnx import helper, numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}

    def scan(g):
        count = 0
        for n in g.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        for t in g.initializer:
            consts[t.name] = numpy_helper.to_array(t)
        prod = {o: n for n in g.node for o in n.output}
        for split in [n for n in g.node if n.op_type == "Split"]:
            m = _match_cell(split, g, prod, consts)
            if m is None:
                continue
            count += 1
            uid = split.output[0]
            W = np.concatenate(_reorder(m["Wih"]))[None]  # (1, 4H, I) onnx order i, o, f, c
            R = np.concatenate(_reorder(m["Whh"]))[None]
            Bb = np.concatenate([np.concatenate(_reorder(m["bih"])), np.concatenate(_reorder(m["bhh"]))])[None]
            H = R.shape[-1]
            new = [
                helper.make_node("Constant", [], [uid + "_ax0"], value=numpy_helper.from_array(np.array([0], np.int64))),
                helper.make_node("Unsqueeze", [m["x"], uid + "_ax0"], [uid + "_X"]),
                helper.make_node("Unsqueeze", [m["h"], uid + "_ax0"], [uid + "_h0"]),
                helper.make_node("Unsqueeze", [m["c"], uid + "_ax0"], [uid + "_c0"]),
                helper.make_node("LSTM", [uid + "_X", uid + "_W", uid + "_R", uid + "_B", "", uid + "_h0",
                                          uid + "_c0"], ["", uid + "_Yh", uid + "_Yc"], hidden_size=H,
                                 name=(split.name or uid) + "_lstm"),
                helper.make_node("Squeeze", [uid + "_Yh", uid + "_ax0"], [m["h_out"]]),
                helper.make_node("Squeeze", [uid + "_Yc", uid + "_ax0"], [m["c_out"]]),
            ]
            for k, v in (("_W", W), ("_R", R), ("_B", Bb)):
                g.initializer.append(numpy_helper.from_array(v.astype(np.float32), uid + k))
            drop = set(id(n) for n in m["nodes"])
            kept = [n for n in g.node if id(n) not in drop]
            pos = min(i for i, n in enumerate(g.node) if id(n) in drop)
            before = [n for n in g.node[:pos] if id(n) not in drop]
            after = [n for n in kept if n not in before]
            del g.node[:]
            g.node.extend(before + new + after)
            prod = {o: n for n in g.node for o in n.output}
        for n in g.node:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    count += scan(a.g)
        return count

    return scan(model.graph)


def _reorder(w):
    H = w.shape[0] // 4
    i, f, g, o = w[:H], w[H:2 * H], w[2 * H:3 * H], w[3 * H:]
    return [i, o, f, g]


def _match_cell(split, g, prod, consts):
    """The pieces of ``c' = sig(f)*c + sig(i)*tanh(g); h' = sig(o)*tanh(c')`` around ``split``."""
    from onnx import helper

    if len(split.output) != 4:
        return None
    users = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)

    def only(name, op):
        us = users.get(name, [])
        return us[0] if len(us) == 1 and us[0].op_type == op else None

    acts = [only(split.output[k], op) for k, op in enumerate(("Sigmoid", "Sigmoid", "Tanh", "Sigmoid"))]
    if None in acts:
        return None
    si, sf, tg, so = acts
    mul_f = only(sf.output[0], "Mul")
    mul_i = only(si.output[0], "Mul")
    mul_o = only(so.output[0], "Mul")
    if not (mul_f and mul_i and mul_o) or tg.output[0] not in mul_i.input:
        return None
    c = [i for i in mul_f.input if i != sf.output[0]]
    add_c = next((n for n in users.get(mul_f.output[0], []) if n.op_type == "Add"), None)
    if not c or add_c is None or mul_i.output[0] not in add_c.input:
        return None
    tanh_c = next((n for n in users.get(add_c.output[0], []) if n.op_type == "Tanh"), None)
    if tanh_c is None or tanh_c.output[0] not in mul_o.input:
        return None
    add_g = prod.get(split.input[0])
    if add_g is None or add_g.op_type != "Add":
        return None
    gemms = [prod.get(i) for i in add_g.input]
    if any(x is None or x.op_type != "Gemm" for x in gemms):
        return None
    ax = {a.name: helper.get_attribute_value(a) for a in split.attribute}
    parts = []
    for gm in gemms:
        a = {k.name: helper.get_attribute_value(k) for k in gm.attribute}
        if a.get("transA", 0) or not a.get("transB", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            return None
        if gm.input[1] not in consts or len(gm.input) < 3 or gm.input[2] not in consts:
            return None
        parts.append((gm.input[0], consts[gm.input[1]], consts[gm.input[2]]))
    if ax.get("axis", 0) not in (1, -1) or len(split.input) > 1 and split.input[1]:
        if len(split.input) > 1 and split.input[1] in consts:
            if len(set(np.asarray(consts[split.input[1]]).tolist())) != 1:
                return None
        elif ax.get("axis", 0) not in (1, -1):
            return None
    # which Gemm reads the state h: the one whose input is a piece of a graph state (Gather)
    hid = [k for k, (inp, _, _) in enumerate(parts) if prod.get(inp) is not None and prod[inp].op_type == "Gather"
           and prod[inp].input[0] == prod.get(c[0], prod[inp]).input[0]]
    if len(hid) != 1:
        return None
    k = hid[0]
    (h, Whh, bhh), (x, Wih, bih) = parts[k], parts[1 - k]
    H = Whh.shape[1]
    if Whh.shape != (4 * H, H) or Wih.shape[0] != 4 * H:
        return None
    return {"x": x, "h": h, "c": c[0], "Wih": Wih, "Whh": Whh, "bih": bih, "bhh": bhh,
            "h_out": mul_o.output[0], "c_out": add_c.output[0],
            "nodes": [split, *acts, mul_f, mul_i, mul_o, add_c, tanh_c, add_g, *gemms]}


# --- entry point ----------------------------------------------------------------------------


def is_step_graph(model) -> bool:
    """True for a graph called once per step: a graph input returns as an output (``state``
    -> ``stateN``) and reaches the cell through other ops (packed state, as Silero slices
    it), or the graph branches with ``If``. Graphs whose ``initial_h``/``initial_c`` are
    graph inputs themselves go to the sequence importer (``tinyrnn_converters.onnx``)."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    ins = [i.name for i in g.input if i.name not in inits]
    outs = [o.name for o in g.output]
    states = {i for i in ins for o in outs if o != i and o.startswith(i)}
    if not states:
        return False
    if any(n.op_type == "If" for n in g.node):
        return True
    direct = {n.input[k] for n in g.node if n.op_type in ("LSTM", "GRU", "RNN")
              for k in (5, 6) if len(n.input) > k}
    return not states <= direct


def from_onnx_step(source, constants: dict | None = None, input_shapes: dict | None = None) -> Model:
    """Convert an ONNX step graph (see the module docstring) into a streamable ``Model``.

    ``constants`` binds graph inputs (``{"sr": 16000}``); ``input_shapes`` gives the data
    input's per-step shape when the graph leaves it dynamic (Silero's default: 512 new
    samples + 64 of context at 16 kHz, 256 + 32 at 8 kHz). Raises ``UnsupportedModelError``
    listing every op it cannot convert, or naming the input an unfoldable ``If`` depends on.
    """
    import onnx

    if isinstance(source, onnx.ModelProto):
        model, where = onnx.ModelProto(), "<ModelProto>"
        model.CopyFrom(source)
    else:
        try:
            model = onnx.load(str(source))
        except FileNotFoundError:
            from tinyrnn.errors import ModelNotFoundError

            raise ModelNotFoundError(f"no ONNX file at {str(source)!r}") from None
        except Exception as e:  # noqa: BLE001 - protobuf raises many kinds
            raise ModelFormatError(f"{source}: not a readable ONNX model ({e})") from None
        where = str(source)
    return import_step_graph(model, where, constants, input_shapes)


def import_step_graph(model, where: str, constants: dict | None = None, input_shapes: dict | None = None) -> Model:
    """``from_onnx_step`` on a loaded (and checked) ``onnx.ModelProto``; ``from_onnx`` calls this
    for step graphs. The model is copied, not changed."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    recognize_lstm_cells(copy)
    try:
        return StepImporter(copy, constants, input_shapes, where).run()
    except _NeedGeneral:
        # the state passes through other ops than a cell's: carry it as graph state (slower:
        # process() then runs the graph step by step)
        return StepImporter(copy, constants, input_shapes, where, general=True).run()


def pack_state(model: Model, state: dict) -> dict:
    """``Stream.state`` of a converted step graph -> the ONNX graph's state inputs
    (``{"state": (2, B, 128)}`` for Silero)."""
    out = {}
    for name, info in model.metadata.get("onnx_state", {}).items():
        if "graph_state" in info:  # carried as is, batch first
            arr = np.asarray(state[info["graph_state"]])
            out[name] = np.moveaxis(arr, 0, list(info["shape"]).index("B"))
            continue
        parts = [np.asarray(state[p])[:, 0] for p in info["parts"]]  # (B, H) each
        out[name] = np.stack(parts, axis=info["axis"]) if info["axis"] == 0 else np.stack(parts, 1)
    return out


def unpack_state(model: Model, onnx_state: dict) -> dict:
    """The inverse of ``pack_state``: ONNX state arrays -> a dict for ``Stream.state``."""
    out = {}
    for name, info in model.metadata.get("onnx_state", {}).items():
        arr = np.asarray(onnx_state[name], np.float32)
        if "graph_state" in info:
            out[info["graph_state"]] = np.moveaxis(arr, list(info["shape"]).index("B"), 0)
            continue
        for i, p in enumerate(info["parts"]):
            out[p] = np.take(arr, i, axis=info["axis"])[:, None, :]
    return out
