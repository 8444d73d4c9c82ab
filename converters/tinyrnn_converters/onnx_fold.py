"""ONNX import, stage 1: load, validate, bind constants, fold what is constant.

``load_model`` turns a path or ``ModelProto`` into a checked ``ModelProto`` and its default
opset; ``initial_values`` gives the constant value of every initializer, ``Constant`` node
output and ``constants=`` binding; ``fold_node`` evaluates one node whose inputs are all
constant (numpy for the common shape ops, ``onnx.reference`` for the rest). Symbolic shape
arithmetic (values holding B or T, see ``_ir.Sym``) is done by the op handlers in
``onnx_ops``, which call back here when a node turns out to be fully constant.
"""

from __future__ import annotations

import os

import numpy as np

from tinyrnn.errors import ModelFormatError, ModelNotFoundError, UnsupportedModelError

MIN_OPSET = 7  # the first opset whose LSTM/GRU/RNN match today's definitions
# ops never folded even when their inputs are constant: they are random or have effects
NO_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
           "Bernoulli"}


def load_model(source):
    """A checked ``onnx.ModelProto`` and its default-domain opset.

    ``source``: a path or an ``onnx.ModelProto``. Raises ``ModelNotFoundError`` for a
    missing file, ``ModelFormatError`` for bytes that are not an ONNX model or a model that
    fails ``onnx.checker``, ``UnsupportedModelError`` for an opset outside [7, current] or
    a node from another domain.
    """
    import onnx

    if isinstance(source, onnx.ModelProto):
        model, where = source, "<ModelProto>"
    else:
        where = os.fspath(source)
        if not os.path.isfile(where):
            raise ModelNotFoundError(f"cannot open ONNX model {where!r}: no such file")
        try:
            model = onnx.load(where)
        except Exception as e:  # protobuf raises its own DecodeError, and others
            raise ModelFormatError(f"{where} is not an ONNX model: {type(e).__name__}: {e}") from None
    opsets = {o.domain or "": o.version for o in model.opset_import}
    if "" not in opsets and "ai.onnx" not in opsets:
        raise UnsupportedModelError(f"{where}: the model imports no default-domain ONNX opset "
                                    f"(found {sorted(opsets)})")
    opset = opsets.get("", opsets.get("ai.onnx"))
    current = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= current:
        raise UnsupportedModelError(f"{where}: opset {opset} is not supported; tinyrnn reads opsets "
                                    f"{MIN_OPSET} to {current}")
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ModelFormatError(f"{where}: the ONNX checker rejects the model: {str(e).strip().splitlines()[0]}") \
            from None
    foreign = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise UnsupportedModelError(f"{where}: ops from other domains are not supported: {', '.join(foreign)}")
    return model, opset, where


def attributes(node) -> dict:
    """Node attributes as Python values (strings decoded, tensors as numpy arrays)."""
    import onnx
    from onnx import numpy_helper

    out = {}
    for a in node.attribute:
        if a.type == onnx.AttributeProto.TENSOR:
            out[a.name] = numpy_helper.to_array(a.t)
            continue
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [x.decode("utf-8") for x in v]
        out[a.name] = v
    return out


def initial_values(model, constants: dict | None) -> dict:
    """Name -> numpy array for every initializer and every ``constants=`` binding.

    Bindings must name graph inputs; scalars and sequences are converted to arrays of the
    input's declared element type. Raises ``UnsupportedModelError`` for an unknown name.
    """
    import onnx
    from onnx import numpy_helper

    values = {}
    for init in model.graph.initializer:
        values[init.name] = numpy_helper.to_array(init)
    inputs = {i.name: i for i in model.graph.input}
    for name, v in (constants or {}).items():
        if name not in inputs:
            raise UnsupportedModelError(f"constants: {name!r} is not an input of the model; inputs are "
                                        f"{sorted(k for k in inputs if k not in values)}")
        elem = inputs[name].type.tensor_type.elem_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem) if elem else None
        arr = np.asarray(v, dtype=dtype)
        dims = inputs[name].type.tensor_type.shape.dim
        if inputs[name].type.tensor_type.HasField("shape") and len(dims) != arr.ndim:
            # a scalar bound to a 1-element input (as Silero's sr) is what users mean
            if arr.size == 1 and all(d.dim_value in (0, 1) for d in dims):
                arr = arr.reshape([1] * len(dims))
            else:
                raise UnsupportedModelError(f"constants: input {name!r} has rank {len(dims)}, the value "
                                            f"bound to it has shape {arr.shape}")
        values[name] = arr
    return values


# --- folding one node -------------------------------------------------------------------


def _np_fold(op: str, a: dict, x: list):
    """Fast numpy evaluation of the shape ops exporters emit most; None if not handled."""
    if op == "Identity":
        return [x[0]]
    if op == "Shape":
        s = np.array(x[0].shape, np.int64)
        return [s[a.get("start", 0):a.get("end", None)]]
    if op == "Cast":
        import onnx

        return [x[0].astype(onnx.helper.tensor_dtype_to_np_dtype(a["to"]))]
    if op == "Unsqueeze":
        axes = a["axes"] if "axes" in a else x[1].tolist()
        out = x[0]
        r = out.ndim + len(axes)
        for ax in sorted(ax % r for ax in axes):
            out = np.expand_dims(out, ax)
        return [out]
    if op == "Concat":
        return [np.concatenate([np.atleast_1d(v) for v in x if v is not None], axis=a["axis"])]
    if op == "Gather":
        return [np.take(x[0], x[1], axis=a.get("axis", 0))]
    return None


def fold_node(node, vals: list, opset: int) -> list:
    """Outputs of ``node`` evaluated on constant inputs ``vals`` (None for absent ones).

    Raises ``UnsupportedModelError`` if the reference implementation cannot run it.
    """
    a = attributes(node)
    try:
        out = _np_fold(node.op_type, a, vals)
    except Exception:
        out = None
    if out is not None:
        return out
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    ins, feeds = [], {}
    for i, (name, v) in enumerate(zip(node.input, vals)):
        if not name:
            ins.append("")
            continue
        nm = f"in{i}"
        ins.append(nm)
        feeds[nm] = v
    outs = [f"out{i}" if o else "" for i, o in enumerate(node.output)]
    n = helper.make_node(node.op_type, ins, outs, domain=node.domain)
    n.attribute.extend(node.attribute)
    graph = helper.make_graph(
        [n], "fold",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype), None)
         for k, v in feeds.items()],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outs if o])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    try:
        res = ReferenceEvaluator(m).run(None, {k: np.asarray(v) for k, v in feeds.items()})
    except Exception as e:
        raise UnsupportedModelError(f"{node.op_type}: cannot evaluate on constant inputs ({type(e).__name__}: "
                                    f"{e})") from None
    it = iter(res)
    result = [np.asarray(next(it)) if o else None for o in outs]
    del numpy_helper
    return result
