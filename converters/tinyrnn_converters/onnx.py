"""``from_onnx``: an ONNX model in, a ``tinyrnn.Model`` out.

The import runs in three stages, each in its own module:

1. ``onnx_fold``: load and check the model, bind ``constants=`` to inputs, and evaluate
   every node whose inputs are constant (shape chains fold here; symbolic B/T sizes are
   kept by the shape handlers so baked-in Reshape targets do not pin the model).
2. ``onnx_ops``: a registry ``op_type -> handler`` (``@register("Op")``) that maps the
   remaining nodes to tinyrnn layers. Add an op there (its docstring says how).
3. state wiring (here): graph inputs feeding ``initial_h``/``initial_c`` and outputs
   coming from ``Y_h``/``Y_c`` become the stream's state; an input feeding
   ``sequence_lens`` becomes ``Model.run(lengths=...)``.

The walk (``Importer``) keeps going after a node it cannot convert, so one
``UnsupportedModelError`` lists every unsupported op and attribute at once. Before the
walk, ``onnx_unroll`` rewrites RNN cells that an exporter unrolled into per-step MatMul
chains back into ``RNN`` nodes.

What the graph looked like is kept in ``model.metadata["onnx"]``: the data input and its
axis order, the output's axes, and which inputs/outputs are state; ``onnx_backend`` uses
it to answer in the graph's own layout.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from tinyrnn import InputSpec, Model
from tinyrnn.errors import UnsupportedModelError
from tinyrnn.layers import Dense, Embedding, Recurrent

from ._ir import Builder, Dyn, LengthsIn, Poison, StateIn, StateRef
from .onnx_fold import NO_FOLD, attributes, fold_node, initial_values, load_model
from .onnx_ops import HANDLERS, Unsupported

RECURRENT_OPS = ("LSTM", "GRU", "RNN")
# input slot of a recurrent node -> what a graph input reaching it is
_SLOT_ROLES = {0: "data", 1: "weight", 2: "weight", 3: "weight", 4: "lengths", 5: "state", 6: "state",
               7: "weight"}
_ROLE_RANK = {"data": 0, "weight": 1, "lengths": 2, "state": 3}


def from_onnx(source, constants: dict | None = None) -> Model:
    """Convert an ONNX model (path or ``onnx.ModelProto``) into a ``tinyrnn.Model``.

    ``constants`` binds graph inputs to fixed values (``{"sr": 16000}``); whatever they
    decide folds away. The model's one remaining data input becomes the tinyrnn input,
    batch first: ``(B, T, F)`` floats or ``(B, T)`` token ids, whatever axis order the
    graph used. Inputs feeding ``initial_h``/``initial_c`` become stream state.

    Step graphs (called once per step with their state in and out, like Silero VAD:
    ``state`` -> ``stateN`` packed or behind ``If`` branches) go to
    ``tinyrnn_converters.onnx_step``: ``If``s fold on ``constants`` (an ``If`` still
    depending on a run-time input is an ``UnsupportedModelError`` naming it), the state
    becomes the cell's state (or ``Model.states`` when no cell owns it).

    Raises ``ModelNotFoundError`` (no file), ``ModelFormatError`` (not a valid ONNX model),
    ``UnsupportedModelError`` listing every op or attribute tinyrnn cannot represent.
    """
    from . import onnx_unroll

    model, opset, where = load_model(source)
    from . import onnx_step

    if onnx_step.is_step_graph(model):  # one call = one step, state passed in and out (Silero VAD)
        return onnx_step.import_step_graph(model, where, constants)
    model = onnx_unroll.reroll(model)
    return Importer(model, opset, where, constants).run()


def classify_inputs(graph, constant_names) -> dict:
    """Each non-constant graph input -> "data", "weight", "lengths", "state" or "other".

    An input is what it reaches first on a recurrent node (X -> data, W/R/B/P -> weight,
    sequence_lens -> lengths, initial_h/c -> state), following the graph forward through
    any other node; "data" wins when several are reached.
    """
    consumers = defaultdict(list)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name:
                consumers[name].append((node, i))
    out = {}
    for inp in graph.input:
        if inp.name in constant_names:
            continue
        roles, seen, todo = set(), set(), [inp.name]
        while todo:
            v = todo.pop()
            for node, i in consumers.get(v, ()):
                if node.op_type in RECURRENT_OPS:
                    roles.add(_SLOT_ROLES.get(i, "other"))
                    continue
                for o in node.output:
                    if o and o not in seen:
                        seen.add(o)
                        todo.append(o)
        out[inp.name] = min(roles, key=_ROLE_RANK.get) if roles else "other"
    return out


class Importer:
    """Walks one ONNX graph and builds the tinyrnn model (see the module docstring)."""

    def __init__(self, model, opset: int, where: str, constants: dict | None):
        self.model, self.graph, self.opset, self.where = model, model.graph, opset, where
        self.b = Builder()
        self.env: dict = initial_values(model, constants)
        self.state_in: list = []
        self.lengths: set = set()
        self.problems: dict = {}  # message -> first node it was seen at
        self.refs: dict = defaultdict(int)  # tinyrnn value -> ONNX consumer edges still reading it
        self.consumers = defaultdict(int)
        for node in self.graph.node:
            for name in node.input:
                if name:
                    self.consumers[name] += 1
        for o in self.graph.output:
            self.consumers[o.name] += 1

    # --- the helpers handlers call -------------------------------------------------------
    def name(self, node, default: str) -> str:
        return node.name or (node.output[0] if node.output and node.output[0] else default)

    def src(self, x: Dyn, node, tokens: bool = False, axis_last: bool = False) -> str:
        """tinyrnn name of runtime value ``x``, checking a layer can read it as it is."""
        if tokens:
            if x.dtype != "int":
                raise Unsupported(f"{node.op_type} expects token ids, found floats")
            return x.src
        if x.dtype != "float":
            raise Unsupported(f"{node.op_type} reads token ids as features")
        if not x.feature_last():
            raise Unsupported(f"{node.op_type} reads a tensor whose features are not whole and last (axes "
                              f"{x.axes}, feature factors {x.feat}); tinyrnn cannot permute features")
        return x.src

    def add_layer(self, layer, node) -> str:
        return self.b.add(layer)

    def dense(self, node, x: Dyn, W: np.ndarray, bias) -> Dyn:
        src = self.src(x, node)
        if W.shape[0] != x.features:
            raise Unsupported(f"{node.op_type} weight has {W.shape[0]} rows, the input has {x.features} features")
        O = int(W.shape[1])
        b = np.zeros(O, np.float32) if bias is None else np.asarray(bias, np.float32)
        layer = Dense(self.b.unique(self.name(node, "dense")), [src], {"W": W, "b": b}, int(W.shape[0]), O)
        layer.validate_tensors()
        name = self.add_layer(layer, node)
        return Dyn(name, [*x.axes[:-1], (0,)], (O,))

    def affine(self, node, x: Dyn, scale, shift) -> Dyn:
        """``scale * x + shift`` (scalars or per-feature vectors), fused into the Dense
        that made ``x`` when nothing else reads that Dense's output."""
        from tinyrnn.layers import Activation

        prev = self.b.by_name.get(x.src)
        if (isinstance(prev, Dense) and self.refs[x.src] == 1 and x.feature_last()
                and prev.weights == "float32"):
            s = np.broadcast_to(np.asarray(scale, np.float64), (prev.out_features,))
            W = (prev.params["W"].astype(np.float64) * s).astype(np.float32)
            b = (prev.params["b"].astype(np.float64) * s + shift).astype(np.float32)
            new = Dense(prev.name, prev.inputs, {"W": W, "b": b}, prev.in_features, prev.out_features)
            new.validate_tensors()
            self.b.layers[self.b.layers.index(prev)] = new
            self.b.by_name[prev.name] = new
            return x
        if np.ndim(scale) == 0 and np.ndim(shift) == 0:
            layer = Activation(self.b.unique(self.name(node, "affine")), [x.src], "affine", float(scale),
                               float(shift))
            return Dyn(self.add_layer(layer, node), x.axes, x.feat)
        F = x.features
        src = self.src(x, node)
        W = np.diag(np.broadcast_to(np.asarray(scale, np.float64), (F,))).astype(np.float32)
        b = np.broadcast_to(np.asarray(shift, np.float64), (F,)).astype(np.float32)
        layer = Dense(self.b.unique(self.name(node, "scale")), [src], {"W": W, "b": b}, F, F)
        layer.validate_tensors()
        return Dyn(self.add_layer(layer, node), [*x.axes[:-1], (0,)], (F,))

    # --- the walk ---------------------------------------------------------------------
    def run(self) -> Model:
        data = self._bind_inputs()
        live = self._live_nodes()
        for node in self.graph.node:
            if tuple(node.output) in live:
                self._convert(node)
        if self.problems:
            lines = [f"  {msg} (node {where})" for msg, where in self.problems.items()]
            ops = sorted({m.split(":")[0] for m in self.problems})
            raise UnsupportedModelError(f"{self.where}: {len(self.problems)} unsupported construct(s) "
                                        f"in ops {', '.join(ops)}:\n" + "\n".join(lines))
        return self._finish(data)

    def _live_nodes(self) -> set:
        """Output tuples (node keys) of the nodes some graph output depends on (dead ones are not converted)."""
        producer = {o: n for n in self.graph.node for o in n.output if o}
        live, todo = set(), [o.name for o in self.graph.output]
        while todo:
            n = producer.get(todo.pop())
            if n is None or tuple(n.output) in live:
                continue
            live.add(tuple(n.output))
            todo.extend(i for i in n.input if i)
        return live

    def _bind_inputs(self) -> str:
        roles = classify_inputs(self.graph, set(self.env))
        data = [n for n, r in roles.items() if r in ("data", "other")]
        strict = [n for n, r in roles.items() if r == "data"]
        if len(strict) == 1:
            data = strict
        weights = [n for n, r in roles.items() if r == "weight"]
        if weights:
            raise UnsupportedModelError(f"{self.where}: inputs {weights} carry recurrent weights; bind them with "
                                        f"constants={{name: array}}")
        if len(data) != 1:
            raise UnsupportedModelError(
                f"{self.where}: tinyrnn models read one input; this graph reads {data or 'none'} "
                f"(bind the others with constants=)")
        name = data[0]
        extra = [n for n, r in roles.items() if r == "other" and n != name]
        if extra:
            raise UnsupportedModelError(f"{self.where}: tinyrnn models read one input ({name!r}); bind the other "
                                        f"inputs {extra} with constants={{name: value}} (tinyrnn convert "
                                        f"--constant NAME=VALUE)")
        for n, r in roles.items():
            if r == "state":
                self.env[n] = StateIn(n)
            elif r == "lengths":
                self.env[n] = LengthsIn(n)
        inp = next(i for i in self.graph.input if i.name == name)
        tt = inp.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        import onnx

        kind = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).kind if tt.elem_type else "f"
        if kind in "iu" and len(dims) == 2:
            self.env[name] = Dyn("input", [("p0",), ("p1",)], (), "int")
        elif kind == "f" and len(dims) == 3 and dims[2]:
            self.env[name] = Dyn("input", [("p0",), ("p1",), (0,)], (dims[2],))
        else:
            raise UnsupportedModelError(
                f"{self.where}: input {name!r} must be (batch, time, features) floats with a fixed feature size or "
                f"(batch, time) token ids (either axis order); found {np.dtype(kind + '4') if kind in 'fiu' else kind}"
                f" of shape {[d if d else '?' for d in dims]}")
        self.b.examples.update({"p0": dims[0], "p1": dims[1]})
        self.data_name = name
        return name

    def _convert(self, node) -> None:
        vals = [self.env.get(n) if n else None for n in node.input]
        missing = [n for n, v in zip(node.input, vals) if n and v is None]
        if missing:
            raise UnsupportedModelError(f"{self.where}: node {node.name!r} reads {missing}, which no node makes")
        if any(isinstance(v, Poison) for v in vals):
            if node.op_type not in HANDLERS and node.op_type != "Constant":
                # still named, so one error lists every op the graph needs
                self.problems.setdefault(f"{node.op_type}: no converter for this op", node.name or node.output[0])
            self._set(node, [Poison("upstream")] * len(node.output), vals)
            return
        try:
            if node.op_type == "Constant" or (
                    all(v is None or isinstance(v, np.ndarray) for v in vals) and node.op_type not in NO_FOLD
                    and node.op_type not in RECURRENT_OPS and any(isinstance(v, np.ndarray) for v in vals)):
                outs = fold_node(node, vals, self.opset)
            else:
                handler = HANDLERS.get(node.op_type)
                if handler is None:
                    raise Unsupported("no converter for this op")
                outs = handler(self, node, vals, attributes(node))
        except (Unsupported, UnsupportedModelError) as e:
            msg = str(e)
            self.problems.setdefault(f"{node.op_type}: {msg}", node.name or node.output[0])
            outs = [Poison(msg)] * len(node.output)
        except Exception as e:  # a layer constructor refusing the weights, for one
            from tinyrnn.errors import TinyRNNError

            if not isinstance(e, TinyRNNError):
                raise
            self.problems.setdefault(f"{node.op_type}: {e}", node.name or node.output[0])
            outs = [Poison(str(e))] * len(node.output)
        self._set(node, outs, vals)

    def _set(self, node, outs, vals) -> None:
        outs = list(outs) + [None] * (len(node.output) - len(outs))
        out_srcs = {o.src for o in outs if isinstance(o, Dyn)}
        for v in vals:
            if isinstance(v, Dyn) and v.src in out_srcs:
                self.refs[v.src] -= 1  # the edge passes on to the new value
        for name, v in zip(node.output, outs):
            if name:
                self.env[name] = v
                if isinstance(v, Dyn):
                    self.refs[v.src] += self.consumers[name]

    # --- stage 3: outputs, state, the model ------------------------------------------
    def _finish(self, data: str) -> Model:
        b = self.b
        per_step, state_out, bad = [], [], []
        for o in self.graph.output:
            v = self.env.get(o.name)
            if isinstance(v, Dyn):
                per_step.append((o.name, v))
            elif isinstance(v, StateRef):
                state_out.append((o.name, v))
            else:
                bad.append(f"{o.name!r} ({type(v).__name__ if v is not None else 'nothing'})")
        if bad:
            raise UnsupportedModelError(f"{self.where}: outputs {', '.join(bad)} are not computed per step or as "
                                        f"recurrent state")
        distinct = {(v.src, str(v.axes)) for _, v in per_step}
        if len(distinct) > 1:
            raise UnsupportedModelError(f"{self.where}: tinyrnn models have one per-step output; this graph has "
                                        f"{[n for n, _ in per_step]}")
        if per_step:
            out_name, out_val = per_step[0]
            if out_val.src == "input":
                raise UnsupportedModelError(f"{self.where}: the output is the input: nothing to run")
            output = out_val.src
        else:
            rec = [l for l in b.layers if isinstance(l, Recurrent)]
            if not rec:
                raise UnsupportedModelError(f"{self.where}: the graph computes no per-step output")
            out_name, out_val, output = None, None, rec[-1].name
        b.settle_roles()  # roles of the input axes: bound by recurrent layers, or batch-first
        layers = b.needed_by(output)  # keep only the layers the output needs
        need = {layer.name for layer in layers}
        if "input" not in {i for l in layers for i in l.inputs}:
            raise UnsupportedModelError(f"{self.where}: the output does not depend on the input {data!r}")
        d_in = self.env[data] if isinstance(self.env.get(data), Dyn) else None
        first = next(l for l in layers if "input" in l.inputs)
        if isinstance(first, Embedding):
            spec = InputSpec.token_ids(first.vocab_size)
        else:
            spec = InputSpec.features(int(np.prod(d_in.feat)) if d_in is not None else first.input_size)
        meta = self._metadata(data, out_name, out_val, state_out, need)
        return Model(layers, spec, output=output, metadata=meta)

    def _metadata(self, data, out_name, out_val, state_out, need) -> dict:
        b = self.b

        def atoms(ax):
            return [b.roles.get(a, a) if isinstance(a, str) else int(a) for a in ax]

        inp = self.env.get(data)
        x_axes = [b.roles[a[0]] for a in [("p0",), ("p1",)]]
        onnx_meta = {
            "opset": self.opset,
            "producer": f"{self.model.producer_name} {self.model.producer_version}".strip(),
            "input": data,
            "input_axes": x_axes + (["F"] if inp is None or inp.dtype == "float" else []),
            "output": out_name,
            "output_axes": None if out_val is None else [atoms(ax) for ax in out_val.axes],
            "output_feat": None if out_val is None else [int(f) for f in out_val.feat],
            "state_inputs": [s for s in self.state_in if s["layer"] in need],
            "state_outputs": [{"output": n, "layout": v.layout, "parts": [list(p) for p in v.parts]}
                              for n, v in state_out if all(p[0] in need for p in v.parts)],
            "lengths": sorted(self.lengths)[0] if self.lengths else None,
        }
        # an input that starts exactly the states an output returns: the pair a step-by-step
        # caller would feed back, and what the stream now carries itself
        ins: dict = {}
        for rec in onnx_meta["state_inputs"]:
            ins.setdefault(rec["input"], set()).add((rec["layer"], rec["kind"]))
        onnx_meta["state_pairs"] = [[i, o["output"]] for o in onnx_meta["state_outputs"] for i, parts in ins.items()
                                    if parts == {(p[0], p[1]) for p in o["parts"]}]
        from . import __version__

        return {"source": self.where, "converter": f"tinyrnn_converters {__version__} (onnx)",
                "onnx": onnx_meta}
