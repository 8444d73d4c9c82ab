"""Every error tinyrnn raises on purpose.

All of them derive from :class:`TinyRNNError`, so ``except tinyrnn.TinyRNNError`` catches
anything a user can cause. Each also derives from the builtin a Python programmer would
expect (``ValueError`` for bad values, ``FileNotFoundError`` for a missing file), so generic
handlers keep working.
"""

from __future__ import annotations


class TinyRNNError(Exception):
    """Base class of every error tinyrnn raises on purpose."""


class ModelFormatError(TinyRNNError, ValueError):
    """A ``.trnn`` file (or model description) is damaged or is not a tinyrnn model."""


class UnsupportedModelError(TinyRNNError, ValueError):
    """A converter met an operator, attribute or structure tinyrnn cannot represent."""


class InputError(TinyRNNError, ValueError):
    """An input array has the wrong shape, dtype or values (e.g. token id out of range)."""


class ModelNotFoundError(TinyRNNError, FileNotFoundError):
    """A model file does not exist or cannot be opened."""


class DeviceError(TinyRNNError, RuntimeError):
    """A device was asked for that is not available (no GPU, numba-cuda missing)."""


class NonFiniteError(InputError):
    """A NaN or infinity reached a stream created with ``check_finite=True``."""


class MissingDependencyError(TinyRNNError, ImportError):
    """An optional package a feature needs is not installed (the message says which extra)."""


class ClusterError(TinyRNNError, ConnectionError):
    """A Dask cluster cannot be reached or started (the message names the address)."""
