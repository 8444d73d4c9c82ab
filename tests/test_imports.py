"""``import tinyrnn`` and running a saved model need numpy and numba only."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np

from oracle import rnn as rnn_oracle


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


def test_cached_kernels_load_without_numba_compiler_setup(tmp_path):
    """A cache hit skips numba's registry refresh; a later miss still compiles correctly.

    The first process fills an empty cache; the second loads from it (numba's array-math
    lowering, imported only by that refresh, stays unimported), then compiles a signature
    that is not cached (fp16 weights) and a user function that needs the refreshed
    registries, and both give the right answers (the fp16 run against the float64 oracle on
    the same half-precision weights, to 1e-5).
    """
    import json
    import os

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    common = f"""
        import json, sys
        import numpy as np
        import tinyrnn
        from tinyrnn import InputSpec, Model
        from tinyrnn.layers import Recurrent
        rng = np.random.default_rng(1)
        W, R, B = rng.normal(size=(1, 3, 2)), rng.normal(size=(1, 3, 3)), rng.normal(size=(1, 6))
        rnn = Recurrent.from_onnx("rnn", "r", W, R, B)
        m = Model([rnn], InputSpec.features(2))
        x = rng.normal(size=(4, 2)).astype(np.float32)
        out = {str(tmp_path / "out")!r}
    """
    fill = common + """
        json.dump({"float32": m.run(x).tolist(), "x": x.tolist(),
                   "W": W.tolist(), "R": R.tolist(), "B": B.tolist()}, open(out, "w"))
    """
    reuse = common + """
        y = m.run(x)
        from tinyrnn.backends import cpu_kernels
        hits = sum(cpu_kernels.rnn_sequence.stats.cache_hits.values())
        refreshed = "numba.np.arraymath" in sys.modules
        y16 = m.quantize("fp16").run(x)
        from numba import njit
        total = njit(lambda a: np.cumsum(a)[-1])(y16.ravel())
        json.dump({"float32": y.tolist(), "fp16": y16.tolist(), "hits": hits, "refreshed": refreshed,
                   "total": float(total)}, open(out, "w"))
    """
    def run(script):
        r = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                           env=env, timeout=900)
        assert r.returncode == 0, r.stderr
        return json.load(open(tmp_path / "out"))

    first, second = run(fill), run(reuse)
    assert second["hits"] >= 1, "the float32 kernel was not loaded from the cache"
    assert not second["refreshed"], "the cache hit went through numba's full compiler set-up"
    assert second["float32"] == first["float32"]
    # fp16 rounds the float32 matrices; the bias stays float32
    W, R = (np.array(first[k], np.float32).astype(np.float16) for k in ("W", "R"))
    half = [W, R, np.array(first["B"], np.float32)]
    x = np.array(first["x"], np.float64)[:, None, :]  # (T, batch 1, I), the oracle's layout
    want = rnn_oracle(x, *half)[0][:, 0, 0, :]
    np.testing.assert_allclose(second["fp16"], want, rtol=0, atol=1e-5)
    assert abs(second["total"] - float(np.sum(np.array(second["fp16"], np.float32)))) < 1e-5


def test_runtime_initialised_only_for_code_that_names_it():
    """The light cache load skips numba's runtime set-up only when the machine code cannot need it."""
    from tinyrnn._cache import _calls_runtime

    assert _calls_runtime([("lib", "object", (b"\x7fELF...NRT_decref...", b""))])
    assert _calls_runtime([("lib", "object", (b"\x7fELF...nrt_atomic_add...", b""))])
    assert not _calls_runtime([("lib", "object", (b"\x7fELF...numba_gil_ensure...", b""))])
    assert _calls_runtime([("lib", "bitcode", b"BC...")])  # not object code: assume it does
    assert _calls_runtime(None) and _calls_runtime([()])
