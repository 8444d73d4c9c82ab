"""What tinyrnn knows about cells, activations and weight storage: data, not code.

Everything here is plain Python so that the format reader, the converters and the kernels
agree on one table. Conventions (ONNX's, everywhere inside the runtime):

* gate order: LSTM ``i, o, f, c``; GRU ``z, r, h``; RNN one gate.
* a recurrent layer with ``D`` directions, input size ``I``, hidden size ``H``, gate count
  ``G`` and recurrent width ``Hr`` (``proj_size`` if the LSTM has a projection, else ``H``)
  stores ONNX's ``W (D, G*H, I)`` and ``R (D, G*H, Hr)`` **transposed** per direction, as
  ``W (D, I, G*H)`` and ``R (D, Hr, G*H)``: the kernels then read one row per input element,
  contiguous across all gates. Biases stay ``B (D, 2*G*H)`` = ``[Wb, Rb]``, peepholes
  ``P (D, 3*H)`` = ``[Pi, Po, Pf]``, the projection ``proj (D, H, Hr)``.
"""

from __future__ import annotations

# --- cells -----------------------------------------------------------------------------

CELL_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
CELL_ACTIVATION_COUNT = {"rnn": 1, "lstm": 3, "gru": 2}
CELL_DEFAULT_ACTIVATIONS = {
    "rnn": ("tanh",),
    "lstm": ("sigmoid", "tanh", "tanh"),
    "gru": ("sigmoid", "tanh"),
}
GATE_NAMES = {"rnn": ("h",), "lstm": ("i", "o", "f", "c"), "gru": ("z", "r", "h")}

# --- activations ------------------------------------------------------------------------
# code used inside the kernels, and ONNX's default (alpha, beta) for the parameterised ones.
# Codes are part of no file: the file stores names, the kernels get codes.

ACTIVATIONS = {
    "relu": 0,
    "tanh": 1,
    "sigmoid": 2,
    "affine": 3,
    "leakyrelu": 4,
    "thresholdedrelu": 5,
    "scaledtanh": 6,
    "hardsigmoid": 7,
    "elu": 8,
    "softsign": 9,
    "softplus": 10,
    "identity": 11,
    "gelu": 12,
    "silu": 13,
    "exp": 14,
    "abs": 15,
    "sqrt": 16,
    "neg": 17,
    "log": 18,
    "square": 19,
    "reciprocal": 20,
}

ACTIVATION_DEFAULTS = {
    "affine": (1.0, 0.0),
    "leakyrelu": (0.01, 0.0),
    "thresholdedrelu": (1.0, 0.0),
    "scaledtanh": (1.0, 1.0),
    "hardsigmoid": (0.2, 0.5),
    "elu": (1.0, 0.0),
}

# Activations a recurrent cell may use (ONNX's list for RNN/LSTM/GRU).
CELL_ACTIVATIONS = (
    "relu", "tanh", "sigmoid", "affine", "leakyrelu", "thresholdedrelu", "scaledtanh",
    "hardsigmoid", "elu", "softsign", "softplus",
)


def activation_params(name: str, alpha=None, beta=None) -> tuple[float, float]:
    """ONNX defaults filled in for ``alpha``/``beta`` left as ``None``."""
    da, db = ACTIVATION_DEFAULTS.get(name, (0.0, 0.0))
    return (float(da if alpha is None else alpha), float(db if beta is None else beta))


# --- weight storage ---------------------------------------------------------------------
# Weight matrices may be stored as float32, float16 or int8 (symmetric, one float32 scale
# per output column, in a tensor named "<name>_scale"). Vectors (biases, peepholes, scales)
# are always float32.

WEIGHT_DTYPES = ("float32", "float16", "int8")

# Quantization schemes ``Model.quantize`` knows -> the weight dtype each one stores.
QUANT_SCHEMES = {"int8": "int8", "fp16": "float16"}

# safetensors dtype names <-> numpy dtype strings, for every dtype a .trnn file may hold.
SAFETENSORS_DTYPES = {
    "F32": "<f4",
    "F16": "<f2",
    "I8": "|i1",
    "I64": "<i8",
    "I32": "<i4",
    "U8": "|u1",
}

FORMAT_VERSION = 1
METADATA_KEY = "tinyrnn"
