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

It also makes loading those kernels cheap (``_install_light_load``): numba prepares its whole
compiler before every cache lookup, which a hit does not need. Same fallback: a numba whose
cache class looks different keeps its own path.
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


def _install_light_load() -> bool:
    """Load tinyrnn's cached kernels without numba's compiler set-up.

    Before every cache lookup numba calls ``target_context.refresh()``, which imports and
    registers every typing and lowering module numba has (numpy, random, typed containers,
    jitclass, ...): 0.3-0.4 s of a 1.2 s warm start, spent on the compiler, not on loading
    machine code. A cache hit needs only the object code (and numba's runtime, if that code
    calls it: ``_calls_runtime``), so for tinyrnn's own functions on the CPU target that is
    all this does. A miss returns None and the dispatcher compiles, and numba's compiler
    refreshes the context itself before it types anything, so nothing is skipped that a
    compile needs. Functions that are not ours keep numba's own path.
    """
    try:
        from numba.core import caching
        from numba.core.cpu import CPUContext
        from numba.core.runtime.nrt import rtsys
    except ImportError:  # pragma: no cover
        return False
    cache = getattr(caching, "Cache", None)
    needed = ("load_overload", "_load_overload", "_guard_against_spurious_io_errors")
    if cache is None or not all(hasattr(cache, n) for n in needed):
        return False  # pragma: no cover - a numba that reorganised its cache
    if getattr(cache.load_overload, "_tinyrnn", False):
        return True
    numba_load = cache.load_overload

    def load_overload(self, sig, target_context):
        locator = getattr(getattr(self, "_impl", None), "locator", None)
        if not (getattr(locator, "_tinyrnn", False) and isinstance(target_context, CPUContext)):
            return numba_load(self, sig, target_context)
        with self._guard_against_spurious_io_errors():
            try:
                if not self._enabled:
                    return None
                data = self._cache_file.load(self._index_key(sig, target_context.codegen()))
            except AttributeError:  # pragma: no cover - a numba with other internals
                rtsys.initialize(target_context)
                return self._load_overload(sig, target_context)
            if data is None:
                return None
            if _calls_runtime(data):
                rtsys.initialize(target_context)  # 40 ms: it compiles the runtime's atomics
            return self._impl.rebuild(target_context, data)

    load_overload._tinyrnn = True
    load_overload.__doc__ = numba_load.__doc__
    cache.load_overload = load_overload
    return True


def _calls_runtime(payload) -> bool:
    """Whether a cached compile result's machine code names a numba runtime symbol.

    Our kernels compile with ``_nrt=False`` and name none; the symbol table of an object
    file holds every name it links against as plain bytes. Anything unexpected: True.
    """
    try:
        _, kind, data = payload[0]
        if kind == "object" and isinstance(data[0], bytes):
            return b"NRT" in data[0] or b"nrt" in data[0]
    except (TypeError, ValueError, IndexError):
        pass
    return True


LIGHT_LOAD = INSTALLED and _install_light_load()
