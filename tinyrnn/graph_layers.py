"""Feed-forward layers for the small graphs around real recurrent models (Silero VAD).

Each acts on every step independently: a value of shape ``(B, T, *feature)`` goes in, and
the layer only looks at the per-step ``feature`` part. Axes in configs are therefore
*feature* axes (0 is the first axis after ``(B, T)``), never negative in a file.

==============  ==========================================================================
``conv1d``      ``(C_in, L) -> (C_out, L_out)``; stride, padding, dilation, groups, bias
``pad``         one feature axis padded: ``constant`` (with ``value``), ``reflect``, ``edge``
``reshape``     same values, another feature shape (Reshape, Squeeze, Unsqueeze, Flatten)
``slice``       ``start:stop:step`` along one axis (Slice, one output of Split)
``concat``      two or more inputs joined along one axis
``elementwise`` unary ``sqrt abs neg exp log reciprocal square relu`` or binary ``add sub mul
                div pow max min`` between two inputs of one shape, or an input and a
                stored constant ``c`` that broadcasts (numpy rules) to the feature shape
``reduce``      ``mean sum max min`` along one axis, ``keepdims`` or not
==============  ==========================================================================

Conv1d output length: ``L_out = (L + pad_l + pad_r - dilation * (K - 1) - 1) // stride + 1``
(ONNX Conv / PyTorch Conv1d). Tensors: ``W (C_out, C_in / groups, K)`` and, with
``bias``, ``b (C_out,)``.

Every config value and tensor is checked in ``from_config``/``validate_tensors`` and every
shape in ``output_shape`` (``ModelFormatError`` naming the layer), so the kernels in
``tinyrnn.backends.graph_kernels`` never see an index out of range.
"""

from __future__ import annotations

import math

import numpy as np

from .layers import (
    Layer,
    _fail,
    _get_bool,
    _get_choice,
    _get_float,
    _get_int,
    _weights_dtype,
)

MAX_RANK = 4  # feature axes a graph layer handles (the input spec allows up to 4)


def _feature_axis(name: str, axis: int, shape: tuple) -> None:
    if not 0 <= axis < len(shape):
        raise _fail(name, f"axis {axis} does not exist in features of shape {shape}")


def pqr(shape: tuple, axis: int) -> tuple[int, int, int]:
    """``shape`` seen as ``(outer, shape[axis], inner)`` (how the kernels index it)."""
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


# --- conv1d -----------------------------------------------------------------------------


class Conv1d(Layer):
    """1-D convolution over per-step features ``(C_in, L)`` (ONNX Conv with one spatial axis).

    ``padding`` is ``[left, right]`` zeros; ``groups`` splits channels as ONNX/PyTorch do.
    """

    type = "conv1d"
    # not offered to Model.quantize: one int8 scale per output channel spans two axes of W,
    # which the quantizer's one-axis scales do not describe (convolutions stay float32)
    matrices = ()

    def __init__(self, name, inputs, params, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, padding=(0, 0), dilation: int = 1, groups: int = 1, bias: bool = True,
                 weights: str = "float32"):
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.dilation, self.groups = stride, dilation, groups
        self.padding = [int(padding[0]), int(padding[1])]
        self.bias, self.weights = bool(bias), weights
        if in_channels % groups or out_channels % groups:
            raise _fail(name, f"groups={groups} must divide in_channels={in_channels} and "
                              f"out_channels={out_channels}")
        super().__init__(name, inputs, params)

    @classmethod
    def from_config(cls, name, inputs, cfg, params):
        pad = cfg.get("padding", [0, 0])
        if (not isinstance(pad, list) or len(pad) != 2
                or any(isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 1 << 16 for p in pad)):
            raise _fail(name, f"'padding' must be [left, right] with integers in [0, 65536], found {pad!r}")
        return cls(name, inputs, params, _get_int(cfg, "in_channels", name), _get_int(cfg, "out_channels", name),
                   _get_int(cfg, "kernel_size", name, hi=1 << 16), _get_int(cfg, "stride", name, hi=1 << 16),
                   pad, _get_int(cfg, "dilation", name, hi=1 << 16), _get_int(cfg, "groups", name),
                   _get_bool(cfg, "bias", name), _weights_dtype(cfg, name))

    def config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": self.kernel_size, "stride": self.stride, "padding": list(self.padding),
                "dilation": self.dilation, "groups": self.groups, "bias": self.bias, "weights": self.weights}

    def expected_tensors(self):
        out = self._matrix("W", (self.out_channels, self.in_channels // self.groups, self.kernel_size),
                           (self.out_channels,))
        if self.bias:
            out["b"] = ((self.out_channels,), ("float32",))
        return out

    def output_length(self, L: int) -> int:
        span = self.dilation * (self.kernel_size - 1) + 1
        return (L + self.padding[0] + self.padding[1] - span) // self.stride + 1

    def output_shape(self, in_shapes):
        s = in_shapes[0]
        if len(s) != 2 or s[0] != self.in_channels:
            raise _fail(self.name, f"expects features (in_channels={self.in_channels}, length), found {s}")
        L_out = self.output_length(s[1])
        if L_out < 1:
            raise _fail(self.name, f"input length {s[1]} with padding {self.padding} is shorter than the "
                                   f"kernel's span {self.dilation * (self.kernel_size - 1) + 1}")
        return (self.out_channels, L_out)

    def describe(self):
        bits = [f"{self.in_channels} -> {self.out_channels}, k={self.kernel_size}"]
        if self.stride != 1:
            bits.append(f"stride {self.stride}")
        if any(self.padding):
            bits.append(f"pad {self.padding[0]},{self.padding[1]}")
        if self.dilation != 1:
            bits.append(f"dilation {self.dilation}")
        if self.groups != 1:
            bits.append(f"groups {self.groups}")
        return ", ".join(bits)


# --- shape layers -----------------------------------------------------------------------


class Pad(Layer):
    """Pad one feature axis by ``before``/``after`` entries (ONNX Pad on one axis)."""

    type = "pad"
    MODES = ("constant", "reflect", "edge")

    def __init__(self, name, inputs, axis: int, before: int, after: int, mode: str = "constant",
                 value: float = 0.0):
        if mode not in self.MODES:
            raise _fail(name, f"'mode' must be one of {list(self.MODES)}, found {mode!r}")
        self.axis, self.before, self.after, self.mode, self.value = axis, before, after, mode, float(value)
        super().__init__(name, inputs, {})

    @classmethod
    def from_config(cls, name, inputs, cfg, params):
        return cls(name, inputs, _get_int(cfg, "axis", name, lo=0, hi=MAX_RANK - 1),
                   _get_int(cfg, "before", name, lo=0, hi=1 << 20), _get_int(cfg, "after", name, lo=0, hi=1 << 20),
                   _get_choice(cfg, "mode", name, cls.MODES), _get_float(cfg, "value", name, 0.0))

    def config(self):
        return {"axis": self.axis, "before": self.before, "after": self.after, "mode": self.mode,
                "value": self.value}

    def output_shape(self, in_shapes):
        s = in_shapes[0]
        _feature_axis(self.name, self.axis, s)
        L = s[self.axis]
        if self.mode == "reflect" and max(self.before, self.after) > L - 1:
            raise _fail(self.name, f"reflect padding of {self.before},{self.after} needs an axis longer than "
                                   f"both, found length {L}")
        out = list(s)
        out[self.axis] = L + self.before + self.after
        return tuple(out)

    def describe(self):
        return f"{self.mode} axis {self.axis} +{self.before}/+{self.after}"


class Reshape(Layer):
    """The same values under another per-step feature shape."""

    type = "reshape"

    def __init__(self, name, inputs, shape):
        self.shape = tuple(int(s) for s in shape)
        super().__init__(name, inputs, {})

    @classmethod
    def from_config(cls, name, inputs, cfg, params):
        shape = cfg.get("shape")
        if (not isinstance(shape, list) or not 1 <= len(shape) <= MAX_RANK
                or any(isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 1 << 24 for s in shape)):
            raise _fail(name, f"'shape' must list 1 to {MAX_RANK} positive sizes, found {shape!r}")
        return cls(name, inputs, shape)

    def config(self):
        return {"shape": list(self.shape)}

    def output_shape(self, in_shapes):
        if math.prod(in_shapes[0]) != math.prod(self.shape):
            raise _fail(self.name, f"cannot view features of shape {in_shapes[0]} as {self.shape}")
        return self.shape

    def describe(self):
        return f"-> {self.shape}"


class Slice(Layer):
    """``x[..., start:stop:step, ...]`` along feature axis ``axis`` (``0 <= start < stop``)."""

    type = "slice"

    def __init__(self, name, inputs, axis: int, start: int, stop: int, step: int = 1):
        self.axis, self.start, self.stop, self.step = axis, start, stop, step
        if stop <= start:
            raise _fail(name, f"a slice needs start < stop, found {start}:{stop}")
        super().__init__(name, inputs, {})

    @classmethod
    def from_config(cls, name, inputs, cfg, params):
        return cls(name, inputs, _get_int(cfg, "axis", name, lo=0, hi=MAX_RANK - 1),
                   _get_int(cfg, "start", name, lo=0), _get_int(cfg, "stop", name),
                   _get_int(cfg, "step", name, default=1))

    def config(self):
        return {"axis": self.axis, "start": self.start, "stop": self.stop, "step": self.step}

    def output_shape(self, in_shapes):
        s = in_shapes[0]
        _feature_axis(self.name, self.axis, s)
        if self.stop > s[self.axis]:
            raise _fail(self.name, f"slice {self.start}:{self.stop} reaches past axis {self.axis} of length "
                                   f"{s[self.axis]}")
        out = list(s)
        out[self.axis] = len(range(self.start, self.stop, self.step))
        return tuple(out)

    def describe(self):
        step = f":{self.step}" if self.step != 1 else ""
        return f"axis {self.axis} [{self.start}:{self.stop}{step}]"


class Concat(Layer):
    """Inputs joined along feature axis ``axis``; all other axes must agree."""

    type = "concat"
    arity = (2, 64)

    def __init__(self, name, inputs, axis: int):
        self.axis = axis
        super().__init__(name, inputs, {})

    @classmethod
    def from_config(cls, name, inputs, cfg, params):
        return cls(name, inputs, _get_int(cfg, "axis", name, lo=0, hi=MAX_RANK - 1))

    def config(self):
        return {"axis": self.axis}

    def output_shape(self, in_shapes):
        first = in_shapes[0]
        _feature_axis(self.name, self.axis, first)
        total = 0
        for s in in_shapes:
            if len(s) != len(first) or any(a != b for i, (a, b) in enumerate(zip(s, first)) if i != self.axis):
                raise _fail(self.name, f"inputs must agree on every axis but {self.axis}, found {list(in_shapes)}")
            total += s[self.axis]
        out = list(first)
        out[self.axis] = total
        return tuple(out)

    def describe(self):
        return f"axis {self.axis}"


# --- arithmetic -------------------------------------------------------------------------

UNARY = {"sqrt": 0, "abs": 1, "neg": 2, "exp": 3, "log": 4, "reciprocal": 5, "square": 6, "relu": 7}
BINARY = {"add": 0, "sub": 1, "mul": 2, "div": 3, "pow": 4, "max": 5, "min": 6}


class Elementwise(Layer):
    """A unary or binary elementwise op.

    Binary ops take two inputs of one feature shape, or one input and the stored constant
    ``c`` (any shape that broadcasts to the input's features by numpy rules; ``c_first``
    puts the constant on the left: ``c - x``, ``c / x``, ``c ** x``).
    """

    type = "elementwise"
    arity = (1, 2)

    def __init__(self, name, inputs, params, op: str, c_first: bool = False):
        if op not in UNARY and op not in BINARY:
            raise _fail(name, f"'op' must be one of {sorted([*UNARY, *BINARY])}, found {op!r}")
        self.op, self.c_first = op, bool(c_first)
        super().__init__(name, inputs, params)

    @classmethod
    def from_config(cls, name, inputs, cfg, params):
        return cls(name, inputs, params, _get_choice(cfg, "op", name, [*UNARY, *BINARY]),
                   _get_bool(cfg, "c_first", name))

    @property
    def has_constant(self) -> bool:
        return "c" in self.params

    def config(self):
        return {"op": self.op, "c_first": self.c_first}

    def expected_tensors(self):
        if "c" not in self.params:
            return {}
        c = self.params["c"]
        if c.ndim > MAX_RANK:
            raise _fail(self.name, f"constant 'c' has {c.ndim} axes; at most {MAX_RANK}")
        return {"c": (tuple(c.shape), ("float32",))}

    def output_shape(self, in_shapes):
        n = len(in_shapes) + self.has_constant
        want = 1 if self.op in UNARY else 2
        if n != want:
            raise _fail(self.name, f"{self.op} takes {want} operands (inputs plus constant), found {n}")
        s = in_shapes[0]
        if len(in_shapes) == 2 and in_shapes[1] != s:
            raise _fail(self.name, f"both inputs must have one shape, found {in_shapes[0]} and {in_shapes[1]}")
        if self.has_constant:
            c = self.params["c"].shape
            try:
                if np.broadcast_shapes(c, s) != tuple(s):
                    raise ValueError
            except ValueError:
                raise _fail(self.name, f"constant of shape {c} does not broadcast to features {s}") from None
        return tuple(s)

    def describe(self):
        if self.has_constant:
            c = self.params["c"]
            cs = f"{float(c.reshape(-1)[0]):g}" if c.size == 1 else f"const{c.shape}"
            return f"{cs} {self.op} x" if self.c_first else f"x {self.op} {cs}"
        return self.op


class Reduce(Layer):
    """``mean``/``sum``/``max``/``min`` over feature axis ``axis`` (ONNX ReduceMean & co.)."""

    type = "reduce"
    OPS = {"mean": 0, "sum": 1, "max": 2, "min": 3}

    def __init__(self, name, inputs, op: str, axis: int, keepdims: bool = True):
        if op not in self.OPS:
            raise _fail(name, f"'op' must be one of {sorted(self.OPS)}, found {op!r}")
        self.op, self.axis, self.keepdims = op, axis, bool(keepdims)
        super().__init__(name, inputs, {})

    @classmethod
    def from_config(cls, name, inputs, cfg, params):
        return cls(name, inputs, _get_choice(cfg, "op", name, cls.OPS),
                   _get_int(cfg, "axis", name, lo=0, hi=MAX_RANK - 1), _get_bool(cfg, "keepdims", name, True))

    def config(self):
        return {"op": self.op, "axis": self.axis, "keepdims": self.keepdims}

    def output_shape(self, in_shapes):
        s = in_shapes[0]
        _feature_axis(self.name, self.axis, s)
        if self.keepdims:
            return tuple(1 if i == self.axis else d for i, d in enumerate(s))
        out = tuple(d for i, d in enumerate(s) if i != self.axis)
        if not out:
            raise _fail(self.name, "reducing the only feature axis without keepdims leaves no features; "
                                   "keep the axis")
        return out

    def describe(self):
        return f"{self.op} axis {self.axis}" + ("" if self.keepdims else " (dropped)")


GRAPH_LAYER_TYPES = {cls.type: cls for cls in (Conv1d, Pad, Reshape, Slice, Concat, Elementwise, Reduce)}

__all__ = ["Concat", "Conv1d", "Elementwise", "GRAPH_LAYER_TYPES", "Pad", "Reduce", "Reshape", "Slice"]


# --- spectral magnitude ---------------------------------------------------------------------


class DftMagnitude(Layer):
    """``|STFT|``: magnitudes of the windowed DFT of frames of a signal.

    Input features ``(1, L)`` (one channel); output ``(bins, frames)`` with
    ``frames = (L - n_fft) // hop + 1`` and, for bin ``k`` of frame ``f``::

        y[k, f] = | sum_n window[n] * x[f * hop + n] * exp(-2 pi i k n / n_fft) |

    This is what a Conv with a windowed cos/sin basis followed by ``sqrt(re^2 + im^2)``
    computes (Silero VAD's front end); the kernel uses a radix-2 FFT, so ``n_fft`` is a
    power of two. Tensor: ``window (n_fft,)`` float32.
    """

    type = "dft_magnitude"

    def __init__(self, name, inputs, params, n_fft: int, hop: int, bins: int):
        if n_fft < 2 or n_fft & (n_fft - 1):
            raise _fail(name, f"'n_fft' must be a power of two (>= 2), found {n_fft}")
        if not 1 <= bins <= n_fft // 2 + 1:
            raise _fail(name, f"'bins' must be in [1, {n_fft // 2 + 1}] for n_fft={n_fft}, found {bins}")
        self.n_fft, self.hop, self.bins = n_fft, hop, bins
        super().__init__(name, inputs, params)

    @classmethod
    def from_config(cls, name, inputs, cfg, params):
        return cls(name, inputs, params, _get_int(cfg, "n_fft", name, lo=2, hi=1 << 16),
                   _get_int(cfg, "hop", name, hi=1 << 16), _get_int(cfg, "bins", name, hi=1 << 15 + 1))

    def config(self):
        return {"n_fft": self.n_fft, "hop": self.hop, "bins": self.bins}

    def expected_tensors(self):
        return {"window": ((self.n_fft,), ("float32",))}

    def output_shape(self, in_shapes):
        s = in_shapes[0]
        if len(s) != 2 or s[0] != 1 or s[1] < self.n_fft:
            raise _fail(self.name, f"expects one channel of at least n_fft={self.n_fft} samples, (1, L), "
                                   f"found {s}")
        return (self.bins, (s[1] - self.n_fft) // self.hop + 1)

    def describe(self):
        return f"n_fft {self.n_fft}, hop {self.hop}, {self.bins} bins"


GRAPH_LAYER_TYPES[DftMagnitude.type] = DftMagnitude
__all__.append("DftMagnitude")
