"""``from_torch`` and ``load_checkpoint``: PyTorch models and state_dicts in.

* A bare ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (any ``num_layers``, ``bidirectional``,
  ``bias``, ``proj_size``, ``batch_first``) converts directly from its parameters: one
  tinyrnn recurrent layer per torch layer, gates reordered from PyTorch's (LSTM i,f,g,o;
  GRU r,z,n) to ONNX's (LSTM i,o,f,c; GRU z,r,h); PyTorch's GRU is ONNX's
  ``linear_before_reset=1``. An ``nn.Sequential`` of supported modules converts the same
  way, module by module.
* Any other module (a class with its own ``forward``) is traced, so the real dataflow
  decides, not the order modules were registered in. First with ``torch.fx``: supported
  leaf modules (embedding, recurrent, linear, activations, softmax, dropout), elementwise
  functions and methods, scalar arithmetic, ``getitem`` on a recurrent output and
  batch/time transposes map to layers one by one. What fx cannot trace or map goes to
  PyTorch's TorchScript ONNX exporter instead (on ``example_input``, made up from the first
  module the input reaches when not given; batch and time marked dynamic), and
  ``from_onnx`` imports that trace; that result is checked against PyTorch on the example
  (max abs difference <= 1e-3). Whatever neither trace can map is an
  ``UnsupportedModelError`` naming the op. A ``forward(x, h0, ...)`` that takes state is
  traced with ``example_input=(x, h0, ...)``; its state inputs become the stream's state.
* ``load_checkpoint(path)`` reads a ``state_dict`` saved with ``torch.save`` using
  ``weights_only=True`` (nothing but tensors is ever unpickled) and infers the layers from
  key names and shapes; what a state_dict cannot tell (an RNN's nonlinearity, the order
  and activations of several heads) must be given as arguments, and the error says which.

tinyrnn models always read ``(B, T, F)`` (batch first), whatever ``batch_first`` was.
"""

from __future__ import annotations

import io
import os
import re

import numpy as np

from tinyrnn import InputSpec, Model
from tinyrnn.errors import ModelFormatError, ModelNotFoundError, UnsupportedModelError
from tinyrnn.layers import Activation, Dense, Embedding, Recurrent, Softmax

# PyTorch gate blocks -> ONNX order
_REORDER = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2], "rnn": [0]}
_TORCH_ACTS = {"ReLU": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "GELU": "gelu", "SiLU": "silu",
               "ELU": "elu", "LeakyReLU": "leakyrelu", "Softsign": "softsign", "Softplus": "softplus",
               "Identity": "identity"}


def reorder_gates(w: np.ndarray, cell: str) -> np.ndarray:
    """Rows (axis 0) of a PyTorch gate-stacked tensor ``(G*H, ...)`` in ONNX gate order.

    Raises ``ModelFormatError`` when ``w`` has no rows axis or its rows do not split into
    the cell's G gates."""
    order = _REORDER[cell]
    w = np.asarray(w)
    if w.ndim < 1 or w.shape[0] == 0 or w.shape[0] % len(order):
        raise ModelFormatError(f"a {cell} parameter stacks {len(order)} gates along its first axis; "
                               f"found shape {w.shape}")
    blocks = np.split(w, len(order), axis=0)
    return np.concatenate([blocks[i] for i in order], axis=0)


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


# --- recurrent weights from parameter dicts ---------------------------------------------


def recurrent_layers(params: dict, cell: str, num_layers: int, bidirectional: bool, name: str,
                     nonlinearity: str = "tanh", first_input: str | None = None) -> list[Recurrent]:
    """tinyrnn layers for a PyTorch RNN/LSTM/GRU given its parameters as numpy arrays
    (``weight_ih_l0``, ``weight_hh_l0``, optional ``bias_*``, ``weight_hr_l0``, ``*_reverse``).

    Raises ``ModelFormatError`` if a parameter is missing or has a shape that does not fit.
    """
    layers = []
    dirs = ["", "_reverse"] if bidirectional else [""]
    prev = first_input
    for k in range(num_layers):
        W, R, B, proj = [], [], [], []
        for sfx in dirs:
            key = f"l{k}{sfx}"
            try:
                wi, wh = params[f"weight_ih_{key}"], params[f"weight_hh_{key}"]
            except KeyError as e:
                raise ModelFormatError(f"{name}: parameter {e.args[0]!r} is missing") from None
            W.append(reorder_gates(wi, cell))
            R.append(reorder_gates(wh, cell))
            has_bias = (f"bias_ih_{key}" in params, f"bias_hh_{key}" in params)
            if has_bias == (True, True):
                B.append(np.concatenate([reorder_gates(params[f"bias_ih_{key}"], cell),
                                         reorder_gates(params[f"bias_hh_{key}"], cell)]))
            elif any(has_bias):
                raise ModelFormatError(f"{name}: bias_ih_{key} and bias_hh_{key} come as a pair; found only "
                                       f"{'bias_ih' if has_bias[0] else 'bias_hh'}_{key}")
            if f"weight_hr_{key}" in params:
                proj.append(params[f"weight_hr_{key}"])
        cfg = {}
        if cell == "gru":
            cfg["linear_before_reset"] = True
        if cell == "rnn":
            if nonlinearity not in ("tanh", "relu"):
                raise UnsupportedModelError(f"{name}: RNN nonlinearity must be 'tanh' or 'relu', found "
                                            f"{nonlinearity!r}")
            cfg["activations"] = [nonlinearity]
        lname = f"{name}_l{k}" if num_layers > 1 else name
        if len(B) not in (0, len(dirs)) or len(proj) not in (0, len(dirs)):
            raise ModelFormatError(f"{name} layer {k}: the directions disagree on which biases or projections "
                                   f"they have")
        try:
            # np.stack is inside: the directions' tensors may disagree in shape
            layer = Recurrent.from_onnx(cell, lname, np.stack(W), np.stack(R), np.stack(B) if B else None,
                                        proj=np.stack(proj) if proj else None, inputs=[prev] if prev else None,
                                        direction="bidirectional" if bidirectional else "forward", **cfg)
        except ValueError as e:
            raise ModelFormatError(f"{name} layer {k}: {e}") from None
        layers.append(layer)
        prev = lname
    return layers


def _module_layers(mod, name: str) -> list | None:
    """tinyrnn layers for one supported leaf module, or None if it is not one."""
    import torch.nn as nn

    if isinstance(mod, (nn.LSTM, nn.GRU, nn.RNN)):
        cell = {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "rnn"}[type(mod)]
        params = {k: _np(v) for k, v in mod.named_parameters()}
        return recurrent_layers(params, cell, mod.num_layers, mod.bidirectional, name,
                                nonlinearity=getattr(mod, "nonlinearity", "tanh"))
    if isinstance(mod, nn.Linear):
        W = _np(mod.weight).T.copy()
        b = _np(mod.bias) if mod.bias is not None else np.zeros(W.shape[1], np.float32)
        return [Dense(name, None, {"W": W, "b": b}, W.shape[0], W.shape[1])]
    if isinstance(mod, nn.Embedding):
        if mod.max_norm is not None:
            return None
        t = _np(mod.weight)
        return [Embedding(name, None, {"table": t}, t.shape[0], t.shape[1])]
    if isinstance(mod, (nn.Dropout, nn.Identity)):
        return []
    if type(mod).__name__ in _TORCH_ACTS and type(mod).__module__.startswith("torch.nn"):
        fn = _TORCH_ACTS[type(mod).__name__]
        alpha = getattr(mod, "negative_slope", None) if fn == "leakyrelu" else getattr(mod, "alpha", None)
        if fn == "gelu" and getattr(mod, "approximate", "none") != "none":
            return None
        if fn == "softplus" and (mod.beta != 1 or mod.threshold != 20):
            return None
        return [] if fn == "identity" else [Activation(name, None, fn, alpha)]
    if isinstance(mod, (nn.Softmax, nn.LogSoftmax)) and mod.dim in (-1, 2):
        return [Softmax(name, None, log=isinstance(mod, nn.LogSoftmax))]
    return None


def _input_spec(first) -> InputSpec:
    if isinstance(first, Embedding):
        return InputSpec.token_ids(first.vocab_size)
    size = first.input_size if isinstance(first, Recurrent) else first.in_features
    return InputSpec.features(size)


def _meta(module, how: str) -> dict:
    from . import __version__

    return {"source": f"torch {type(module).__module__}.{type(module).__qualname__}",
            "converter": f"tinyrnn_converters {__version__} (torch, {how})"}


# --- from_torch ---------------------------------------------------------------------------


def from_torch(module, example_input=None) -> Model:
    """Convert a PyTorch module into a ``tinyrnn.Model`` (see the module docstring).

    ``module``: ``nn.RNN``/``nn.LSTM``/``nn.GRU``, an ``nn.Sequential`` of supported modules,
    or any ``nn.Module`` whose forward runs embedding -> recurrent layers -> linear heads
    with elementwise activations and softmax. ``example_input``: a tensor the module
    accepts (needed only when it cannot be made up from the first module the input
    reaches), or a tuple ``(x, h0, ...)`` for a forward that takes state. The result reads
    batch-first input ``(B, T, F)`` / ``(B, T)`` token ids.

    Raises ``UnsupportedModelError`` naming what cannot be converted.
    """
    import torch
    import torch.nn as nn

    if not isinstance(module, nn.Module):
        raise UnsupportedModelError(f"from_torch expects a torch.nn.Module, found {type(module).__name__}")
    module = module.eval()
    direct = _module_layers(module, type(module).__name__.lower())
    if direct:
        return Model(direct, _input_spec(direct[0]), metadata=_meta(module, "parameters"))
    if isinstance(module, nn.Sequential):
        layers, bad = [], []
        for i, (n, sub) in enumerate(module.named_children()):
            got = _module_layers(sub, re.sub(r"[^A-Za-z0-9_]", "_", n) or f"m{i}")
            if got is None:
                bad.append(f"{n} ({type(sub).__name__})")
            else:
                layers += got
        if not bad and layers:
            return Model(layers, _input_spec(layers[0]), metadata=_meta(module, "sequential"))
        if bad and example_input is None:
            raise UnsupportedModelError(f"modules tinyrnn cannot run: {', '.join(bad)}")
    try:
        return _from_fx(module)
    except _FxUnsupported as fx_error:
        try:
            return _from_trace(module, example_input)
        except UnsupportedModelError as onnx_error:
            raise UnsupportedModelError(f"{type(module).__name__}: {fx_error} (torch.fx trace); the ONNX trace "
                                        f"fails too: {onnx_error}") from None


# --- torch.fx: follow forward() op by op ------------------------------------------------------


class _FxUnsupported(Exception):
    """Something the fx path cannot map (the ONNX trace gets a try next)."""


def _from_fx(module) -> Model:
    """Convert by symbolic tracing with ``torch.fx``: supported leaf modules, elementwise
    functions and methods, ``getitem`` on recurrent outputs, batch/time transposes."""
    import operator

    import torch
    import torch.fx
    import torch.nn as nn
    import torch.nn.functional as F

    from ._ir import Builder, Dyn

    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as e:
        raise _FxUnsupported(f"symbolic tracing failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})") \
            from None
    b = Builder()
    env: dict = {}
    layers: list = []
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise _FxUnsupported(f"forward takes {len(placeholders)} inputs; tinyrnn models read one")
    fns = {torch.relu: "relu", F.relu: "relu", torch.tanh: "tanh", F.tanh: "tanh", torch.sigmoid: "sigmoid",
           F.sigmoid: "sigmoid", F.gelu: "gelu", F.silu: "silu", F.softsign: "softsign", torch.exp: "exp",
           torch.abs: "abs", torch.neg: "neg", operator.neg: "neg", torch.sqrt: "sqrt", torch.log: "log",
           F.elu: "elu", F.leaky_relu: "leakyrelu", F.softplus: "softplus"}
    methods = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "exp": "exp", "abs": "abs", "neg": "neg",
               "sqrt": "sqrt", "log": "log"}
    softmaxes = {torch.softmax: False, F.softmax: False, torch.log_softmax: True, F.log_softmax: True}

    def add(layer, src):
        layer.inputs = [src]
        layers.append(layer)
        b.add(layer)
        return layer.name

    def dyn(v, node):
        if not isinstance(v, Dyn):
            raise _FxUnsupported(f"{node.format_node()}: expected a tensor computed from the input")
        return v

    def feature_last(v, node):
        if not v.feature_last() or v.dtype != "float":
            raise _FxUnsupported(f"{node.format_node()}: needs features in the last axis")
        return v.src

    def act(v, fn, node, alpha=None):
        from tinyrnn.layers import Activation

        v = dyn(v, node)
        return Dyn(add(Activation(b.unique(str(node.name)), None, fn, alpha), v.src), v.axes, v.feat)

    def softmax(v, dim, log, node):
        v = dyn(v, node)
        if dim is None or dim % v.rank != v.rank - 1:
            raise _FxUnsupported(f"{node.format_node()}: softmax over dim {dim}, not the last")
        return Dyn(add(Softmax(b.unique(str(node.name)), None, log=log), feature_last(v, node)), v.axes, v.feat)

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node] = "input"  # typed by the first module that reads it
        elif node.op == "get_attr":
            raise _FxUnsupported(f"{node.format_node()}: reads a tensor attribute")
        elif node.op == "call_module":
            mod = gm.get_submodule(node.target)
            x = env[node.args[0]] if node.args else None
            if x == "input":
                x = _typed_input(mod, node)
                env["__input__"] = x
            x = dyn(x, node)
            name = b.unique(str(node.target))
            if len(node.args) != 1 or node.kwargs:
                raise _FxUnsupported(f"{node.format_node()}: called with more than the input (initial state?)")
            if isinstance(mod, (nn.LSTM, nn.GRU, nn.RNN)):
                ax = (0, 1) if mod.batch_first else (1, 0)
                for i, role in zip(ax, ("B", "T")):
                    if len(x.axes[i]) != 1 or isinstance(x.axes[i][0], int):
                        raise _FxUnsupported(f"{node.format_node()}: input axis {i} is not the {role} axis")
                    b.bind(x.axes[i][0], role, str(node.target))
                src = feature_last(x, node)
                got = recurrent_layers({k: _np(v) for k, v in mod.named_parameters()},
                                       {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "rnn"}[type(mod)], mod.num_layers,
                                       mod.bidirectional, name, getattr(mod, "nonlinearity", "tanh"), src)
                for layer in got:
                    layers.append(layer)
                    b.add(layer)
                width = got[-1].num_directions * got[-1].recurrent_size
                env[node] = ("rnn", Dyn(got[-1].name, [*x.axes[:-1], (0,)], (width,)))
                continue
            got = _module_layers(mod, name)
            if got is None:
                raise _FxUnsupported(f"module {node.target} ({type(mod).__name__}) is not supported")
            if not got:  # Dropout, Identity
                env[node] = x
                continue
            layer = got[0]
            if isinstance(layer, Embedding):
                if x.dtype != "int":
                    raise _FxUnsupported(f"{node.format_node()}: an embedding reads token ids")
                env[node] = Dyn(add(layer, x.src), [*x.axes, (0,)], (layer.dim,))
            elif isinstance(layer, Dense):
                env[node] = Dyn(add(layer, feature_last(x, node)), [*x.axes[:-1], (0,)], (layer.out_features,))
            elif isinstance(layer, Softmax):
                env[node] = softmax(x, mod.dim, layer.log, node)
            else:
                env[node] = Dyn(add(layer, x.src), x.axes, x.feat)
        elif node.op == "call_function" and node.target is operator.getitem:
            base, idx = env[node.args[0]], node.args[1]
            if isinstance(base, tuple) and base[0] == "rnn" and idx == 0:
                env[node] = base[1]
            elif isinstance(base, tuple) and base[0] == "rnn":
                env[node] = ("state", None)  # used only if it reaches the output (then refused)
            else:
                raise _FxUnsupported(f"{node.format_node()}: indexing a tensor")
        elif node.op == "call_function" and node.target in fns:
            alpha = node.kwargs.get("negative_slope", node.kwargs.get("alpha"))
            env[node] = act(env[node.args[0]], fns[node.target], node, alpha)
        elif node.op == "call_function" and node.target in softmaxes:
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            env[node] = softmax(env[node.args[0]], dim, softmaxes[node.target], node)
        elif node.op == "call_method" and node.target in methods and len(node.args) == 1:
            env[node] = act(env[node.args[0]], methods[node.target], node)
        elif node.op == "call_method" and node.target in ("softmax", "log_softmax"):
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            env[node] = softmax(env[node.args[0]], dim, node.target == "log_softmax", node)
        elif node.op == "call_method" and node.target == "contiguous":
            env[node] = env[node.args[0]]
        elif (node.op == "call_method" and node.target in ("transpose", "permute")) or \
                (node.op == "call_function" and node.target in (torch.transpose, torch.permute)):
            v = dyn(env[node.args[0]], node)
            args = list(node.args[1:])
            if node.target in ("transpose", torch.transpose):
                i, j = (d % v.rank for d in args)
                perm = list(range(v.rank))
                perm[i], perm[j] = perm[j], perm[i]
            else:
                perm = [d % v.rank for d in (args[0] if len(args) == 1 and isinstance(args[0], (list, tuple))
                                             else args)]
            env[node] = v.with_axes([v.axes[p] for p in perm])
        elif node.op == "call_function" and node.target in (operator.mul, operator.add, operator.sub,
                                                            operator.truediv, torch.mul, torch.add):
            if len(node.args) != 2 or node.kwargs:
                raise _FxUnsupported(f"{node.format_node()}: arithmetic with extra arguments")
            a0, a1 = (env[a] if isinstance(a, torch.fx.Node) else a for a in node.args)
            if isinstance(a0, Dyn) and isinstance(a1, (int, float)):
                x, c, first = a0, float(a1), True
            elif isinstance(a1, Dyn) and isinstance(a0, (int, float)):
                x, c, first = a1, float(a0), False
            else:
                raise _FxUnsupported(f"{node.format_node()}: arithmetic between tensors")
            op = {operator.mul: "mul", torch.mul: "mul", operator.add: "add", torch.add: "add",
                  operator.sub: "sub", operator.truediv: "div"}[node.target]
            if op == "div" and not first:
                raise _FxUnsupported(f"{node.format_node()}: a number divided by a tensor")
            alpha, beta = {"mul": (c, 0.0), "add": (1.0, c), "sub": (1.0, -c) if first else (-1.0, c),
                           "div": (1.0 / c if c else float("nan"), 0.0)}[op]
            if not np.isfinite(alpha):
                raise _FxUnsupported(f"{node.format_node()}: division by zero")
            from tinyrnn.layers import Activation

            env[node] = Dyn(add(Activation(b.unique(str(node.name)), None, "affine", alpha, beta), x.src),
                            x.axes, x.feat)
        elif node.op == "output":
            out = node.args[0]
            if isinstance(out, (tuple, list)):
                out = out[0]  # (output, state): the state is the stream's own
            y = env.get(out)
            if not isinstance(y, Dyn) or y.src == "input":
                raise _FxUnsupported("the output is not a per-step tensor computed from the input")
            x_in = env.get("__input__")
            if x_in is None or not layers:
                raise _FxUnsupported("no supported module reads the input")
            return _finish_fx(module, b, x_in, y)
        else:
            target = getattr(node.target, "__name__", str(node.target))
            raise _FxUnsupported(f"{node.op} {target} ({node.format_node()}) is not supported")
    raise _FxUnsupported("the traced graph has no output")


def _typed_input(mod, node):
    import torch.nn as nn

    from ._ir import Dyn

    if isinstance(mod, nn.Embedding):
        return Dyn("input", [("p0",), ("p1",)], (), "int")
    size = getattr(mod, "input_size", None) or getattr(mod, "in_features", None)
    if size is None:
        raise _FxUnsupported(f"{node.format_node()}: the first module that reads the input must be an "
                             f"embedding, a recurrent layer or a linear layer")
    return Dyn("input", [("p0",), ("p1",), (0,)], (int(size),))


def _finish_fx(module, b, x_in, y) -> Model:
    b.settle_roles()
    kept = b.needed_by(y.src)
    first = next(layer for layer in kept if "input" in layer.inputs)
    meta = _meta(module, "torch.fx")
    meta["torch"] = {"input_axes": [b.roles[a[0]] for a in x_in.axes[:2]] + (["F"] if x_in.dtype == "float" else []),
                     "output_axes": [[b.roles.get(a, a) if isinstance(a, str) else a for a in ax] for ax in y.axes]}
    return Model(kept, _input_spec(first), output=y.src, metadata=meta)


def _guess_example(module):
    """A small example input for ``module``: from the first module the input reaches."""
    import torch
    import torch.nn as nn

    first = None
    try:
        import torch.fx

        gm = torch.fx.symbolic_trace(module)
        ph = [n for n in gm.graph.nodes if n.op == "placeholder"]
        if len(ph) == 1:
            todo, seen = list(ph[0].users), set()
            while todo and first is None:
                n = todo.pop(0)
                if n in seen:
                    continue
                seen.add(n)
                if n.op == "call_module":
                    m = gm.get_submodule(n.target)
                    if isinstance(m, (nn.Embedding, nn.RNNBase, nn.Linear)):
                        first = m
                        break
                todo.extend(n.users)
    except Exception:
        first = None
    if first is None:  # fx could not trace: registration order is the best guess left
        first = next((m for m in module.modules() if isinstance(m, (nn.Embedding, nn.RNNBase, nn.Linear))), None)
    if first is None:
        raise UnsupportedModelError(f"{type(module).__name__} holds no embedding, recurrent or linear module; "
                                    f"pass example_input")
    g = torch.Generator().manual_seed(0)
    if isinstance(first, nn.Embedding):
        return torch.randint(0, first.num_embeddings, (2, 5), generator=g)
    if isinstance(first, nn.RNNBase):
        shape = (2, 5, first.input_size) if first.batch_first else (5, 2, first.input_size)
        return torch.randn(shape, generator=g)
    return torch.randn((2, 5, first.in_features), generator=g)


def _from_trace(module, example_input) -> Model:
    """Trace ``module`` to ONNX (TorchScript exporter, batch and time dynamic), import it,
    and check the import against PyTorch on the example. ``example_input`` may be a tuple
    ``(x, h0, ...)`` for a forward that takes state: those inputs become stream state."""
    import torch

    from . import onnx_backend
    from .onnx import from_onnx

    args = example_input if isinstance(example_input, (tuple, list)) else (
        _guess_example(module) if example_input is None else example_input,)
    x = args[0]
    if not all(isinstance(a, torch.Tensor) for a in args) or x.ndim not in (2, 3):
        raise UnsupportedModelError(f"example_input must be a tensor of rank 2 (token ids) or 3 (features), or a "
                                    f"tuple of tensors starting with one; found {type(x).__name__} "
                                    f"{getattr(x, 'shape', '')}")
    with torch.no_grad():
        ref = module(*args)
    if isinstance(ref, (tuple, list)):
        ref = ref[0]  # (output, state): the state becomes the stream's own
    names = ["input"] + [f"state{i}" for i in range(1, len(args))]
    dyn = {"input": {0: "dim0", 1: "dim1"}}
    dyn.update({n: {1: "state_batch"} for n, a in zip(names[1:], args[1:]) if a.ndim == 3})
    buf = io.BytesIO()
    try:
        import warnings

        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, tuple(args), buf, dynamo=False, input_names=names, dynamic_axes=dyn,
                              opset_version=17)
    except Exception as e:
        raise UnsupportedModelError(f"{type(module).__name__}: tracing failed: {type(e).__name__}: "
                                    f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
    import onnx

    proto = onnx.load_from_string(buf.getvalue())
    try:
        model = from_onnx(proto)
    except UnsupportedModelError as e:
        raise UnsupportedModelError(f"{type(module).__name__} (traced to ONNX): {e}") from None
    # the backend feeds the example (state inputs included) the way the graph reads it
    feeds = {i.name: a.detach().numpy() for i, a in zip(proto.graph.input, args)}
    got = onnx_backend.prepare(proto).run(feeds)[0]
    want = ref.detach().numpy()
    if got.shape != want.shape or not np.allclose(got, want, atol=1e-3, rtol=1e-3):
        diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else None
        raise UnsupportedModelError(f"{type(module).__name__}: the converted model disagrees with PyTorch on "
                                    f"the example (shapes {got.shape} vs {want.shape}, max diff {diff})")
    model.metadata.update(_meta(module, "traced"))
    return model


# --- checkpoints ----------------------------------------------------------------------------


def read_state_dict(path) -> dict:
    """``{name: float32 array}`` from a ``torch.save``d state_dict, unpickled with
    ``weights_only=True``. Raises ``ModelNotFoundError`` / ``ModelFormatError``."""
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"cannot open checkpoint {path!r}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFormatError(f"{path} is not a state_dict that loads with weights_only=True (tinyrnn never "
                               f"unpickles arbitrary objects): {first[:300]}") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                       for k, v in obj.items()):
        raise ModelFormatError(f"{path} holds a {type(obj).__name__}, not a state_dict (a dict of parameter "
                               f"name -> tensor)")
    return {k.removeprefix("module."): v.detach().float().numpy() for k, v in obj.items()}


_REC_KEY = re.compile(r"^(?P<prefix>.*?)\.?(?P<kind>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l"
                      r"(?P<layer>\d+)(?P<rev>_reverse)?$")


def load_checkpoint(path, rnn_nonlinearity: str | None = None, head_order: list | None = None,
                    head_activation: str | None = None, cell: str | None = None) -> Model:
    """A ``tinyrnn.Model`` from a ``state_dict`` file: embedding -> recurrent modules -> heads.

    Layers come from key names and shapes: ``*.weight_ih_l0`` groups make recurrent
    modules (cell from the gate count, ``_reverse`` keys mean bidirectional, ``weight_hr``
    a projection); a bias-less 2-D ``*emb*.weight`` is an embedding; other
    ``weight``/``bias`` pairs are linear heads chained by their sizes. What the file
    cannot say must be passed: ``rnn_nonlinearity`` ("tanh"/"relu") for an ``nn.RNN``,
    ``head_order`` (prefixes) when the chain of heads is ambiguous, ``head_activation``
    (e.g. "relu", or "none") between two or more heads; ``cell`` overrides the inferred
    cell kind. Raises ``ModelFormatError`` / ``UnsupportedModelError`` saying which.
    """
    sd = read_state_dict(path)
    rec, other = {}, {}
    for k, v in sd.items():
        m = _REC_KEY.match(k)
        if m:
            rec.setdefault(m["prefix"], {})[k[len(m["prefix"]):].lstrip(".")] = v
        else:
            other[k] = v
    if not rec:
        raise UnsupportedModelError(f"{path}: no recurrent module found (no '*.weight_ih_l0' keys); keys are "
                                    f"{sorted(sd)[:12]}")
    layers = []
    groups = {}
    for k, v in other.items():
        prefix, _, pname = k.rpartition(".")
        groups.setdefault(prefix, {})[pname] = v
    embeddings, heads, unknown = [], {}, []
    for prefix, ps in groups.items():
        if set(ps) == {"weight"} and ps["weight"].ndim == 2 and "emb" in prefix.lower():
            embeddings.append(prefix)
        elif set(ps) <= {"weight", "bias"} and "weight" in ps and ps["weight"].ndim == 2:
            heads[prefix] = ps
        else:
            unknown.append(f"{prefix} ({', '.join(f'{n} {tuple(a.shape)}' for n, a in ps.items())})")
    if unknown:
        raise UnsupportedModelError(f"{path}: parameters of no module tinyrnn knows: {'; '.join(unknown)}")
    if len(embeddings) > 1:
        raise UnsupportedModelError(f"{path}: several embeddings {embeddings}; tinyrnn models read one input")
    # recurrent modules, chained by sizes
    specs = []
    for prefix, ps in rec.items():
        for k, v in sorted(ps.items()):
            # sizes are read off these shapes below: a lying rank must not get that far
            want = 1 if k.startswith("bias") else 2
            if v.ndim != want or 0 in v.shape:
                raise ModelFormatError(f"{path}: {prefix}.{k} must be a non-empty {want}-D tensor, found shape "
                                       f"{tuple(v.shape)}")
        n_layers = 1 + max(int(_REC_KEY.match(k)["layer"]) for k in ps)
        bidir = any(k.endswith("_reverse") for k in ps)
        wi, wh = ps.get("weight_ih_l0"), ps.get("weight_hh_l0")
        if wi is None or wh is None:
            raise ModelFormatError(f"{path}: {prefix or 'the recurrent module'} lacks weight_ih_l0/weight_hh_l0")
        H = ps["weight_hr_l0"].shape[1] if "weight_hr_l0" in ps else wh.shape[1]
        G = wi.shape[0] // H if H and wi.shape[0] % H == 0 else None
        kind = cell or {1: "rnn", 3: "gru", 4: "lstm"}.get(G)
        if kind is None:
            raise ModelFormatError(f"{path}: {prefix}: weight_ih_l0 {wi.shape} with hidden size {H} fits no cell "
                                   f"(gate counts 1, 3, 4)")
        nl = "tanh"
        if kind == "rnn":
            if rnn_nonlinearity is None:
                raise UnsupportedModelError(f"{path}: {prefix or 'the recurrent module'} is an nn.RNN, whose "
                                            f"nonlinearity a state_dict does not record; say which with "
                                            f"--rnn-nonlinearity tanh|relu")
            nl = rnn_nonlinearity
        out = (2 if bidir else 1) * (ps["weight_hr_l0"].shape[0] if "weight_hr_l0" in ps else H)
        specs.append((prefix, ps, kind, n_layers, bidir, nl, wi.shape[1], out))
    specs = _chain(specs, lambda s: s[6], lambda s: s[7], path, "recurrent modules")
    if embeddings:
        t = groups[embeddings[0]]["weight"]
        if t.shape[1] != specs[0][6]:
            raise UnsupportedModelError(f"{path}: embedding {embeddings[0]} has width {t.shape[1]}, the first "
                                        f"recurrent module reads {specs[0][6]}")
        layers.append(Embedding(_lname(embeddings[0], "embedding"), None, {"table": t}, t.shape[0], t.shape[1]))
    for prefix, ps, kind, n_layers, bidir, nl, _, _ in specs:
        layers += recurrent_layers(ps, kind, n_layers, bidir, _lname(prefix, kind), nonlinearity=nl,
                                   first_input=layers[-1].name if layers else None)
    # heads: chained by sizes from the recurrent output, or in the order given
    width = specs[-1][7]
    if head_order is not None:
        missing = [h for h in head_order if h not in heads]
        if missing or len(head_order) != len(heads):
            raise UnsupportedModelError(f"{path}: head_order must list each of {sorted(heads)} once, found "
                                        f"{head_order}")
        order = list(head_order)
    else:
        order = []
        left = dict(heads)
        while left:
            nxt = [h for h, ps in left.items() if ps["weight"].shape[1] == width]
            if len(nxt) != 1:
                if not nxt:
                    raise UnsupportedModelError(f"{path}: heads {sorted(left)} do not chain from width {width}; "
                                                f"give their order with --head-order")
                raise UnsupportedModelError(f"{path}: heads {sorted(nxt)} all read width {width}; the order heads "
                                            f"apply in is ambiguous: give it with --head-order")
            h = nxt[0]
            order.append(h)
            width = left.pop(h)["weight"].shape[0]
    if len(order) > 1 and head_activation is None:
        raise UnsupportedModelError(f"{path}: {len(order)} heads {order}; a state_dict does not record the "
                                    f"activation between them: give it with --head-activation (e.g. relu, "
                                    f"tanh, none)")
    for i, h in enumerate(order):
        if i and head_activation not in (None, "none"):
            layers.append(Activation(_lname(f"{h}_act", "act"), None, head_activation.lower()))
        W = heads[h]["weight"].T.copy()
        b = heads[h].get("bias", np.zeros(W.shape[1], np.float32))
        layers.append(Dense(_lname(h, "dense"), None, {"W": W, "b": b}, W.shape[0], W.shape[1]))
    names = set()
    for layer in layers:  # uniqueness (prefixes are unique, but a cell name may repeat one)
        if layer.name in names:
            raise ModelFormatError(f"{path}: two modules map to the layer name {layer.name!r}")
        names.add(layer.name)
    from . import __version__

    meta = {"source": os.path.basename(os.fspath(path)), "converter": f"tinyrnn_converters {__version__} "
            f"(torch state_dict)"}
    return Model(layers, _input_spec(layers[0]), metadata=meta)


def _lname(prefix: str, default: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", prefix).strip(".-") or default
    return name if name[0].isalnum() or name[0] == "_" else "_" + name


def _chain(items, width_in, width_out, path, what):
    """Order ``items`` so each one's input width is the previous one's output width."""
    if len(items) == 1:
        return items
    starts = [s for s in items if not any(width_out(o) == width_in(s) for o in items if o is not s)]
    if len(starts) != 1:
        raise UnsupportedModelError(f"{path}: the order of the {what} {[s[0] for s in items]} is ambiguous from "
                                    f"their sizes")
    out, left = [starts[0]], [s for s in items if s is not starts[0]]
    while left:
        nxt = [s for s in left if width_in(s) == width_out(out[-1])]
        if len(nxt) != 1:
            raise UnsupportedModelError(f"{path}: the order of the {what} {[s[0] for s in items]} is ambiguous "
                                        f"from their sizes")
        out.append(nxt[0])
        left.remove(nxt[0])
    return out
