"""The CUDA backend against the numpy oracle and the CPU backend, under numba's CUDA simulator.

numba-cuda picks the simulator or the real driver once, when ``numba.cuda`` is first
imported, from ``NUMBA_ENABLE_CUDASIM``. The runtime never imports ``numba.cuda`` on the CPU
path (a test below proves it), so when pytest imports this module the choice is still open
and we set the variable here, for the whole process, and make numba re-read its environment
(numba-cuda shares numba's config, which numba's compiler re-reads from the environment on
every compilation, so the variable stays set). It only matters to code that imports
``numba.cuda``, which is the CUDA backend alone. Set ``TINYRNN_CUDA_HARDWARE=1`` to run the
same tests on a real GPU instead. Checks that need the real driver path (no GPU, no
numba-cuda, PTX compilation) run in subprocesses with the variable removed.

Tolerances: against the float64 oracle ``atol=2e-5, rtol=1e-4`` (as tests/test_cells.py);
against the CPU backend ``atol=1e-5, rtol=1e-5`` (same math, only the summation order
differs); quantized models against the CPU backend running float32 copies of their stored
weights, with the same tolerance.
Shapes are tiny: the simulator runs every GPU thread as a Python thread.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

HARDWARE = os.environ.get("TINYRNN_CUDA_HARDWARE") == "1"
if not HARDWARE and "numba.cuda" not in sys.modules:
    import numba.core.config

    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    numba.core.config.reload_config()  # numba-cuda reads numba's config, read when numba was imported

cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")

from builders import (  # noqa: E402
    oracle_recurrent, random_recurrent, random_state, saturating_recurrent, single_layer_model)
from tinyrnn import InputSpec, Model  # noqa: E402
from tinyrnn.errors import DeviceError, InputError  # noqa: E402
from tinyrnn.layers import Activation, Dense, Embedding, Softmax  # noqa: E402
from tinyrnn.quantize import dequantize_model  # noqa: E402

if not HARDWARE and not cuda.is_available():  # numba.cuda was imported before us, without the simulator
    pytest.skip("numba.cuda was imported without the simulator and there is no GPU", allow_module_level=True)

TOL = dict(atol=2e-5, rtol=1e-4)
CPU_TOL = dict(atol=1e-5, rtol=1e-5)
ROOT = Path(__file__).resolve().parents[1]
I, H, B, T = 3, 4, 3, 4

ONNX_ACTIVATIONS = [
    ["relu", None, None], ["sigmoid", None, None], ["affine", 0.7, -0.2],
    ["leakyrelu", 0.1, None], ["thresholdedrelu", 0.3, None], ["scaledtanh", 1.3, 0.8],
    ["hardsigmoid", 0.3, 0.4], ["elu", 0.9, None], ["softsign", None, None], ["softplus", None, None],
]

VARIANTS = {
    "rnn-tanh": ("rnn", {}),
    "rnn-clip": ("rnn", {"clip": 0.7}),
    "rnn-activations": ("rnn", {}),  # every ONNX activation, see test_rnn_activations
    "lstm": ("lstm", {}),
    "lstm-peepholes": ("lstm", {"peepholes": True}),
    "lstm-coupled-peepholes": ("lstm", {"input_forget": True, "peepholes": True}),
    "lstm-clip": ("lstm", {"clip": 0.5, "peepholes": True}),
    "lstm-proj": ("lstm", {"proj": 2}),
    "lstm-activations": ("lstm", {"activations": [["hardsigmoid", 0.3, 0.45], ["softsign"], ["scaledtanh", 1.1, 0.9]]}),
    "gru": ("gru", {}),
    "gru-lbr": ("gru", {"linear_before_reset": True}),
    "gru-clip": ("gru", {"clip": 0.6}),
    "gru-lbr-activations": ("gru", {"linear_before_reset": True, "clip": 0.6,
                                    "activations": [["hardsigmoid", 0.25, 0.5], ["softsign"]]}),
}


def _check_run(rng, layer, w, B=B, T=T):
    """Bidirectional/forward run with ragged lengths and a random initial state, on the GPU,
    against the oracle and the CPU backend."""
    model = single_layer_model(layer)
    x = rng.normal(0, 1, (B, T, layer.input_size)).astype(np.float32)
    lengths = np.array([T, 2, 1, T, 3, 0, 1, 2, T, 1][:B])
    state = random_state(rng, layer, B)
    y, st = model.run(x, lengths=lengths, state=state, return_state=True, device="cuda")
    y_ref, st_ref = oracle_recurrent(layer, w, x, lengths, state)
    np.testing.assert_allclose(y, y_ref, **TOL)
    for k in st_ref:
        np.testing.assert_allclose(st[k], st_ref[k], **TOL, err_msg=k)
    y_cpu = model.run(x, lengths=lengths, state=state)
    np.testing.assert_allclose(y, y_cpu, **CPU_TOL)


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "rnn-activations"])
def test_run_matches_oracle(rng, variant):
    cell, opts = VARIANTS[variant]
    layer, w = random_recurrent(rng, cell, I, H, direction="bidirectional", **opts)
    _check_run(rng, layer, w)


def test_rnn_activations(rng):
    """Every ONNX activation of an RNN (forward direction: the loop is the same)."""
    for act in ONNX_ACTIVATIONS:
        layer, w = random_recurrent(rng, "rnn", I, H, activations=[act])
        _check_run(rng, layer, w, B=2, T=3)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_reverse_direction_and_many_blocks(rng, cell):
    """More streams than one block takes (blocks of 8), one direction reversed."""
    layer, w = random_recurrent(rng, cell, 2, 2, direction="reverse")
    _check_run(rng, layer, w, B=10, T=3)


@pytest.mark.parametrize("scheme", ["fp16", "int8"])
@pytest.mark.parametrize("variant", ["rnn-tanh", "lstm-proj", "gru", "gru-lbr"])
def test_quantized_weights_match_cpu(rng, variant, scheme):
    """fp16 (uint16 bits widened in the kernel) and int8 (per-column scales) weights give
    the answer of the same stored values widened to float32 by numpy."""
    cell, opts = VARIANTS[variant]
    layer, _ = random_recurrent(rng, cell, I, H, direction="bidirectional", **opts)
    q = single_layer_model(layer).quantize(scheme)
    assert q.dtype == ("float16" if scheme == "fp16" else "int8")
    x = rng.normal(0, 1, (B, T, I)).astype(np.float32)
    lengths = np.array([T, 2, 1])
    np.testing.assert_allclose(q.run(x, lengths=lengths, device="cuda"), _reference(q, x, lengths), **CPU_TOL)


def _reference(q, x, lengths=None):
    """The quantized model's answer from float32 copies of its stored weights, on the CPU.

    Independent of the kernels' dequantization (numpy widens the stored values and applies
    the scales), and it reuses the CPU's float32 kernels: compiling the CPU's int8 and fp16
    kernels would cost this file minutes under CI's two cores."""
    return dequantize_model(q).run(x, lengths=lengths)


def _text_model(rng):
    lstm, _ = random_recurrent(rng, "lstm", 3, 4, name="lstm")
    layers = [
        Embedding("emb", None, {"table": rng.normal(0, 1, (7, 3)).astype(np.float32)}, 7, 3),
        lstm,
        Dense("head", None, {"W": rng.normal(0, 0.5, (4, 5)).astype(np.float32),
                             "b": rng.normal(0, 0.5, 5).astype(np.float32)}, 4, 5),
        Activation("act", None, "softsign"),
        Softmax("sm", None, log=True),
    ]
    return Model(layers, InputSpec.token_ids(7))


@pytest.mark.parametrize("scheme", [None, "fp16", "int8"])
def test_feed_forward_layers_match_cpu(rng, scheme):
    """Embedding, Dense, Activation and (log-)Softmax kernels, float and quantized."""
    model = _text_model(rng)
    if scheme:
        model = model.quantize(scheme)
    ids = rng.integers(0, 7, (2, 3))
    np.testing.assert_allclose(model.run(ids, device="cuda"), _reference(model, ids), **CPU_TOL)


def test_softmax_and_activation_kernels_match_numpy(rng):
    model = Model([Activation("a", None, "elu", alpha=0.5), Softmax("s", None, log=False)],
                  InputSpec.features(5))
    x = rng.normal(0, 2, (2, 3, 5)).astype(np.float32)
    e = np.where(x >= 0, x, 0.5 * (np.exp(x) - 1))
    ref = np.exp(e - e.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(model.run(x, device="cuda"), ref, **TOL)


def test_stream_step_process_state_match_cpu(rng):
    """step (unbatched and batched), process, reset(i) and state round trips on the GPU
    give the CPU stream's answers; state stays on the device between calls."""
    layer, w = random_recurrent(rng, "lstm", I, H, peepholes=True)
    model = single_layer_model(layer)
    xs = rng.normal(0, 1, (2, 5, I)).astype(np.float32)
    g, c = model.stream(batch=2, device="cuda"), model.stream(batch=2)
    assert g.device == "cuda" and not isinstance(g._state[layer.name]["h"], np.ndarray)
    for t in range(2):
        np.testing.assert_allclose(g.step(xs[:, t]), c.step(xs[:, t]), **CPU_TOL)
    np.testing.assert_allclose(g.process(xs[:, 2:]), c.process(xs[:, 2:]), **CPU_TOL)
    snap = g.state
    np.testing.assert_allclose(snap[f"{layer.name}.c"], c.state[f"{layer.name}.c"], **CPU_TOL)
    g.reset(1)
    c.reset(1)
    np.testing.assert_allclose(g.step(xs[:, 0]), c.step(xs[:, 0]), **CPU_TOL)
    g.state = snap
    again = g.step(xs[:, 1])
    g.state = snap
    np.testing.assert_array_equal(g.step(xs[:, 1]), again)  # restoring state is exact
    # the whole run on the GPU equals the oracle, step by step in an unbatched stream
    u = model.stream(device="cuda")
    ys = np.stack([u.step(v) for v in xs[0, :3]])
    np.testing.assert_allclose(ys, oracle_recurrent(layer, w, xs[:1, :3])[0][0], **TOL)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_saturated_forget_gate_keeps_the_state_bit_for_bit(rng, cell):
    """As on the CPU (tests/test_cpu_kernels.py): gates past the activation's clamp are
    exactly 0 and 1 with the same cells.math code compiled for the GPU, so an open LSTM
    forget gate (input gate shut) or GRU update gate keeps the state exactly."""
    layer = saturating_recurrent(rng, cell, I, H)
    model = single_layer_model(layer)
    state = random_state(rng, layer, 2)
    g = model.stream(batch=2, device="cuda")
    g.state = state
    g.process(rng.uniform(-1, 1, (2, 4, I)).astype(np.float32))
    g.step(rng.uniform(-1, 1, (2, I)).astype(np.float32))
    kept = "rec.c" if cell == "lstm" else "rec.h"
    np.testing.assert_array_equal(g.state[kept], state[kept])


def test_process_is_one_launch_per_layer_direction(rng):
    """T steps run inside the kernel: a plan for 5 steps of a bidirectional LSTM and a
    Dense head launches three kernels, not 5 * 2 + 1."""
    from tinyrnn.backends import cuda as backend

    layer, _ = random_recurrent(rng, "lstm", I, H, direction="bidirectional")
    model = Model([layer, Dense("head", None, {"W": np.ones((2 * H, 2), np.float32), "b": np.zeros(2, np.float32)},
                                2 * H, 2)], InputSpec.features(I))
    plan = backend.build_plan(model, 2, 5, backend.new_state(model, 2))
    assert len(plan.calls) == 3


def test_step_with_device_arrays(rng):
    """A device input gives a device output (no host round trip); ``out`` may be a device
    array; a wrong device array is refused with InputError."""
    layer, _ = random_recurrent(rng, "gru", I, H)
    model = single_layer_model(layer)
    x = rng.normal(0, 1, (2, I)).astype(np.float32)
    g, c = model.stream(batch=2, device="cuda"), model.stream(batch=2)
    y_dev = g.step(cuda.to_device(x))
    assert not isinstance(y_dev, np.ndarray)
    np.testing.assert_allclose(y_dev.copy_to_host(), c.step(x), **CPU_TOL)
    out = cuda.device_array((2, H), np.float32)
    assert g.step(x, out=out) is out
    np.testing.assert_allclose(out.copy_to_host(), c.step(x), **CPU_TOL)
    with pytest.raises(InputError, match=r"shape \(2, 3\)"):
        g.step(cuda.to_device(np.zeros((3, I), np.float32)))
    with pytest.raises(InputError, match="float32"):
        g.step(cuda.to_device(np.zeros((2, I), np.float64)))


def test_device_token_ids_are_validated(rng):
    model = _text_model(rng)
    s = model.stream(batch=2, device="cuda")
    s.step(cuda.to_device(np.array([1, 6])))
    with pytest.raises(InputError, match=r"\[0, 7\)"):
        s.step(cuda.to_device(np.array([1, 7])))


def test_unknown_device_and_oversized_layer(rng):
    layer, _ = random_recurrent(rng, "rnn", I, H)
    with pytest.raises(DeviceError, match="'cpu' or 'cuda'"):
        single_layer_model(layer).run(np.zeros((1, I), np.float32), device="gpu")
    from tinyrnn.backends import cuda as backend

    big, _ = random_recurrent(rng, "gru", 1, 4, scale=0.1)
    big.hidden_size = 4000  # only the launch sizing looks at it
    with pytest.raises(DeviceError, match="shared memory"):
        backend.recurrent_launch(big, 1)


# --- checks in fresh processes (the real driver path) ------------------------------------


def _python(script: str, block_cuda: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    prelude = textwrap.dedent("""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "numba.cuda" or name.startswith(("numba.cuda.", "numba_cuda")):
                    raise ImportError(f"blocked: {name}")
        sys.meta_path.insert(0, Block())
    """) if block_cuda else ""
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=600, env=env)


MODEL_SCRIPT = """
    import sys
    import numpy as np
    from builders import random_recurrent, single_layer_model
    layer, _ = random_recurrent(np.random.default_rng(0), "lstm", 2, 3)
    m = single_layer_model(layer)
"""


def test_cpu_path_never_imports_numba_cuda():
    r = _python(MODEL_SCRIPT + """
    m.run(np.zeros((2, 4, 2), np.float32))
    s = m.stream(batch=2)
    s.step(np.zeros((2, 2), np.float32)); s.process(np.zeros((2, 3, 2), np.float32)); s.state
    print(sorted(n for n in sys.modules if n.startswith(("numba.cuda", "numba_cuda"))))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_without_numba_cuda_device_error_says_so():
    r = _python(MODEL_SCRIPT + """
    from tinyrnn.errors import DeviceError
    for call in (lambda: m.stream(device="cuda"), lambda: m.run(np.zeros((3, 2), np.float32), device="cuda")):
        try:
            call()
        except DeviceError as e:
            print(e)
    """, block_cuda=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and all("needs numba-cuda" in line for line in lines), r.stdout


def test_without_gpu_device_error_says_so():
    r = _python(MODEL_SCRIPT + """
    from numba import cuda
    from tinyrnn.errors import DeviceError
    if cuda.is_available():
        print("has a GPU")
    else:
        try:
            m.stream(batch=4, device="cuda")
        except DeviceError as e:
            print(e)
    """)
    assert r.returncode == 0, r.stderr
    if r.stdout.strip() == "has a GPU":
        pytest.skip("this machine has a GPU")
    assert "no CUDA GPU" in r.stdout and "numba-cuda is installed" in r.stdout, r.stdout


# numba-cuda's real compiler in a subprocess, with no GPU: what both PTX scripts start with
PTX_PRELUDE = """
    import sys
    from numba import cuda, types
    from numba.cuda import dispatcher
    from numba.cuda.cudadrv.error import CudaSupportError, NvvmSupportError

    class Device:  # compile_ptx needs no GPU, but device functions ask for one's capability
        compute_capability = (8, 0)

    dispatcher.get_current_device = lambda: Device()
"""

PTX_SCRIPT = PTX_PRELUDE + """
    from tinyrnn.backends import cuda as K

    f32, i64 = types.float32, types.int64
    A = lambda dt, nd: types.Array(dt, nd, "C")
    full = sys.argv[1] == "full"
    weights = {"float32": types.float32, "float16": types.uint16, "int8": types.int8}
    jobs = []
    for wname, wt in weights.items():
        rec = (A(f32, 3), A(i64, 1), A(wt, 3), A(wt, 3), A(f32, 2), A(f32, 2), i64, A(f32, 3), A(f32, 3), i64)
        jobs += [("dense_kernel", wname, (A(f32, 2), A(wt, 2), A(f32, 1), A(f32, 1), A(f32, 2))),
                 ("embedding_kernel", wname, (A(i64, 1), A(wt, 2), A(f32, 1), A(f32, 2)))]
        if full or wname == "float32":
            jobs.append(("rnn_kernel", wname, rec))
        if full:
            jobs += [("gru_kernel", wname, rec),
                     ("lstm_kernel", wname, rec[:4] + (A(wt, 3),) + rec[4:8] + (A(f32, 3),) + rec[8:])]
    jobs += [("activation_kernel", "-", (A(f32, 1), A(f32, 1), A(f32, 1))),
             ("softmax_kernel", "-", (A(f32, 2), types.boolean, A(f32, 2)))]
    try:
        for name, wname, sig in jobs:
            ptx, _ = cuda.compile_ptx(getattr(K, name).py_func, sig, cc=(8, 0))
            half = "cvt.f32.f16" in ptx
            assert ".entry" in ptx and half == (wname == "float16"), (name, wname)
            print(name, wname, "ok")
    except (NvvmSupportError, CudaSupportError, OSError) as e:
        print("NO-NVVM", e)
"""


CELL_MATH_PTX = PTX_PRELUDE + """
    import tinyrnn.backends.cuda  # noqa: F401  (registers the CUDA side of the cell math)
    from tinyrnn.cells.math import gru_unit, lstm_unit, rnn_unit

    def lstm(a, out):  # peepholes as floats, as lstm_kernel passes them
        h, c = lstm_unit(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8:11], a[11:14], a[14:17], a[17],
                         False, True)
        out[0] = h + c

    def gru(a, out):
        out[0] = gru_unit(a[0], a[1], a[2], a[3:6], a[6], True)

    def rnn(a, out):
        out[0] = rnn_unit(a[0], a[1:4], a[4], True)

    A = types.Array(types.float32, 1, "C")
    try:
        for fn in (lstm, gru, rnn):
            ptx, _ = cuda.compile_ptx(fn, (A, A), cc=(8, 0))
            assert ".entry" in ptx
            print(fn.__name__, "ok")
    except (NvvmSupportError, CudaSupportError, OSError) as e:
        print("NO-NVVM", e)
"""


def test_the_cell_math_compiles_for_a_real_gpu():
    """The cells' shared math, through numba-cuda's real compiler (the simulator runs its
    Python bodies instead): a second or two, where the kernels that use it take 15-30 s
    (``-m slow`` below). It caught ``peephole``'s CPU overload, inlined at numba-IR level,
    failing to lower on CUDA (see ``cells.math.peephole_for``)."""
    r = _python(CELL_MATH_PTX)
    assert r.returncode == 0, r.stderr[-3000:]
    if r.stdout.startswith("NO-NVVM"):
        pytest.skip(f"libNVVM is not installed: {r.stdout.strip()[:200]}")
    assert r.stdout.split() == ["lstm", "ok", "gru", "ok", "rnn", "ok"], r.stdout


@pytest.mark.parametrize("which", ["core", pytest.param("full", marks=pytest.mark.slow)])
def test_every_kernel_compiles_to_ptx(which):
    """numba-cuda compiles the kernels for a real GPU (sm_80) here, no GPU needed: libNVVM
    comes from the nvidia-nvvm wheel of the dev extra. ``core`` compiles every kernel but
    the LSTM and GRU ones (which take 15-30 s apiece here), the RNN one with float32
    weights and the weight-reading ones (Dense, Embedding) with float32, float16 and int8
    weights, checking that float16 weights become a half-to-float conversion. ``full``
    (``-m slow``) compiles every recurrent kernel for every weight type."""
    script = PTX_SCRIPT.replace("sys.argv[1]", repr(which))
    r = _python(script)
    assert r.returncode == 0, r.stderr[-3000:]
    if r.stdout.startswith("NO-NVVM"):
        pytest.skip(f"libNVVM is not installed: {r.stdout.strip()[:200]}")
    done = r.stdout.split("\n")
    assert sum(line.endswith(" ok") for line in done) == (17 if which == "full" else 9), r.stdout
