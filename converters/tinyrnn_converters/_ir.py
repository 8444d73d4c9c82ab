"""What a converter knows about each value of the source graph while it walks it.

Converters walk a graph node by node and keep, for every value, one of:

* ``numpy.ndarray``: a constant (weights, folded shape arithmetic).
* :class:`Sym`: an integer vector (or scalar) that may hold the batch size ``B`` or the
  sequence length ``T`` symbolically. ``Shape`` of a runtime tensor gives one; Gather,
  Slice, Concat, Mul... on it stay symbolic, so a Reshape target computed from the input's
  shape keeps meaning "whatever B and T are" instead of the example's numbers.
* :class:`Dyn`: a tensor computed at run time by tinyrnn layers. tinyrnn's values are
  physically ``(B, T, F)``; a ``Dyn`` records how the source graph *sees* that value: an
  ordered list of axes, each a tuple of atoms (``"B"``, ``"T"``, an input placeholder, or an
  int ``k`` naming the k-th factor of the feature size). ``Y`` of an ONNX LSTM is
  ``[("T",), (0,), ("B",), (1,)]`` with feature factors ``(D, H)``; after Transpose +
  Reshape to ``(T, B, D*H)`` it is ``[("T",), ("B",), (0, 1)]``. Layout ops only rewrite
  this description; arithmetic ops need the features whole and last and become layers.
* :class:`StateRef` / :class:`StateIn` / :class:`Fill`: recurrent state leaving a layer
  (``Y_h``), entering it from a graph input (``initial_h``), or a constant fill (zeros made
  with ``ConstantOfShape``).

:class:`Builder` collects the tinyrnn layers a converter creates and the B/T role of each
input placeholder (decided when a recurrent layer reads the value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import numpy as np

from tinyrnn.errors import UnsupportedModelError


# --- symbolic sizes ---------------------------------------------------------------------


@dataclass(frozen=True)
class Dim:
    """``coef * prod(syms)``: a size that may involve the batch (B) or length (T) symbols."""

    coef: int
    syms: tuple = ()

    @staticmethod
    def of(v) -> "Dim":
        return v if isinstance(v, Dim) else Dim(int(v))

    @property
    def concrete(self) -> bool:
        return not self.syms

    def __mul__(self, other) -> "Dim":
        o = Dim.of(other)
        return Dim(self.coef * o.coef, tuple(sorted(self.syms + o.syms)))

    def div(self, other) -> "Dim | None":
        o = Dim.of(other)
        syms = list(self.syms)
        for s in o.syms:
            if s not in syms:
                return None
            syms.remove(s)
        if o.coef == 0 or self.coef % o.coef:
            return None
        return Dim(self.coef // o.coef, tuple(syms))

    def value(self, examples: dict) -> int | None:
        """The size with each symbol at its example value, or None if one has none."""
        v = self.coef
        for s in self.syms:
            if examples.get(s) is None:
                return None
            v *= examples[s]
        return v

    def __repr__(self):
        return "*".join([str(self.coef)] * (self.coef != 1 or not self.syms) + list(self.syms))


class Sym:
    """An int64 vector (or scalar with ``scalar=True``) whose entries are :class:`Dim`."""

    def __init__(self, dims, scalar: bool = False):
        self.dims = [Dim.of(d) for d in dims]
        self.scalar = scalar
        if scalar and len(self.dims) != 1:
            raise ValueError("a scalar Sym holds one entry")

    @property
    def concrete(self) -> bool:
        return all(d.concrete for d in self.dims)

    def array(self) -> np.ndarray:
        a = np.array([d.coef for d in self.dims], np.int64)
        return a.reshape(()) if self.scalar else a

    @staticmethod
    def simplify(dims, scalar=False):
        """A plain array if every entry is concrete, else a Sym."""
        s = Sym(dims, scalar)
        return s.array() if s.concrete else s

    def __repr__(self):
        return f"Sym({self.dims}{', scalar' if self.scalar else ''})"


# --- runtime values ---------------------------------------------------------------------


@dataclass
class Dyn:
    """A runtime tensor: tinyrnn value ``src`` seen through ``axes`` (see module docstring).

    ``feat`` lists the feature factors (their product is the per-step feature size of
    ``src``; ``()`` for token ids); ``dtype`` is "float" or "int".
    """

    src: str
    axes: list
    feat: tuple
    dtype: str = "float"

    @property
    def rank(self) -> int:
        return len(self.axes)

    @property
    def features(self) -> int:
        return prod(self.feat)

    def with_axes(self, axes, feat=None) -> "Dyn":
        return Dyn(self.src, [tuple(a) for a in axes], self.feat if feat is None else tuple(feat), self.dtype)

    def feature_last(self) -> bool:
        """True when every feature factor of size > 1 sits in the last axis, in order: the
        layout layers compute on (the per-step vector of ``src``, as tinyrnn stores it)."""
        big = [k for k, n in enumerate(self.feat) if n != 1]
        if self.axes and self.feat and not all(isinstance(a, int) for a in self.axes[-1]):
            return False
        if not big:
            return True
        last = [a for a in self.axes[-1] if isinstance(a, int) and self.feat[a] != 1] if self.axes else []
        if last != big:
            return False
        return not any(isinstance(a, int) and self.feat[a] != 1 for ax in self.axes[:-1] for a in ax)

    def time_atoms(self) -> list:
        """The non-feature atoms (placeholders for B and T), in the order they appear."""
        return [a for ax in self.axes for a in ax if not isinstance(a, int)]


@dataclass
class StateRef:
    """Final recurrent state of layer(s): ``parts`` lists ``(layer, "h"|"c", D)`` stacked
    along ONNX's direction axis (axis 0 in layout 0, axis 1 in layout 1)."""

    parts: list
    layout: int = 0


@dataclass
class StateIn:
    """A graph input that feeds recurrent state; ``rows`` picks rows of its direction axis."""

    name: str
    start: int = 0
    stop: int | None = None
    layout: int = 0
    squeezed: bool = False  # one row picked by Gather: the direction axis is gone


@dataclass
class LengthsIn:
    """A graph input that feeds ``sequence_lens`` (``Model.run(lengths=...)``)."""

    name: str


@dataclass
class Fill:
    """A tensor of one constant value whose shape holds B or T (``ConstantOfShape``);
    ``shape`` is None once a layout op has changed it (it is not tracked further)."""

    value: float
    shape: list


@dataclass
class Poison:
    """The output of a node that could not be converted (reported once, at the end)."""

    reason: str


# --- the model being built -------------------------------------------------------------


@dataclass
class Builder:
    """Collects layers, names them uniquely, and records B/T roles of input placeholders."""

    layers: list = field(default_factory=list)
    roles: dict = field(default_factory=dict)  # placeholder -> "B" | "T"
    examples: dict = field(default_factory=dict)  # placeholder -> example size (or None)
    names: set = field(default_factory=lambda: {"input"})
    by_name: dict = field(default_factory=dict)

    def unique(self, base: str) -> str:
        """A layer name derived from ``base`` that matches tinyrnn's naming rule."""
        base = base.replace("/", ".").replace("::", ".")
        clean = "".join(c if c.isalnum() or c in "_.-" else "_" for c in base).strip("._-") or "layer"
        if not (clean[0].isalnum() or clean[0] == "_"):
            clean = "_" + clean
        clean = clean[:100]
        name, i = clean, 1
        while name in self.names:
            i += 1
            name = f"{clean}_{i}"
        self.names.add(name)
        return name

    def add(self, layer) -> str:
        self.layers.append(layer)
        self.by_name[layer.name] = layer
        return layer.name

    def settle_roles(self) -> None:
        """Input axes no layer bound are batch-first by default: p0 is B, p1 is T."""
        for p in ("p0", "p1"):
            if p not in self.roles:
                self.roles[p] = "B" if "B" not in self.roles.values() else "T"

    def needed_by(self, output: str) -> list:
        """The layers ``output`` depends on, in the order they were added."""
        need, stack = set(), [output]
        while stack:
            n = stack.pop()
            if n in need or n == "input":
                continue
            need.add(n)
            stack.extend(self.by_name[n].inputs)
        return [layer for layer in self.layers if layer.name in need]

    def role(self, atom):
        """``"B"``/``"T"`` for a bound placeholder, the atom itself otherwise."""
        return self.roles.get(atom, atom) if isinstance(atom, str) else atom

    def bind(self, atom, role: str, where: str) -> None:
        """Decide that placeholder ``atom`` is the batch (B) or the time (T) axis."""
        have = self.role(atom)
        if have == role:
            return
        if have in ("B", "T"):
            raise UnsupportedModelError(f"{where}: reads the {have} axis where it needs the {role} axis")
        if role in self.roles.values():
            raise UnsupportedModelError(f"{where}: two different axes would both be {role}")
        self.roles[atom] = role

    def size(self, atom, feat) -> Dim:
        """Size of one atom: a feature factor's int, or the symbol of B/T/placeholder."""
        if isinstance(atom, int):
            return Dim(int(feat[atom]))
        return Dim(1, (atom,))

    def axis_size(self, axis, feat) -> Dim:
        d = Dim(1)
        for a in axis:
            d = d * self.size(a, feat)
        return d

    def same_dim(self, a: Dim, b: Dim) -> bool:
        """Equal sizes, resolving placeholders to their roles (B/T symbols unify)."""
        ra = Dim(a.coef, tuple(sorted(self.role(s) for s in a.syms)))
        rb = Dim(b.coef, tuple(sorted(self.role(s) for s in b.syms)))
        return ra == rb
