"""Quantized weight storage (int8 with per-output-column scales, float16) and the report
that says what quantizing cost.

``Model.quantize(scheme)`` stores every weight matrix (the input and recurrent matrices of
every gate, LSTM projections, Dense weights, Embedding tables) in fewer bytes; biases,
peepholes and the recurrent state stay float32. The kernels read the stored weights
directly and dequantize inside their inner loops (``tinyrnn.backends.weights``), so nothing
is expanded back to float32 in memory.

int8: symmetric, one float32 scale per output column
-----------------------------------------------------
Every matrix a kernel multiplies is stored transposed (``x @ M``), so a dot product runs
down one axis of ``M`` and each output unit is one *column*: ONNX's per-output-row scale is
a per-column scale here. For a column ``j``::

    s_j = max_i |M[i, j]| / 127
    q[i, j] = round(M[i, j] / s_j)                  in [-127, 127] (-128 is never used)
    y_j = (sum_i x_i * q[i, j]) * s_j               what the kernel computes

Rounding to nearest moves every weight by at most ``s_j / 2``, so an output moves by at
most ``s_j / 2 * sum_i |x_i|``: the bound the tests assert, and the reason the scale is per
column (one large weight only coarsens its own column). Which axis is reduced, per tensor:

    layer      tensor  stored shape    reduced axis  scale
    recurrent  W       (D, I, G*H)     1 (I)         W_scale    (D, G*H)
    recurrent  R       (D, Hr, G*H)    1 (Hr)        R_scale    (D, G*H)
    recurrent  proj    (D, H, Hr)      1 (H)         proj_scale (D, Hr)
    dense      W       (in, out)       0 (in)        W_scale    (out,)
    embedding  table   (V, dim)        1 (dim)       table_scale (V,)    one per row (token)

A column whose largest weight is 0 gets scale 1 (its weights are all 0 and stay 0).

fp16: every weight rounded to the nearest IEEE half precision number; relative error at
most 2**-11 in the normal range, absolute at most 2**-25 below it. No scales. A weight
beyond float16's range (|w| > 65504) is refused rather than stored as infinity.

Quantizing a model that is already quantized starts from the weights it stores
(dequantized), and the new model's metadata says so (``source_dtype``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from . import spec
from .errors import TinyRNNError
from .layers import Dense, Embedding, Layer, Recurrent, Softmax, layer_from_config

INT8_LEVELS = 127  # symmetric range [-127, 127]
FP16_MAX = float(np.finfo(np.float16).max)  # 65504
FP16_UNIT = 2.0 ** -11  # relative rounding error of float16 in its normal range


class QuantizationError(TinyRNNError, ValueError):
    """A quantization scheme that does not exist, weights it cannot store, or a sample the
    accuracy report cannot use."""


# --- one matrix ---------------------------------------------------------------------------


def scale_axis(layer: Layer, name: str) -> int:
    """The axis of stored matrix ``name`` of ``layer`` that one int8 scale spans.

    That is the kernel's dot-product axis (see the module docstring's table). Raises
    ``QuantizationError`` for a tensor that is not a weight matrix of the layer.
    """
    if isinstance(layer, Recurrent) and name in ("W", "R", "proj"):
        return 1
    if isinstance(layer, Dense) and name == "W":
        return 0
    if isinstance(layer, Embedding) and name == "table":
        return 1
    raise QuantizationError(f"layer {layer.name!r} ({layer.type}) has no weight matrix named {name!r}")


def quantize_int8(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization of ``w`` with one scale per slice along ``axis``.

    Returns ``(q, scale)``: ``q`` int8 of ``w``'s shape with values in [-127, 127], and
    ``scale`` float32 of ``w``'s shape without ``axis``, such that ``q * scale`` (scale
    broadcast back along ``axis``) is within ``scale / 2`` of ``w`` everywhere.
    """
    w64 = np.asarray(w, np.float64)
    amax = np.abs(w64).max(axis=axis)
    scale = (amax / INT8_LEVELS).astype(np.float32)
    # an all-zero column (or one whose scale underflows float32) would divide by zero
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    # divide by the float32 scale actually stored, so q is the best choice for it
    q = np.rint(w64 / np.expand_dims(scale.astype(np.float64), axis))
    return np.clip(q, -INT8_LEVELS, INT8_LEVELS).astype(np.int8), scale


def quantize_fp16(w: np.ndarray, what: str = "weights") -> np.ndarray:
    """``w`` rounded to float16. Raises ``QuantizationError`` if a value exceeds float16's
    range (``what`` names the tensor in the message)."""
    w = np.asarray(w)
    big = float(np.abs(w).max()) if w.size else 0.0
    with np.errstate(over="ignore"):  # an overflow is reported below, with the tensor's name
        out = w.astype(np.float16)
    if not np.isfinite(out).all():
        raise QuantizationError(f"{what} holds values up to {big:.6g} in magnitude; float16 stores at most "
                                f"{FP16_MAX:g}. Use scheme 'int8', or keep this model float32")
    return out


def stored_matrix(layer: Layer, name: str) -> np.ndarray:
    """The float32 matrix that ``layer``'s stored tensor ``name`` stands for.

    float32 is returned as is, float16 widened exactly, int8 as ``q * scale``: the weights
    the kernels effectively multiply by (up to float32 rounding of the product).
    """
    w = layer.params[name]
    if w.dtype == np.int8:
        scale = np.expand_dims(layer.params[name + "_scale"], scale_axis(layer, name))
        return (w.astype(np.float32) * scale).astype(np.float32)
    return w.astype(np.float32)


# --- whole models ---------------------------------------------------------------------------


def _rebuild(layer: Layer, weights: str | None, params: dict[str, np.ndarray]) -> Layer:
    """A new, validated layer like ``layer`` with other tensors (and weight dtype)."""
    entry = {"name": layer.name, "type": layer.type, "inputs": list(layer.inputs), **layer.config()}
    if weights is not None:
        entry["weights"] = weights
    return layer_from_config(entry, params)


def _matrix_names(layer: Layer) -> list[str]:
    return [name for name in layer.matrices if name in layer.params]


def _convert(model, weights: str, metadata: dict):
    """``model`` with every weight matrix stored as ``weights`` ('float32', 'float16', 'int8')."""
    from .model import Model

    layers = []
    for layer in model.layers:
        names = _matrix_names(layer)
        if not names:
            layers.append(_rebuild(layer, None, dict(layer.params)))
            continue
        params = {k: v for k, v in layer.params.items() if k not in names and not k.endswith("_scale")}
        for name in names:
            w = stored_matrix(layer, name)
            if weights == "int8":
                params[name], params[name + "_scale"] = quantize_int8(w, scale_axis(layer, name))
            elif weights == "float16":
                params[name] = quantize_fp16(w, f"tensor {layer.name}.{name}")
            else:
                params[name] = w
        layers.append(_rebuild(layer, weights, params))
    return Model(layers, model.input, model.output, model.vocab, metadata)


def quantize_model(model, scheme: str):
    """A new ``Model`` whose weight matrices are stored as ``scheme`` ('int8' or 'fp16').

    The model is not changed. The new model's metadata gains ``"quantization":
    {"scheme": ..., "source_dtype": ...}`` (``source_dtype`` is ``model.dtype``). Raises
    ``QuantizationError`` for an unknown scheme or (fp16) weights beyond float16's range.
    """
    if scheme not in spec.QUANT_SCHEMES:
        raise QuantizationError(f"quantization scheme must be one of {sorted(spec.QUANT_SCHEMES)}, "
                                f"found {scheme!r}")
    metadata = dict(model.metadata)
    metadata["quantization"] = {"scheme": scheme, "source_dtype": model.dtype}
    return _convert(model, spec.QUANT_SCHEMES[scheme], metadata)


def dequantize_model(model):
    """A float32 ``Model`` holding the weights ``model``'s stored ones stand for.

    Running it gives ``model``'s answers up to float32 rounding: a way to check the
    quantized kernels, or to continue from a quantized model in float32. Metadata is kept
    unchanged (including any ``"quantization"`` entry, which still describes the weights).
    """
    return _convert(model, "float32", dict(model.metadata))


def file_size(model) -> int:
    """Bytes of the ``.trnn`` file ``model.save`` writes (without writing it)."""
    from .format import _layout

    head, arrays = _layout(model)
    return len(head) + sum(a.nbytes for a in arrays)


# --- the accuracy report --------------------------------------------------------------------


@dataclass(frozen=True)
class AccuracyReport:
    """How far a quantized model's outputs are from its reference's over one sample.

    Errors are absolute differences of the models' outputs (whatever the output is:
    features, logits, probabilities). The next-token fields are set for a model that reads
    token ids and outputs a distribution (or logits) over them; they score the prediction
    of each sample token from the ones before it (the first token is not predicted).
    """

    reference_dtype: str
    quantized_dtype: str
    reference_bytes: int  # size of the .trnn file
    quantized_bytes: int
    sample: str  # what the sample was, in words
    outputs: int  # output values compared
    max_abs_error: float
    mean_abs_error: float
    output_max: float  # max |reference output|, the scale to read the errors against
    bits_reference: float | None = None  # bits per character (per token without vocabulary)
    bits_quantized: float | None = None
    bits_unit: str = "char"
    top1_agreement: float | None = None  # fraction of positions whose argmax agrees
    predictions: int = 0  # positions scored for bits and top-1

    @property
    def size_ratio(self) -> float:
        """Quantized file size over the reference's."""
        return self.quantized_bytes / self.reference_bytes

    @property
    def bits_change(self) -> float | None:
        """Relative change of bits per char/token (0.01 means 1% worse)."""
        if self.bits_reference is None or self.bits_quantized is None:
            return None
        if self.bits_reference == 0:  # a perfect reference: any loss is infinitely worse
            return 0.0 if self.bits_quantized == 0 else math.inf
        return (self.bits_quantized - self.bits_reference) / self.bits_reference

    def to_json(self) -> dict:
        """The report as a JSON-able dict (derived ratios included)."""
        return {**asdict(self), "size_ratio": self.size_ratio, "bits_change": self.bits_change}

    def format(self) -> str:
        """The report as a few lines of text (what ``tinyrnn quantize`` prints)."""
        ref, q = self.reference_dtype, self.quantized_dtype
        lines = [
            f"size        {ref} {self.reference_bytes:,} bytes -> {q} {self.quantized_bytes:,} bytes "
            f"({100 * self.size_ratio:.1f}%)",
            f"sample      {self.sample}",
            f"output err  max {self.max_abs_error:.3g}, mean {self.mean_abs_error:.3g} over "
            f"{self.outputs:,} values (reference outputs reach {self.output_max:.3g})",
        ]
        if self.bits_reference is not None:
            lines.append(f"{'bits/' + self.bits_unit:<12}{ref} {self.bits_reference:.4f}, {q} {self.bits_quantized:.4f} "
                         f"({100 * self.bits_change:+.2f}%) over {self.predictions:,} predictions")
            agree = round(self.top1_agreement * self.predictions)
            lines.append(f"top-1       {100 * self.top1_agreement:.2f}% of next-{self.bits_unit} predictions "
                         f"agree ({agree:,} of {self.predictions:,})")
        return "\n".join(lines)

    __str__ = format


def random_sample(model, steps: int = 1000, seed: int = 0) -> np.ndarray:
    """A seeded input for ``model``: ``steps`` uniform token ids, or ``(steps, *features)``
    standard-normal float32 features."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise QuantizationError(f"a random sample needs a positive number of steps, found {steps!r}")
    rng = np.random.default_rng(seed)
    if model.input.tokens:
        return rng.integers(0, model.input.vocab_size, steps, dtype=np.int64)
    return rng.standard_normal((steps, *model.input.shape)).astype(np.float32)


def accuracy_report(reference, quantized, sample=None, *, steps: int = 1000, seed: int = 0) -> AccuracyReport:
    """Compare ``quantized`` with ``reference`` (its float32 source) over one sample.

    ``sample``: text (``str``, encoded with the reference's vocabulary), an input array as
    ``Model.run`` takes it (``(T, *F)``/``(B, T, *F)`` features or ``(T,)``/``(B, T)`` ids),
    or None for ``random_sample(reference, steps, seed)``. Both models run the sample
    offline from zero state, in one piece: outputs of ``B * T * out`` float32 values (twice,
    and float64 log-probabilities for text models) must fit in memory. Raises ``QuantizationError`` if the two models do not read
    and write the same shapes, and the errors of ``Model.run``/``encode`` for a bad sample.
    """
    if (reference.input.to_json() != quantized.input.to_json()
            or reference.output_shape != quantized.output_shape):
        raise QuantizationError(f"the models must read and write the same shapes; found input "
                                f"{reference.input!r} -> {reference.output_shape} and "
                                f"{quantized.input!r} -> {quantized.output_shape}")
    if sample is None:
        x = random_sample(reference, steps, seed)
        what = (f"{steps:,} random token ids (seed {seed})" if reference.input.tokens
                else f"{steps:,} steps of random normal features (seed {seed})")
    elif isinstance(sample, str):
        x = reference.encode(sample)
        what = f"text, {len(sample):,} characters ({x.size:,} tokens)"
    else:
        x = np.asarray(sample)
        what = f"{x.dtype} array of shape {x.shape}"
    y_ref = reference.run(x)
    y_q = quantized.run(x)
    if not y_ref.size:
        raise QuantizationError(f"the sample gives no outputs to compare ({what}); give it at least one step")
    err = np.abs(y_q - y_ref)  # float32 is exact enough for a difference of nearby values
    report = AccuracyReport(
        reference_dtype=reference.dtype, quantized_dtype=quantized.dtype,
        reference_bytes=file_size(reference), quantized_bytes=file_size(quantized),
        sample=what, outputs=int(err.size), max_abs_error=float(err.max()),
        mean_abs_error=float(err.mean(dtype=np.float64)), output_max=float(np.abs(y_ref).max()),
    )
    lp_ref, lp_q = _log_probs(reference, y_ref), _log_probs(quantized, y_q)
    if lp_ref is None or lp_q is None:
        return report
    ids = np.asarray(x)
    if ids.ndim == 1:  # unbatched: make every array (B, T, ...)
        ids, lp_ref, lp_q = ids[None], lp_ref[None], lp_q[None]
    if ids.shape[1] < 2:
        return report  # nothing to predict
    unit = "char" if reference.vocab is not None else "token"
    bits_ref = _bits(lp_ref, ids, reference.vocab)
    bits_q = _bits(lp_q, ids, reference.vocab)
    agree = lp_ref[:, :-1].argmax(-1) == lp_q[:, :-1].argmax(-1)  # (B, T-1)
    return replace(report, bits_reference=bits_ref, bits_quantized=bits_q, bits_unit=unit,
                   top1_agreement=float(agree.mean()), predictions=int(agree.size))


def _log_probs(model, y: np.ndarray) -> np.ndarray | None:
    """Natural-log probabilities (float64) over the vocabulary from outputs ``y (..., V)``,
    or None when the model's output is not a distribution (or logits) over its input ids."""
    if not model.input.tokens or model.output_shape != (model.input.vocab_size,):
        return None
    layer = next(l for l in model.layers if l.name == model.output)
    y = y.astype(np.float64)
    if isinstance(layer, Softmax):
        if layer.log:
            return y
        # a probability that underflowed float32 scores as float32's smallest, not -inf
        return np.log(np.maximum(y, np.finfo(np.float32).smallest_subnormal))
    if isinstance(layer, Dense):  # logits
        z = y - y.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))
    return None


def _bits(log_probs: np.ndarray, ids: np.ndarray, vocab) -> float:
    """Bits per character of predicting ``ids[:, 1:]`` from ``log_probs[:, :-1]``.

    With a vocabulary, characters are the predicted tokens' spelled lengths; without one
    every token counts as one character.
    """
    target = ids[:, 1:]  # (B, T-1)
    lp = np.take_along_axis(log_probs[:, :-1], target[..., None], axis=-1)[..., 0]
    units = target.size if vocab is None else int(np.array([len(t) for t in vocab])[target].sum())
    return float(-lp.sum() / math.log(2) / max(units, 1))
