"""Backends turn a model's layers into kernel calls: ``cpu`` (Numba) and ``cuda`` (numba.cuda).

Every backend module offers the same functions (``new_state``, ``build_plan``,
``run_plan``, ``run_plan_into``, ``to_host``, ``copy_in``, ``zero``), so ``Model`` and
``Stream`` never look inside one. The CUDA backend is imported only when asked for: the
CPU path never imports numba.cuda.
"""

from __future__ import annotations

from ..errors import DeviceError


def load_cuda():
    """The CUDA backend module, or ``DeviceError`` saying why it cannot be used."""
    try:
        from . import cuda
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise DeviceError(f"device='cuda' needs numba-cuda (pip install 'tinyrnn[cuda]'), which could not be "
                          f"imported: {e}") from None
    cuda.check_available()
    return cuda
