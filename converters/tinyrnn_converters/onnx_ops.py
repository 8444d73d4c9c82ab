"""ONNX import, stage 2: one handler per op type, mapping nodes to tinyrnn layers.

How to add an op
----------------
Write a function ``handler(ctx, node, vals, a) -> list`` and register it::

    @register("Foo")                 # several names allowed: @register("Foo", "Bar")
    def _foo(ctx, node, vals, a):
        x = vals[0]                  # one value per node input (None if the input is absent)
        ...
        return [out]                 # one value per node output

``vals`` holds the values described in ``_ir`` (numpy arrays for constants, ``Sym`` for
symbolic shape vectors, ``Dyn`` for runtime tensors, ``StateIn``/``StateRef``/``Fill`` for
recurrent state); ``a`` is the attribute dict (``onnx_fold.attributes``). The front end
(``onnx.Importer``) folds a node whose inputs are all numpy arrays before any handler sees
it, so handlers only meet nodes with at least one non-constant input. Create layers with
``ctx.add_layer(layer, node)``; read a runtime value's tinyrnn name with ``ctx.src(dyn,
node)`` (it checks the features are whole and last). Raise ``Unsupported("why")`` for
anything the op cannot do here: the front end collects every one and reports them all at
once in an ``UnsupportedModelError``. Attributes that moved to inputs across opsets
(axes of Squeeze/Unsqueeze, Slice's starts/ends, Split's split) are read by the helpers
``_axes_arg`` and friends, so handlers serve opsets 7 through current.
"""

from __future__ import annotations

from math import prod

import numpy as np

from tinyrnn import spec
from tinyrnn.layers import Activation, Dense, Embedding, Recurrent, Softmax

from ._ir import Dim, Dyn, Fill, LengthsIn, StateIn, StateRef, Sym

HANDLERS: dict = {}
INT_MAX = 2 ** 62  # Slice "to the end" sentinels are 2^63-1 or 2^31-1; anything past this counts


class Unsupported(Exception):
    """A node tinyrnn cannot convert; the message says why (collected, then reported)."""


def register(*op_types):
    """Decorator: make ``fn`` the handler of every ONNX op type in ``op_types``."""
    def deco(fn):
        for op in op_types:
            HANDLERS[op] = fn
        return fn
    return deco


# --- helpers ----------------------------------------------------------------------------


def _const(v, what: str) -> np.ndarray:
    if not isinstance(v, np.ndarray):
        raise Unsupported(f"{what} must be a constant (an initializer, or bound with constants=), found a "
                          f"{_kind(v)}")
    return v


def _kind(v) -> str:
    return {Dyn: "runtime tensor", Sym: "shape computed at run time", StateIn: "state input",
            StateRef: "state output", Fill: "filled tensor"}.get(type(v), type(v).__name__)


def _axes_arg(a, vals, i=1, name="axes"):
    """Axes from the attribute (old opsets) or from input ``i`` (new ones); None if absent."""
    if name in a:
        return [int(x) for x in a[name]]
    if len(vals) > i and vals[i] is not None:
        return [int(x) for x in np.asarray(_const(vals[i], name)).reshape(-1)]
    return None


def _sym(v) -> Sym:
    if isinstance(v, Sym):
        return v
    arr = np.asarray(v)
    if arr.dtype.kind not in "iu" or arr.ndim > 1:
        raise Unsupported(f"expected an integer shape vector, found {arr.dtype} {arr.shape}")
    return Sym(arr.reshape(-1).tolist(), scalar=arr.ndim == 0)


def _dims(v) -> list:
    """Entries of a shape vector as Dims (a constant or a Sym)."""
    return _sym(v).dims


# --- shape arithmetic on symbolic vectors -----------------------------------------------


def _sym_gather(x: Sym, idx: np.ndarray):
    idx = np.asarray(idx)
    n = len(x.dims)
    picks = [x.dims[int(i) % n] for i in idx.reshape(-1)]
    return Sym.simplify(picks, scalar=idx.ndim == 0)


def _sym_binary(op: str, x, y):
    xs, ys = _sym(x), _sym(y)
    n = max(len(xs.dims), len(ys.dims))
    if len(xs.dims) not in (1, n) or len(ys.dims) not in (1, n):
        raise Unsupported(f"{op} of shape vectors of lengths {len(xs.dims)} and {len(ys.dims)}")
    out = []
    for i in range(n):
        p, q = xs.dims[i % len(xs.dims)], ys.dims[i % len(ys.dims)]
        if p.concrete and q.concrete:
            r = {"Mul": p.coef * q.coef, "Add": p.coef + q.coef, "Sub": p.coef - q.coef,
                 "Div": p.coef // q.coef if q.coef else None, "Max": max(p.coef, q.coef),
                 "Min": min(p.coef, q.coef)}.get(op)
            if r is None:
                raise Unsupported(f"{op} on shape values")
            out.append(Dim(r))
        elif op == "Mul":
            out.append(p * q)
        elif op == "Div" and p.div(q) is not None:
            out.append(p.div(q))
        elif op in ("Add", "Sub") and q.concrete and q.coef == 0:
            out.append(p)
        elif op == "Max" and q.concrete and q.coef <= 1:
            out.append(p)  # sizes are at least 1
        else:
            raise Unsupported(f"{op} of {p} and {q}: arithmetic on batch/length sizes that tinyrnn cannot "
                              f"keep symbolic")
    return Sym.simplify(out, scalar=xs.scalar and ys.scalar)


# --- layout ops on runtime tensors ------------------------------------------------------


def _norm_axis(ax: int, rank: int, what="axis") -> int:
    if not -rank <= ax < rank:
        raise Unsupported(f"{what} {ax} is out of range for rank {rank}")
    return ax % rank


def _reshape_dyn(ctx, x: Dyn, target: list, allowzero: int = 0) -> Dyn:
    b = ctx.b
    in_sizes = [b.axis_size(ax, x.feat) for ax in x.axes]
    tgt = []
    for i, d in enumerate(target):
        d = Dim.of(d)
        if d.concrete and d.coef == 0 and not allowzero:
            if i >= len(in_sizes):
                raise Unsupported(f"Reshape copies dimension {i} of a rank-{len(in_sizes)} tensor")
            d = in_sizes[i]
        tgt.append(d)
    if sum(1 for d in tgt if d.concrete and d.coef == -1) > 1:
        raise Unsupported("Reshape target has more than one -1")
    feat = list(x.feat)
    atoms = [a for ax in x.axes for a in ax]

    def size(a):
        return b.size(a, feat)

    def value(d: Dim):
        return d.value(b.examples) if not d.concrete else d.coef

    def equal(p: Dim, d: Dim) -> bool:
        if b.same_dim(p, d):
            return True
        if d.concrete and not p.concrete:  # a size baked in by the exporter: compare examples
            return p.value({k: b.examples.get(k) for k in p.syms}) == d.coef
        return False

    def split(k: int, first: int):
        """Split feature factor k into (first, rest); atoms after k shift by one."""
        nonlocal atoms, feat
        rest = feat[k] // first
        feat = feat[:k] + [first, rest] + feat[k + 1:]
        atoms = [a + 1 if isinstance(a, int) and a > k else a for a in atoms]
        i = atoms.index(k)
        atoms = atoms[:i] + [k, k + 1] + atoms[i + 1:]

    def take(dims, forward: bool):
        """Group atoms (from the front or the back) to match ``dims``; returns the groups."""
        nonlocal atoms
        groups = []
        seq = dims if forward else dims[::-1]
        for d in seq:
            group, p = [], Dim(1)
            while True:
                if equal(p, d) and (group or not atoms or not _unit_first(atoms, forward, size, b)):
                    break
                if not atoms:
                    raise Unsupported(f"Reshape to {tgt}: cannot match dimension {d} in a tensor of "
                                      f"shape {in_sizes}")
                a = atoms[0] if forward else atoms[-1]
                s = size(a)
                dv, pv = value(d), value(p)
                if (isinstance(a, int) and dv is not None and pv is not None and pv and s.coef * pv > dv
                        and dv % pv == 0 and s.coef % (dv // pv) == 0):
                    # the target splits a feature factor (e.g. D*H -> D, H)
                    need = dv // pv
                    if forward:
                        split(a, need)
                        a = atoms[atoms.index(a)]
                    else:
                        split(a, s.coef // need)
                        a = a + 1
                    s = size(a)
                elif dv is not None and pv is not None and s.value(b.examples) is not None \
                        and pv * s.value(b.examples) > dv and not isinstance(a, int) and not d.concrete:
                    raise Unsupported(f"Reshape to {tgt}: dimension {d} does not line up with the tensor's axes")
                if forward:
                    atoms.pop(0)
                else:
                    atoms.pop()
                group.append(a)
                p = p * s
                if value(p) is not None and value(d) is not None and value(p) > value(d) and len(group) > 0 \
                        and not equal(p, d):
                    raise Unsupported(f"Reshape to {tgt}: dimension {d} does not line up with the tensor's "
                                      f"axes {in_sizes} (it would split the batch or time axis)")
            groups.append(group if forward else group[::-1])
        return groups if forward else groups[::-1]

    minus = [i for i, d in enumerate(tgt) if d.concrete and d.coef == -1]
    if minus:
        k = minus[0]
        left = take(tgt[:k], True)
        right = take(tgt[k + 1:], False)
        groups = left + [list(atoms)] + right
        atoms = []
    else:
        groups = take(tgt, True)
    if atoms:
        if any(not isinstance(a, int) or feat[a] != 1 for a in atoms):
            raise Unsupported(f"Reshape to {tgt} drops part of a tensor of shape {in_sizes}")
        if groups:
            groups[-1] = groups[-1] + atoms
    return Dyn(x.src, [tuple(g) for g in groups], tuple(feat), x.dtype)


def _unit_first(atoms, forward, size, b) -> bool:
    """True if the next atom is a size-1 feature factor or an axis whose example size is 1
    (it belongs to the current group, not to a new one)."""
    a = atoms[0] if forward else atoms[-1]
    s = size(a)
    return (s.concrete and s.coef == 1) or (not s.concrete and s.value(b.examples) == 1)


@register("Identity", "Dropout")
def _identity(ctx, node, vals, a):
    out = [vals[0]]
    if len(node.output) > 1:
        out.append(None)  # Dropout's mask: unused at inference
    return out


@register("Cast", "CastLike")
def _cast(ctx, node, vals, a):
    import onnx

    x = vals[0]
    to = a.get("to")
    if to is None and isinstance(vals[1], np.ndarray):
        to = onnx.helper.np_dtype_to_tensor_dtype(vals[1].dtype)
    if to is None:
        raise Unsupported("CastLike to the type of a runtime tensor")
    kind = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(to)).kind
    if isinstance(x, Sym):
        if kind in "iu":
            return [x]
        raise Unsupported("casting a run-time shape to floats")
    if isinstance(x, Dyn):
        if (kind == "f") != (x.dtype == "float"):
            raise Unsupported(f"casting a {x.dtype} runtime tensor to {np.dtype(onnx.helper.tensor_dtype_to_np_dtype(to))}")
        return [x]
    return [x]


@register("Shape")
def _shape(ctx, node, vals, a):
    x = vals[0]
    if not isinstance(x, Dyn):
        raise Unsupported(f"Shape of a {_kind(x)}")
    dims = [ctx.b.axis_size(ax, x.feat) for ax in x.axes]
    start, end = a.get("start", 0), a.get("end", None)
    return [Sym.simplify(dims[start:end])]


@register("Size")
def _size(ctx, node, vals, a):
    x = vals[0]
    if not isinstance(x, Dyn):
        raise Unsupported(f"Size of a {_kind(x)}")
    p = Dim(1)
    for ax in x.axes:
        p = p * ctx.b.axis_size(ax, x.feat)
    return [Sym.simplify([p], scalar=True)]


@register("Transpose")
def _transpose(ctx, node, vals, a):
    x = vals[0]
    if isinstance(x, Fill):
        return [x]
    if not isinstance(x, Dyn):
        raise Unsupported(f"Transpose of a {_kind(x)}")
    perm = a.get("perm", list(range(x.rank))[::-1])
    if sorted(perm) != list(range(x.rank)):
        raise Unsupported(f"perm {perm} is not a permutation of {x.rank} axes")
    return [x.with_axes([x.axes[p] for p in perm])]


@register("Squeeze")
def _squeeze(ctx, node, vals, a):
    x = vals[0]
    axes = _axes_arg(a, vals)
    if isinstance(x, Sym):
        if len(x.dims) == 1:
            return [Sym.simplify(x.dims, scalar=True)]
        raise Unsupported(f"Squeeze of a shape vector of length {len(x.dims)}")
    if isinstance(x, Fill):
        return [x]
    if isinstance(x, StateIn) and x.squeezed is False and axes in ([0], [-3]) and x.layout == 0:
        return [StateIn(x.name, x.start, x.stop, x.layout, squeezed=True)]
    if not isinstance(x, Dyn):
        raise Unsupported(f"Squeeze of a {_kind(x)}")
    b = ctx.b
    sizes = [b.axis_size(ax, x.feat) for ax in x.axes]
    if axes is None:
        axes = [i for i, s in enumerate(sizes) if s.concrete and s.coef == 1]
    axes = {_norm_axis(i, x.rank) for i in axes}
    for i in axes:
        s = sizes[i]
        if not (s.concrete and s.coef == 1):
            raise Unsupported(f"Squeeze of axis {i}, which holds {'the batch or time axis' if not s.concrete else s}"
                              f" (tinyrnn keeps batch and time axes)")
    return [x.with_axes([ax for i, ax in enumerate(x.axes) if i not in axes])]


@register("Unsqueeze")
def _unsqueeze(ctx, node, vals, a):
    x = vals[0]
    axes = _axes_arg(a, vals)
    if isinstance(x, Sym):
        if x.scalar and axes in ([0], [-1]):
            return [Sym.simplify(x.dims)]
        raise Unsupported(f"Unsqueeze of a shape vector on axes {axes}")
    if isinstance(x, Fill):
        return [x]
    if isinstance(x, StateIn) and x.squeezed and axes in ([0],):
        return [StateIn(x.name, x.start, x.stop, x.layout, squeezed=False)]
    if not isinstance(x, Dyn):
        raise Unsupported(f"Unsqueeze of a {_kind(x)}")
    r = x.rank + len(axes)
    axes = sorted(_norm_axis(i, r) for i in axes)
    out = list(x.axes)
    for i in axes:
        out.insert(i, ())
    return [x.with_axes(out)]


@register("Reshape")
def _reshape(ctx, node, vals, a):
    x, shape = vals[0], vals[1]
    if isinstance(x, Fill):
        return [x]
    if not isinstance(x, Dyn):
        raise Unsupported(f"Reshape of a {_kind(x)}")
    return [_reshape_dyn(ctx, x, _dims(shape), a.get("allowzero", 0))]


@register("Flatten")
def _flatten(ctx, node, vals, a):
    x = vals[0]
    if not isinstance(x, Dyn):
        raise Unsupported(f"Flatten of a {_kind(x)}")
    k = a.get("axis", 1) % (x.rank + 1) if x.rank else 0
    lead = [at for ax in x.axes[:k] for at in ax]
    rest = [at for ax in x.axes[k:] for at in ax]
    return [x.with_axes([tuple(lead), tuple(rest)])]


@register("Gather")
def _gather(ctx, node, vals, a):
    data, idx = vals[0], vals[1]
    axis = a.get("axis", 0)
    if isinstance(data, Sym):
        return [_sym_gather(data, _const(idx, "Gather indices"))]
    if isinstance(data, StateIn) and isinstance(idx, np.ndarray) and idx.ndim == 0 and axis == 0 \
            and not data.squeezed:
        i = data.start + int(idx)
        return [StateIn(data.name, i, i + 1, data.layout, squeezed=True)]
    if isinstance(data, np.ndarray) and isinstance(idx, Dyn):
        # an embedding lookup: a constant table indexed by token ids
        if axis != 0 or data.ndim != 2:
            raise Unsupported(f"Gather of a {data.shape} table on axis {axis} by runtime indices (an embedding "
                              f"needs a 2-D table gathered on axis 0)")
        if idx.dtype != "int":
            raise Unsupported("Gather indices computed as floats")
        src = ctx.src(idx, node, tokens=True)
        layer = Embedding(ctx.b.unique(ctx.name(node, "embedding")), [src],
                          {"table": data.astype(np.float32)}, int(data.shape[0]), int(data.shape[1]))
        layer.validate_tensors()
        name = ctx.add_layer(layer, node)
        return [Dyn(name, [*idx.axes, (0,)], (int(data.shape[1]),))]
    if isinstance(data, Dyn) and isinstance(idx, np.ndarray):
        ax = _norm_axis(axis, data.rank)
        s = ctx.b.axis_size(data.axes[ax], data.feat)
        if s.concrete and s.coef == 1 and np.all((idx == 0) | (idx == -1)):
            axes = list(data.axes)
            if idx.ndim == 0:
                axes.pop(ax)
            else:
                axes[ax:ax + 1] = [()] * idx.ndim
                axes[ax] = data.axes[ax]
            return [data.with_axes(axes)]
        what = "one time step or one sequence" if not s.concrete else "part of the features"
        raise Unsupported(f"Gather picks {what} (indices {idx.reshape(-1)[:4].tolist()}) of a runtime tensor; "
                          f"tinyrnn models give every step's output")
    raise Unsupported(f"Gather of a {_kind(data)} by a {_kind(idx)}")


@register("Slice")
def _slice(ctx, node, vals, a):
    x = vals[0]
    if "starts" in a:  # opset < 10
        starts, ends = a["starts"], a["ends"]
        axes = a.get("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts = [int(v) for v in _const(vals[1], "Slice starts").reshape(-1)]
        ends = [int(v) for v in _const(vals[2], "Slice ends").reshape(-1)]
        axes = _axes_arg({}, vals, 3) or list(range(len(starts)))
        steps = _axes_arg({}, vals, 4) or [1] * len(starts)
    if isinstance(x, Sym):
        if axes not in ([0], [-1]) or x.scalar:
            raise Unsupported(f"Slice of a shape vector on axes {axes}")
        return [Sym.simplify(x.dims[slice(starts[0], ends[0] if ends[0] < INT_MAX else None, steps[0])])]
    if isinstance(x, Fill):
        return [x]
    if isinstance(x, StateIn) and axes in ([0],) and steps == [1] and not x.squeezed:
        n = (x.stop - x.start) if x.stop is not None else None
        lo = starts[0] if starts[0] >= 0 or n is None else n + starts[0]
        hi = ends[0] if ends[0] < INT_MAX else n
        if hi is not None and hi < 0 and n is not None:
            hi += n
        return [StateIn(x.name, x.start + lo, None if hi is None else x.start + hi, x.layout)]
    if isinstance(x, Dyn):
        for ax, s, e, st in zip(axes, starts, ends, steps):
            ax = _norm_axis(ax, x.rank)
            size = ctx.b.axis_size(x.axes[ax], x.feat)
            full = s == 0 and st == 1 and (e >= INT_MAX or (size.concrete and e >= size.coef)
                                           or (not size.concrete and size.value(ctx.b.examples) == e))
            if not full:
                raise Unsupported(f"Slice [{s}:{e}:{st}] of axis {ax} of a runtime tensor (size {size}); "
                                  f"only whole axes can be kept")
        return [x]
    raise Unsupported(f"Slice of a {_kind(x)}")


@register("Concat")
def _concat(ctx, node, vals, a):
    xs = [v for v in vals if v is not None]
    axis = a["axis"]
    if all(isinstance(v, (Sym, np.ndarray)) for v in xs):
        dims = []
        for v in xs:
            dims += _dims(v)
        return [Sym.simplify(dims)]
    if all(isinstance(v, StateRef) for v in xs):
        layouts = {v.layout for v in xs}
        if len(layouts) == 1 and axis == {0: 0, 1: 1}[layouts.pop()]:
            return [StateRef([p for v in xs for p in v.parts], xs[0].layout)]
        raise Unsupported(f"Concat of recurrent states on axis {axis}")
    if len(xs) == 1:
        return [xs[0]]
    raise Unsupported(f"Concat of {', '.join(_kind(v) for v in xs)} (tinyrnn models are one chain of layers)")


@register("Split")
def _split(ctx, node, vals, a):
    x = vals[0]
    axis = a.get("axis", 0)
    sizes = a.get("split")
    if sizes is None and len(vals) > 1 and vals[1] is not None:
        sizes = _const(vals[1], "Split sizes").tolist()
    if isinstance(x, StateIn) and axis == 0 and not x.squeezed and sizes is not None:
        out, lo = [], x.start
        for s in sizes:
            out.append(StateIn(x.name, lo, lo + int(s), x.layout))
            lo += int(s)
        return out
    raise Unsupported(f"Split of a {_kind(x)}")


@register("ConstantOfShape")
def _constant_of_shape(ctx, node, vals, a):
    value = a.get("value")
    v = float(np.asarray(value).reshape(-1)[0]) if value is not None else 0.0
    return [Fill(v, _dims(vals[0]))]


@register("Expand")
def _expand(ctx, node, vals, a):
    x = vals[0]
    if isinstance(x, np.ndarray) and np.all(x == x.reshape(-1)[0]):
        return [Fill(float(x.reshape(-1)[0]), _dims(vals[1]))]
    if isinstance(x, Fill):
        return [x]
    raise Unsupported(f"Expand of a {_kind(x)}")


# --- arithmetic -------------------------------------------------------------------------


def _feature_vector(ctx, x: Dyn, c: np.ndarray, op: str):
    """``c`` as a per-feature (F,) vector or a scalar, when it broadcasts that way over ``x``."""
    if c.size == 1:
        return float(c.reshape(-1)[0])
    F = x.features
    if not x.feature_last() or c.ndim > x.rank or c.shape[-1] != F or c.size != F:
        raise Unsupported(f"{op} with a constant of shape {c.shape} that does not broadcast along the features "
                          f"of a tensor shaped {[ctx.b.axis_size(ax, x.feat) for ax in x.axes]}")
    return c.reshape(-1).astype(np.float32)


@register("Add", "Sub", "Mul", "Div")
def _arith(ctx, node, vals, a):
    op = node.op_type
    x, y = vals[0], vals[1]
    if isinstance(x, (Sym, np.ndarray)) and isinstance(y, (Sym, np.ndarray)):
        return [_sym_binary(op, x, y)]
    if isinstance(x, Fill) or isinstance(y, Fill):
        raise Unsupported(f"{op} with a filled tensor")
    if isinstance(x, Dyn) and isinstance(y, np.ndarray):
        dyn, c, dyn_first = x, y, True
    elif isinstance(y, Dyn) and isinstance(x, np.ndarray):
        dyn, c, dyn_first = y, x, False
    else:
        raise Unsupported(f"{op} of {_kind(x)} and {_kind(y)} (tinyrnn models are one chain of layers)")
    v = _feature_vector(ctx, dyn, c.astype(np.float32), op)
    # y = scale * x + shift, per feature or for all
    if op == "Add":
        scale, shift = 1.0, v
    elif op == "Sub":
        scale, shift = (1.0, -v) if dyn_first else (-1.0, v)
    elif op == "Mul":
        scale, shift = v, 0.0
    else:
        if not dyn_first:
            raise Unsupported("Div of a constant by a runtime tensor")
        if np.any(np.asarray(v) == 0):
            raise Unsupported("Div by zero")
        scale, shift = 1.0 / np.asarray(v, np.float64), 0.0
    return [ctx.affine(node, dyn, scale, shift)]


@register("MatMul")
def _matmul(ctx, node, vals, a):
    x, w = vals[0], vals[1]
    if not (isinstance(x, Dyn) and isinstance(w, np.ndarray)):
        raise Unsupported(f"MatMul of {_kind(x)} by {_kind(w)} (only runtime tensor @ constant matrix)")
    if w.ndim != 2:
        raise Unsupported(f"MatMul by a constant of shape {w.shape} (a 2-D matrix is needed)")
    return [ctx.dense(node, x, w.astype(np.float32), None)]


@register("Gemm")
def _gemm(ctx, node, vals, a):
    x, w = vals[0], _const(vals[1], "Gemm B")
    c = vals[2] if len(vals) > 2 else None
    if not isinstance(x, Dyn):
        raise Unsupported(f"Gemm of a {_kind(x)}")
    if a.get("transA", 0):
        raise Unsupported("Gemm with transA=1 on a runtime tensor")
    w = w.T if a.get("transB", 0) else w
    w = w.astype(np.float32) * np.float32(a.get("alpha", 1.0))
    bias = None
    if c is not None:
        c = _const(c, "Gemm C").astype(np.float32) * np.float32(a.get("beta", 1.0))
        if c.size not in (1, w.shape[1]) or (c.ndim == 2 and c.shape[0] != 1):
            raise Unsupported(f"Gemm with C of shape {c.shape} (a bias per output is needed)")
        bias = np.broadcast_to(c.reshape(-1), (w.shape[1],)).copy()
    return [ctx.dense(node, x, w, bias)]


# --- elementwise functions --------------------------------------------------------------

_ACTIVATIONS = {
    "Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "LeakyRelu": "leakyrelu", "Elu": "elu",
    "Softsign": "softsign", "Softplus": "softplus", "HardSigmoid": "hardsigmoid",
    "ThresholdedRelu": "thresholdedrelu", "Exp": "exp", "Abs": "abs", "Neg": "neg", "Sqrt": "sqrt",
    "Log": "log", "Reciprocal": "reciprocal", "Gelu": "gelu",
}


@register(*_ACTIVATIONS)
def _activation(ctx, node, vals, a):
    x = vals[0]
    if not isinstance(x, Dyn):
        raise Unsupported(f"{node.op_type} of a {_kind(x)}")
    fn = _ACTIVATIONS[node.op_type]
    if node.op_type == "Gelu" and a.get("approximate", "none") != "none":
        raise Unsupported(f"Gelu with approximate={a['approximate']!r}")
    layer = Activation(ctx.b.unique(ctx.name(node, fn)), [x.src], fn, a.get("alpha"), a.get("beta"))
    return [Dyn(ctx.add_layer(layer, node), x.axes, x.feat)]


@register("Softmax", "LogSoftmax")
def _softmax(ctx, node, vals, a):
    x = vals[0]
    if not isinstance(x, Dyn):
        raise Unsupported(f"{node.op_type} of a {_kind(x)}")
    default = -1 if ctx.opset >= 13 else 1
    axis = _norm_axis(a.get("axis", default), x.rank)
    if axis != x.rank - 1:
        raise Unsupported(f"{node.op_type} over axis {axis} of a rank-{x.rank} tensor (only the last axis)")
    src = ctx.src(x, node)
    layer = Softmax(ctx.b.unique(ctx.name(node, node.op_type.lower())), [src], log=node.op_type == "LogSoftmax")
    return [Dyn(ctx.add_layer(layer, node), x.axes, x.feat)]


# --- recurrent layers -------------------------------------------------------------------

_CELLS = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}


def recurrent_config(op: str, a: dict, D: int) -> dict:
    """tinyrnn layer config from an ONNX LSTM/GRU/RNN node's attributes."""
    cell = _CELLS[op]
    cfg = {}
    acts = a.get("activations")
    if acts:
        alphas, betas = a.get("activation_alpha") or [], a.get("activation_beta") or []
        out = []
        for i, name in enumerate(acts):
            if name.lower() not in spec.CELL_ACTIVATIONS:
                raise Unsupported(f"activation {name!r} (ONNX lists {list(spec.CELL_ACTIVATIONS)})")
            out.append([name.lower(), alphas[i] if i < len(alphas) else None, betas[i] if i < len(betas) else None])
        n = spec.CELL_ACTIVATION_COUNT[cell]
        if len(out) not in (n, n * D):
            raise Unsupported(f"{len(out)} activations for a {D}-direction {op} (expected {n * D})")
        cfg["activations"] = out
    if a.get("clip") is not None:
        if a["clip"] <= 0:
            raise Unsupported(f"clip must be positive, found {a['clip']}")
        cfg["clip"] = float(a["clip"])
    if cell == "lstm":
        cfg["input_forget"] = bool(a.get("input_forget", 0))
    if cell == "gru":
        cfg["linear_before_reset"] = bool(a.get("linear_before_reset", 0))
    return cfg


@register("LSTM", "GRU", "RNN")
def _recurrent(ctx, node, vals, a):
    op = node.op_type
    cell = _CELLS[op]
    vals = list(vals) + [None] * (8 - len(vals))
    x = vals[0]
    W = _const(vals[1], f"{op} W")
    R = _const(vals[2], f"{op} R")
    B = None if vals[3] is None else _const(vals[3], f"{op} B")
    P = None if cell != "lstm" or vals[7] is None else _const(vals[7], f"{op} P")
    direction = a.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise Unsupported(f"direction {direction!r}")
    D = 2 if direction == "bidirectional" else 1
    G = spec.CELL_GATES[cell]
    H = a.get("hidden_size")
    if W.ndim != 3 or W.shape[0] != D or R.ndim != 3 or R.shape[0] != D or W.shape[1] % G:
        raise Unsupported(f"W {W.shape} / R {R.shape} do not fit a {direction} {op}")
    if H is None:
        H = W.shape[1] // G
    if W.shape[1] != G * H or R.shape[1:] != (G * H, H):
        raise Unsupported(f"hidden_size {H}: W must be ({D}, {G * H}, I) and R ({D}, {G * H}, {H}), found "
                          f"{W.shape} and {R.shape}")
    layout = a.get("layout", 0)
    if layout not in (0, 1):
        raise Unsupported(f"layout {layout}")
    for k in a:
        if k not in ("activations", "activation_alpha", "activation_beta", "clip", "direction", "hidden_size",
                     "input_forget", "linear_before_reset", "layout", "output_sequence"):
            raise Unsupported(f"attribute {k!r}")
    cfg = recurrent_config(op, a, D)
    if P is not None and not np.any(P):
        P = None  # zero peepholes are no peepholes (exporters write them)
    if not isinstance(x, Dyn):
        raise Unsupported(f"{op} X is a {_kind(x)}")
    if x.rank != 3:
        raise Unsupported(f"{op} X must have rank 3, found rank {x.rank}")
    t_ax, b_ax = (x.axes[0], x.axes[1]) if layout == 0 else (x.axes[1], x.axes[0])
    for ax, role in ((t_ax, "T"), (b_ax, "B")):
        if len(ax) != 1 or isinstance(ax[0], int):
            raise Unsupported(f"{op} X axis for {'time' if role == 'T' else 'batch'} holds "
                              f"{ctx.b.axis_size(ax, x.feat)}, not the model's {role} axis")
        ctx.b.bind(ax[0], role, f"{op} node {node.name!r}")
    src = ctx.src(x, node, axis_last=True)
    if x.features != W.shape[2]:
        raise Unsupported(f"{op} W expects {W.shape[2]} input features, X has {x.features}")
    name = ctx.b.unique(ctx.name(node, cell))
    layer = Recurrent.from_onnx(cell, name, W, R, B, P=P, inputs=[src], direction=direction, **cfg)
    # state entering the layer
    for slot, kind in ((5, "h"), (6, "c")):
        v = vals[slot]
        if v is None or (kind == "c" and cell != "lstm"):
            continue
        if isinstance(v, StateIn):
            ctx.state_in.append({"input": v.name, "start": v.start, "stop": v.stop, "layout": layout,
                                 "layer": name, "kind": kind, "D": D})
        elif isinstance(v, Fill) and v.value == 0.0:
            pass
        elif isinstance(v, np.ndarray) and not np.any(v):
            pass
        else:
            raise Unsupported(f"{op} initial_{kind} is a {_kind(v)} (tinyrnn starts from zeros or from a state "
                              f"input)")
    lens = vals[4]
    if lens is not None:
        if isinstance(lens, LengthsIn):
            ctx.lengths.add(lens.name)
        else:
            raise Unsupported(f"{op} sequence_lens is a {_kind(lens)} (only a graph input)")
    ctx.add_layer(layer, node)
    t, bb = t_ax[0], b_ax[0]
    Y = Dyn(name, [(t,), (0,), (bb,), (1,)] if layout == 0 else [(bb,), (t,), (0,), (1,)], (D, H))
    outs = [Y, StateRef([(name, "h", D)], layout)]
    if cell == "lstm":
        outs.append(StateRef([(name, "c", D)], layout))
    return outs[:len(node.output)]
