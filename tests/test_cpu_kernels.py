"""What the CPU kernels' compile options promise the machine code: no reference counting in
the loops, and (where numba has the flag) array arguments that LLVM may treat as disjoint.

These pin the two causes of a per-sample LSTM step costing ~1,900 instead of ~1,400
instructions (benchmarks/RESULTS.md, "Instructions per step"). Then the products of large
matrices (column panels, several rows at once) against the oracle and bit for bit against
one stream alone; small cells' values are checked in tests/test_layers.py and
tests/test_stream.py.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from builders import oracle_recurrent, random_recurrent, random_state, saturating_recurrent, single_layer_model
from numba import njit
from numba import types as nbtypes
from numba.core.compiler import Flags

from tinyrnn.backends import cpu_kernels as K
from tinyrnn.backends.packing import INPUT_PANELS_MIN, PANEL, pack_input_panels
from tinyrnn.backends.simd import SMALL
from tinyrnn.quantize import dequantize_model, quantize_model

UNCACHED = dict(K.KERNEL, cache=False)


@njit(**dict(K.HELPER, cache=False))
def _scale_row(src, i, dst, j, s):
    for k in range(src.shape[1]):
        dst[j, k] = src[i, k] * s


def _llvm(fn, *args) -> str:
    fn(*args)
    return fn.inspect_llvm(fn.signatures[0])


def test_arrays_passed_to_inlined_helpers_are_not_reference_counted():
    def body(src, dst):
        for t in range(src.shape[0]):
            row = dst[t]  # a view inside the loop: free without numba's runtime
            row[0] = 0.0
            _scale_row(src, t, dst, t, np.float32(2.0))

    src = np.arange(12, dtype=np.float32).reshape(3, 4)
    plain, counted = njit(**UNCACHED)(body), njit(**dict(UNCACHED, _nrt=True))(body)
    dst = np.zeros_like(src)
    ir = _llvm(plain, src, dst)
    np.testing.assert_array_equal(dst, 2 * src)
    assert "NRT_incref" not in ir and "NRT_decref" not in ir
    # the control: numba's default does count them, so the check above can fail
    assert "NRT_decref" in _llvm(counted, src, np.zeros_like(src))


def test_recurrent_kernels_mark_their_arrays_noalias():
    if not hasattr(Flags, "noalias"):  # pragma: no cover - a numba without the flag
        assert "noalias" not in K.RECURRENT
        return
    assert K.RECURRENT["noalias"] is True

    def body(a, b):
        for i in range(a.shape[0]):
            b[i] = a[i] + 1.0

    fn = njit(**dict(K.RECURRENT, cache=False))(body)
    a = np.arange(4, dtype=np.float32)
    b = np.empty_like(a)
    ir = _llvm(fn, a, b)
    np.testing.assert_array_equal(b, a + 1)
    define = next(line for line in ir.splitlines() if line.startswith("define") and "body" in line)
    # argument 4 of numba's array struct is its data pointer
    for name in ("a", "b"):
        assert re.search(rf"ptr noalias [^%]*%arg\.{name}\.4\b", define), define


# --- large matrices, many rows ------------------------------------------------------------
# W and R exceed simd.SMALL, so they get column panels (with columns past the last whole
# panel), a chunk's input product takes many rows at once, and so does a step of
# B >= BATCH_BLOCK_MIN streams. T spans two chunks.

I_BIG, H_BIG, B_BIG, T_BIG = 52, 112, 5, 2 * K.CHUNK + 7


def _big(cell, direction="forward", **kw):
    # one gate for an RNN: a wider layer for matrices of the same sizes
    I, H, scale = (4 * I_BIG, 4 * H_BIG, 0.05) if cell == "rnn" else (I_BIG, H_BIG, 0.15)
    layer, w = random_recurrent(np.random.default_rng(7), cell, I, H, direction=direction, scale=scale, **kw)
    G = w["W"].shape[1]
    assert I * G > SMALL and H * G > SMALL and B_BIG >= K.BATCH_BLOCK_MIN
    return layer, w


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_blocked_products_match_the_oracle(cell):
    layer, w = _big(cell, "bidirectional", **({"peepholes": True} if cell == "lstm" else {}))
    rng = np.random.default_rng(8)
    x = rng.standard_normal((B_BIG, T_BIG, I_BIG)).astype(np.float32)
    lengths = np.array([T_BIG, 3, T_BIG - 5, 1, K.CHUNK + 1])
    y = single_layer_model(layer).run(x, lengths=lengths)
    ref, _ = oracle_recurrent(layer, w, x, lengths=lengths)
    np.testing.assert_allclose(y, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("cell,I,H,T,scheme", [
    ("rnn", 9, 24, 2 * K.CHUNK + 5, None), ("lstm", 9, 24, 2 * K.CHUNK + 5, None),
    # W packed for its hoisted product though small enough for tiles (pack_input_panels),
    # with columns past its last panel: chunks of 32 rows through the panels, a last chunk
    # of 3 and every single step through the tiles; int8 too (scale and bias applied by
    # the panels' path in the one multiply-add the tiles use)
    ("rnn", 64, 38, 2 * K.CHUNK + 3, None), ("lstm", 24, 38, 2 * K.CHUNK + 3, None),
    ("gru", 24, 38, 2 * K.CHUNK + 3, None), ("lstm", 24, 38, 2 * K.CHUNK + 3, "int8"),
    ("gru", 24, 38, 2 * K.CHUNK + 3, "int8"),
])
def test_hoisted_and_step_by_step_input_products_give_the_same_bits(cell, I, H, T, scheme):
    """The hoisting and the step-by-step kernels (chosen by step count and input width) agree."""
    # small weights: a contracting cell, so the oracle check below holds over all T steps
    layer, w = random_recurrent(np.random.default_rng(11), cell, I, H, scale=0.2)
    if I > 9:
        assert INPUT_PANELS_MIN < w["W"].size <= SMALL and w["W"].shape[1] % PANEL
        assert pack_input_panels(w["W"].transpose(0, 2, 1)).shape[1] > 0
    model = single_layer_model(layer)
    if scheme:
        model = quantize_model(model, scheme)
        assert pack_input_panels(model.layers[0].params["W"].transpose(0, 2, 1)).shape[1] > 0
    x = np.random.default_rng(12).standard_normal((2, T, I)).astype(np.float32)
    assert K.hoisted(T, I) and not K.hoisted(K.HOIST_MIN_STEPS - 1, I) and not K.hoisted(T, K.FUSE_MAX_INPUT)
    whole = model.run(x)
    s = model.stream(batch=2)
    short = K.HOIST_MIN_STEPS - 1
    parts = np.concatenate([s.process(x[:, :short]), s.process(x[:, short:])], axis=1)
    s = model.stream(batch=2)
    stepped = np.stack([s.step(x[:, t]) for t in range(T)], axis=1)
    np.testing.assert_array_equal(parts, whole)
    np.testing.assert_array_equal(stepped, whole)
    # int8: against the float model holding its dequantized weights (itself checked against
    # the oracle), as tests/test_quantize.py does
    ref = dequantize_model(model).run(x) if scheme else oracle_recurrent(layer, w, x)[0]
    np.testing.assert_allclose(whole, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("cell,acts", [
    ("rnn", [["relu"]]), ("gru", [["hardsigmoid", 0.2, 0.5], ["softsign"]]),
    ("lstm", [["hardsigmoid", 0.2, 0.5], ["tanh"], ["softsign"]]),
])
def test_both_loop_orders_with_any_activations_match_the_oracle(cell, acts):
    """The any-activation kernels in every loop order, hoisting and not, against the oracle."""
    layer, w = _big(cell, activations=acts)
    model = single_layer_model(layer)
    T, short = K.HOIST_MIN_STEPS + 3, 5
    x = np.random.default_rng(10).standard_normal((B_BIG, T, w["W"].shape[2])).astype(np.float32)
    lengths = np.array([T, 2, T, short, 1])
    assert K.batched_order(B_BIG, np.zeros((1, 1, 1, 1))) and not K.batched_order(1, np.zeros((1, 1, 1, 1)))
    assert K.hoisted(T, x.shape[2]) and not K.hoisted(short, x.shape[2])
    ref, _ = oracle_recurrent(layer, w, x, lengths=lengths)
    mask = np.arange(T)[None, :, None] < lengths[:, None, None]
    # batched: hoisted over T steps, step by step over a short block
    np.testing.assert_allclose(model.run(x, lengths=lengths) * mask, ref * mask, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(model.run(x[:, :short]), oracle_recurrent(layer, w, x[:, :short])[0],
                               atol=2e-5, rtol=1e-4)
    for b in (0, 3):  # one stream, unbatched: T steps (hoisted) and a short one (step by step)
        alone = model.run(x[b:b + 1, :lengths[b]])
        np.testing.assert_allclose(alone[0], ref[b, :lengths[b]], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("cell,B,extra,scheme", [
    ("lstm", 1, {}, None), ("lstm", K.BATCH_BLOCK_MIN + 1, {}, None), ("gru", 1, {}, None),
    ("gru", K.BATCH_BLOCK_MIN + 1, {"linear_before_reset": 1}, None),
    ("lstm", 1, {"peepholes": True}, None), ("lstm", 1, {"input_forget": 1}, None),
    ("lstm", 1, {"proj": 8}, None), ("lstm", 1, {}, "int8"), ("gru", 1, {}, "fp16"),
])
def test_a_saturated_forget_gate_keeps_the_state_bit_for_bit(cell, B, extra, scheme):
    """An LSTM forget gate (input gate shut) or a GRU update gate driven far past the
    activation's clamp is exactly 1, so the cell (hidden) state is kept exactly, step by
    step and hoisted, for as long as the stream runs. The unit loops have no select for
    it (cells/math.py): this checks the compiled kernels of each variant, whose flags let
    LLVM reorder the arithmetic."""
    _check_saturated(cell, B, extra, scheme, 3, 20)  # two vector blocks of units and a remainder


@pytest.mark.parametrize("cell,extra", [("lstm", {}), ("lstm", {"peepholes": True}), ("gru", {})])
def test_a_saturated_gate_keeps_the_state_in_the_sized_kernels(cell, extra):
    """The same in the kernels sized for a small layer (``cpu_kernels.UNITS``)."""
    _check_saturated(cell, 1, extra, None, 1, 16)
    assert K._SIZED[cell, 16, 1].signatures


def _check_saturated(cell, B, extra, scheme, I, H):
    rng = np.random.default_rng(12)
    layer = saturating_recurrent(rng, cell, I, H, **extra)
    model = single_layer_model(layer)
    if scheme:
        model = quantize_model(model, scheme)
    state = random_state(rng, layer, B)
    x = rng.uniform(-1, 1, (B, K.HOIST_MIN_STEPS + 40, I)).astype(np.float32)
    kept = "rec.c" if cell == "lstm" else "rec.h"
    for path in ("process", "step"):
        s = model.stream(batch=B)
        s.state = state
        if path == "process":
            s.process(x)
        else:
            for t in range(x.shape[1]):
                s.step(x[:, t])
        np.testing.assert_array_equal(s.state[kept], state[kept])


@pytest.mark.parametrize("cell,scheme,config", [
    ("lstm", None, {}), ("lstm", "int8", {}), ("lstm", "fp16", {}), ("rnn", None, {}),
    ("gru", None, {"linear_before_reset": 0}), ("gru", "int8", {"linear_before_reset": 1}),
])
def test_streams_stepping_together_get_the_bits_of_one_stream_alone(cell, scheme, config):
    layer, w = _big(cell, **config)
    model = single_layer_model(layer)
    if scheme:
        model = quantize_model(model, scheme)
    # enough steps that a lone stream's process() hoists its input product (together: step by step)
    x = np.random.default_rng(9).standard_normal((B_BIG, K.HOIST_MIN_STEPS + 3, w["W"].shape[2])).astype(np.float32)
    together = model.stream(batch=B_BIG)
    stepped = np.stack([together.step(x[:, t]) for t in range(x.shape[1])], axis=1)
    for b in range(B_BIG):
        alone = model.stream(batch=1)
        np.testing.assert_array_equal(alone.process(x[b:b + 1])[0], stepped[b])


@pytest.mark.parametrize("cell,I,H,scheme", [
    ("lstm", 3, 80, None), ("lstm", 32, 128, None), ("gru", 32, 128, "int8"), ("rnn", 16, 256, "fp16"),
    ("lstm", 1, 100, "int8"), ("rnn", 2, 160, "int8"),  # inputs narrow enough for a fused step
])
def test_stepping_together_keeps_the_bits_when_only_R_has_panels(cell, I, H, scheme):
    # W small enough for register tiles, R not: a lone stream's input product goes through
    # the tiles, B >= BATCH_BLOCK_MIN streams' through W's panels where it has input panels
    # (float W of more than INPUT_PANELS_MIN weights), else the row-wise loop of _panel_acc
    layer, w = random_recurrent(np.random.default_rng(3), cell, I, H, scale=0.2)
    G = w["W"].shape[1]
    assert I * G <= SMALL < H * G
    model = single_layer_model(layer)
    if scheme:
        model = quantize_model(model, scheme)
    x = np.random.default_rng(4).standard_normal((K.BATCH_BLOCK_MIN + 1, 6, I)).astype(np.float32)
    together = model.stream(batch=x.shape[0])
    stepped = np.stack([together.step(x[:, t]) for t in range(x.shape[1])], axis=1)
    for b in range(x.shape[0]):
        np.testing.assert_array_equal(model.stream(batch=1).process(x[b:b + 1])[0], stepped[b])


@pytest.mark.parametrize("cell,I,H,scheme", [
    ("lstm", 16, 64, None), ("gru", 8, 64, "int8"), ("rnn", 4, 96, None),
    ("lstm", 1, 48, "fp16"),  # a lone stream of it runs the kernel sized for it
])
def test_an_R_past_L1_gets_panels_for_streams_stepping_together(cell, I, H, scheme):
    """R small enough for a lone stream to read as it is, but past ``BATCH_PANELS_MIN``
    weights: packed for the batched kernels only (``cpu.prepared``), so B >= BATCH_BLOCK_MIN
    streams step together through its panels, with the bits of each stream alone."""
    from tinyrnn.backends import cpu

    layer, w = random_recurrent(np.random.default_rng(13), cell, I, H, scale=0.2)
    G = w["W"].shape[1] // H
    assert K.BATCH_PANELS_MIN < H * G * H <= SMALL
    model = single_layer_model(layer)
    if scheme:
        model = quantize_model(model, scheme)
    prep = cpu.prepared(model)[0]
    assert prep["Rp"].shape[1] == 0 and prep["Rp_batched"].shape[1] == G * H // PANEL
    B, T = K.BATCH_BLOCK_MIN + 1, K.HOIST_MIN_STEPS + 5
    assert K.batched_order(B, prep["Rp_batched"]) and not K.batched_order(B, prep["Rp"])
    x = np.random.default_rng(14).standard_normal((B, T, I)).astype(np.float32)
    lengths = np.array([T, 3, T - 4, 1, T])
    together = model.stream(batch=B)
    stepped = np.stack([together.step(x[:, t]) for t in range(T)], axis=1)
    ragged = model.run(x, lengths=lengths)
    for b in range(B):
        alone = model.stream(batch=1).process(x[b:b + 1])[0]
        np.testing.assert_array_equal(stepped[b], alone)
        np.testing.assert_array_equal(ragged[b, :lengths[b]], alone[:lengths[b]])
    ref = dequantize_model(model).run(x) if scheme else oracle_recurrent(layer, w, x)[0]
    np.testing.assert_allclose(stepped, ref, atol=2e-5, rtol=1e-4)


def test_an_R_within_L1_is_read_as_it_is_by_streams_stepping_together_too():
    from tinyrnn.backends import cpu

    layer, _ = random_recurrent(np.random.default_rng(15), "lstm", 8, 32)  # R: 32 x 128 weights
    prep = cpu.prepared(single_layer_model(layer))[0]
    assert prep["Rp_batched"].shape[1] == 0 and not K.batched_order(64, prep["Rp_batched"])


def test_a_model_without_projection_peepholes_or_int8_compiles_none_of_them():
    """The LSTM kernel gets ``proj=None`` without a projection and ``peep=None`` without
    peepholes, types numba prunes on before typing; int8's recurrent product is chosen by
    R's type. Every combination gives the oracle's values."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6, 8)).astype(np.float32)
    for proj, peepholes in ((None, False), (6, False), (None, True), (6, True)):
        layer, w = random_recurrent(np.random.default_rng(6), "lstm", 8, 12, proj=proj, peepholes=peepholes,
                                    scale=0.3)
        y = single_layer_model(layer).run(x)
        np.testing.assert_allclose(y, oracle_recurrent(layer, w, x)[0], atol=2e-5, rtol=1e-4)
    kernel = K.SEQUENCE_KERNELS["lstm", True, False, False]
    proj_types = {str(sig[6]) for sig in kernel.signatures}
    assert "none" in proj_types and any("array(float32, 3d" in t for t in proj_types)
    peep_types = {str(sig[7]) for sig in kernel.signatures}
    assert "none" in peep_types and any("array(float32, 2d" in t for t in peep_types)
    # the int8 recurrent product is an overload picked by R's dtype
    assert K._ol_add_hR(None, None, None, nbtypes.float32[:, ::1], *[None] * 5).__name__ == "direct"
    assert K._ol_add_hR(None, None, None, nbtypes.int8[:, ::1], *[None] * 5).__name__ == "through_acc"
    # and so is the batched kernels' (every stream at once)
    assert K._ol_add_hR_all(None, None, nbtypes.float32[:, ::1], *[None] * 5).__name__ == "direct"
    assert K._ol_add_hR_all(None, None, nbtypes.int8[:, ::1], *[None] * 5).__name__ == "through_acc"


@pytest.mark.parametrize("cell,I,H,config,scheme", [
    ("lstm", 1, 16, {}, None), ("lstm", 3, 8, {"peepholes": True, "clip": 2.0}, None),
    ("lstm", 2, 32, {"peepholes": True, "input_forget": 1}, None),
    ("lstm", 2, 8, {"input_forget": 1, "direction": "bidirectional"}, "int8"), ("lstm", 4, 24, {}, "fp16"),
    ("gru", 1, 16, {}, None), ("gru", 2, 8, {"linear_before_reset": 1, "direction": "reverse"}, "int8"),
    ("rnn", 1, 32, {}, None), ("rnn", 3, 8, {"activations": ["tanh"]}, "fp16"),
])
def test_kernels_sized_for_a_small_layer_give_the_generic_kernels_bits(monkeypatch, cell, I, H, config, scheme):
    """A per-sample layer (narrow input, H a multiple of 8, R without panels) runs the
    variant compiled with its sizes as constants (UNITS, INPUTS): the generic kernel's
    bits, by process, step and run, and the oracle's values."""
    layer, w = random_recurrent(np.random.default_rng(13), cell, I, H, scale=0.3, **config)

    def build():
        """A new model of the layer (a plan, so a kernel choice, of its own)."""
        m = single_layer_model(layer)
        return quantize_model(m, scheme) if scheme else m

    model = build()
    x = np.random.default_rng(14).standard_normal((2, K.CHUNK + K.HOIST_MIN_STEPS + 3, I)).astype(np.float32)
    lengths = np.array([x.shape[1], K.CHUNK - 3])

    def outputs(m):
        """Whole sequences (ragged), and a stream stepped then processed (causal layers)."""
        out = [m.run(x, lengths=lengths)]
        if m.streamable:
            s = m.stream(batch=2)
            stepped = np.stack([s.step(x[:, t]) for t in range(5)], axis=1)
            out.append(np.concatenate([stepped, s.process(x[:, 5:])], axis=1))
        return out

    sized = outputs(model)
    assert (cell, H, I) in K._SIZED and K._SIZED[cell, H, I].signatures
    monkeypatch.setattr(K, "sized", lambda *args: (0, 0))
    generic = outputs(build())
    for a, b in zip(sized, generic, strict=True):
        np.testing.assert_array_equal(a, b)
    # int8 and fp16: against the float model holding the stored weights (itself checked
    # against the oracle), as tests/test_quantize.py does
    ref = dequantize_model(model) if scheme else None
    mask = np.arange(x.shape[1])[None, :, None] < lengths[:, None, None]
    ragged = ref.run(x, lengths=lengths) if scheme else oracle_recurrent(layer, w, x, lengths=lengths)[0]
    np.testing.assert_allclose(sized[0] * mask, ragged * mask, atol=2e-5, rtol=1e-4)
    if len(sized) > 1:
        whole = ref.run(x) if scheme else oracle_recurrent(layer, w, x)[0]
        np.testing.assert_allclose(sized[1], whole, atol=2e-5, rtol=1e-4)


def test_only_small_per_sample_layers_get_a_sized_kernel():
    none, panels = np.zeros((1, 0, 16, PANEL)), np.zeros((1, 4, 16, PANEL))
    assert K.sized(True, False, False, 16, 1, none, 0) == (16, 1)
    assert K.sized(True, False, False, 64, K.FUSE_MAX_INPUT, none, 0) == (64, K.FUSE_MAX_INPUT)
    # LSTM unit loops take two blocks of units at once where H is two AVX2 vectors' worth
    paired = {(cell, H): K.sequence_kernel(cell, True, False, False, H, 1).py_func.__globals__["PAIRED"]
              for cell, H in (("lstm", 16), ("lstm", 48), ("lstm", 24), ("gru", 16), ("rnn", 32))}
    assert paired == {("lstm", 16): True, ("lstm", 48): True, ("lstm", 24): False, ("gru", 16): False,
                      ("rnn", 32): False}
    for args in ((False, False, False, 16, 1, none, 0),  # any activation
                 (True, True, False, 16, 1, none, 0),  # streams stepping together
                 (True, False, True, 16, 1, none, 0),  # a hoisted input product
                 (True, False, False, 20, 1, none, 0),  # not whole vectors of units
                 (True, False, False, 16, K.FUSE_MAX_INPUT + 1, none, 0),  # a wide input
                 (True, False, False, 16, 1, panels, 0),  # R read through panels
                 (True, False, False, 16, 1, none, 8)):  # a projection
        assert K.sized(*args) == (0, 0)
