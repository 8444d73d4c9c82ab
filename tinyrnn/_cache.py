"""Numba's on-disk cache, made aware that tinyrnn's kernels span several files.

Numba stamps a cached function with a hash of the one file that defines it. Our kernels
call the cell math in ``tinyrnn/cells/math.py`` and the weight loaders in
``tinyrnn/backends/weights.py``, so an edit there (or a tinyrnn upgrade that changes only
those files) would leave stale machine code in the cache: silently wrong answers. Here we
register cache locators, used for tinyrnn's own files only, whose stamp hashes every
source file under ``tinyrnn/cells`` and ``tinyrnn/backends``: any change to any of them
invalidates every tinyrnn kernel. Where the cache lives is unchanged (``__pycache__``
beside the sources, else ``NUMBA_CACHE_DIR`` or the user-wide cache).

This uses numba's cache-locator classes, which are not public API; if a future numba
renames them, the registration is skipped and a stale cache remains possible only across
edits to those two files (``tinyrnn cache clear`` or deleting ``__pycache__`` fixes it).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_KERNEL_DIRS = (_PACKAGE / "cells", _PACKAGE / "backends")
# Sources no cached CPU function is compiled from (numba.cuda kernels are not disk-cached
# here): editing them need not throw away every CPU kernel.
_NO_CPU_CODE = {"cuda.py"}


@functools.lru_cache(maxsize=None)
def kernel_stamp() -> bytes:
    """sha256 over every kernel source file (path and contents)."""
    h = hashlib.sha256()
    for folder in _KERNEL_DIRS:
        for path in sorted(folder.glob("*.py")):
            if path.name in _NO_CPU_CODE:
                continue
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.digest()


def _ours(py_file: str) -> bool:
    try:
        return Path(py_file).resolve().parent in _KERNEL_DIRS
    except OSError:
        return False


def _install() -> bool:
    try:
        from numba.core import caching
    except ImportError:  # pragma: no cover
        return False
    bases = [getattr(caching, n, None) for n in ("UserProvidedCacheLocator", "InTreeCacheLocator",
                                                 "UserWideCacheLocator")]
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    if impl is None or not all(bases) or not isinstance(getattr(impl, "_locator_classes", None), list):
        return False  # pragma: no cover - a numba that reorganised its cache
    if any(getattr(c, "_tinyrnn", False) for c in impl._locator_classes):
        return True

    def make(base):
        class Locator(base):
            _tinyrnn = True

            def get_source_stamp(self):
                return kernel_stamp()

            @classmethod
            def from_function(cls, py_func, py_file):
                if not _ours(py_file):
                    return None
                return super().from_function(py_func, py_file)

        Locator.__name__ = Locator.__qualname__ = "TinyRNN" + base.__name__
        return Locator

    impl._locator_classes[:0] = [make(b) for b in bases]
    return True


INSTALLED = _install()
