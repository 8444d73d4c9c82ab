"""``import tinyrnn`` and running a saved model need numpy and numba only."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_runtime_works_without_optional_packages(tmp_path):
    script = textwrap.dedent(f"""
        import sys, importlib.abc

        BLOCKED = ("torch", "onnx", "onnxruntime", "onnxscript", "numba_cuda", "numba.cuda",
                   "safetensors", "dask", "distributed", "scipy")

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ImportError(f"blocked: {{name}}")

        sys.meta_path.insert(0, Block())
        import numpy as np
        import tinyrnn
        from tinyrnn import InputSpec, Model
        from tinyrnn.layers import Recurrent, Dense
        rng = np.random.default_rng(0)
        lstm = Recurrent.from_onnx("lstm", "l", rng.normal(size=(1, 16, 2)), rng.normal(size=(1, 16, 4)))
        head = Dense("d", None, {{"W": rng.normal(size=(4, 1)).astype(np.float32), "b": np.zeros(1, np.float32)}}, 4, 1)
        m = Model([lstm, head], InputSpec.features(2))
        m.save({str(tmp_path / "m.trnn")!r})
        m2 = tinyrnn.load({str(tmp_path / "m.trnn")!r})
        x = rng.normal(size=(5, 2)).astype(np.float32)
        s = m2.stream()
        y = np.stack([s.step(v) for v in x])
        assert np.array_equal(y, m2.run(x)), "stream and run disagree"
        leaked = [n for n in sys.modules if n.split(".")[0] in ("torch", "onnx", "onnxruntime", "dask")
                  or n.startswith("numba.cuda") or n.startswith("numba_cuda")]
        assert not leaked, leaked
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_cache_locator_covers_kernels():
    """Kernels are stamped with every kernel source file, not just their own."""
    from tinyrnn import _cache
    from tinyrnn.backends import cpu_kernels
    from tinyrnn.cells import math

    assert _cache.INSTALLED
    for fn in (cpu_kernels.lstm_sequence, math.lstm_unit):
        locator = fn._cache._impl.locator
        assert getattr(locator, "_tinyrnn", False)
        assert locator.get_source_stamp() == _cache.kernel_stamp()
