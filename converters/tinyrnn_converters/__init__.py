"""Converters into tinyrnn models: ``from_torch`` and ``from_onnx``.

They import torch and onnx lazily, so ``import tinyrnn_converters`` costs nothing until a
converter is called.
"""
