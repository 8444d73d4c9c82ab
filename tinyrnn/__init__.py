"""tinyrnn: run recurrent networks (RNN, LSTM, GRU) fast, with only numpy and numba.

    import tinyrnn
    m = tinyrnn.load("model.trnn")
    y = m.run(x)                 # offline, (B, T, F) -> (B, T, out)
    s = m.stream()               # stateful, step by step
    y_t = s.step(x_t)

See README.md for the tour and ARCHITECTURE.md for the design.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    ClusterError,
    DeviceError,
    InputError,
    MissingDependencyError,
    ModelFormatError,
    ModelNotFoundError,
    NonFiniteError,
    TinyRNNError,
    UnsupportedModelError,
)
from .format import load, loads  # noqa: E402
from .generate import default_model, generate  # noqa: E402  (the function shadows its module's name)
from .model import InputSpec, Model  # noqa: E402
from .quantize import QuantizationError  # noqa: E402
from .stream import ConcurrentUseError, Stream  # noqa: E402

__all__ = [
    "ClusterError",
    "ConcurrentUseError",
    "DeviceError",
    "InputError",
    "InputSpec",
    "MissingDependencyError",
    "Model",
    "ModelFormatError",
    "ModelNotFoundError",
    "NonFiniteError",
    "QuantizationError",
    "Stream",
    "TinyRNNError",
    "UnsupportedModelError",
    "default_model",
    "generate",
    "load",
    "loads",
]
