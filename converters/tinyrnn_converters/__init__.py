"""Converters into tinyrnn models: ``from_torch`` and ``from_onnx``.

They import torch and onnx lazily, so ``import tinyrnn_converters`` costs nothing until a
converter is called::

    from tinyrnn_converters import from_torch, from_onnx
    m = from_torch(module, example_input=None)   # nn.RNN/LSTM/GRU, or a model around them
    m = from_onnx("model.onnx")                  # path or onnx.ModelProto
    m = from_onnx("vad.onnx", constants={"sr": 16000})
"""

from __future__ import annotations

from tinyrnn import __version__

__all__ = ["__version__", "from_onnx", "from_torch", "load_checkpoint"]


def from_onnx(source, constants=None):
    """Convert an ONNX model; see ``tinyrnn_converters.onnx.from_onnx``."""
    from .onnx import from_onnx as _from_onnx

    return _from_onnx(source, constants=constants)


def from_torch(module, example_input=None):
    """Convert a PyTorch module; see ``tinyrnn_converters.torch.from_torch``."""
    from .torch import from_torch as _from_torch

    return _from_torch(module, example_input=example_input)


def load_checkpoint(path, **flags):
    """Convert a saved ``state_dict``; see ``tinyrnn_converters.torch.load_checkpoint``."""
    from .torch import load_checkpoint as _load

    return _load(path, **flags)
