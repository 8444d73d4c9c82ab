"""The CPU backend's plans (``tinyrnn.backends.cpu``): how a plan binds its kernels.

A plan calls each kernel's compiled entry point directly, found once per kernel and
argument types (``_bind``), and remembered under a key made from the arrays' flags
(``_type_key``) instead of numba's own typing, which cost ``Model.run`` 0.3 ms a call.
The key must tell apart exactly the arrays numba types apart: the wrong entry point would
read an array with another layout's strides, and the kernels check no bounds.
"""

from __future__ import annotations

import numpy as np
from builders import random_recurrent, single_layer_model
from numba import njit, typeof

import tinyrnn
from tinyrnn.backends import cpu


def _arrays(tmp_path) -> list:
    """Arrays numba types in every way a plan could meet: layouts, dtypes, flags, classes."""
    base = np.arange(48, dtype=np.float32).reshape(4, 12)
    readonly = base.copy()
    readonly.flags.writeable = False
    raw = np.zeros(4 * 48 + 1, np.uint8)
    unaligned = raw[1:].view(np.float32).reshape(4, 12)  # a float32 view one byte off
    path = tmp_path / "m.bin"
    base.tofile(path)
    mapped = np.memmap(path, np.float32, "r", shape=(4, 12))
    return [
        base, base.copy(), base.T, base[:, ::2], base[::2], base.astype(np.float64), base.astype(np.int8),
        base.reshape(2, 2, 12), base[0], np.ones((1, 1), np.float32), readonly, unaligned,
        mapped, np.zeros((0, 12), np.float32), np.asfortranarray(base),
    ]


def test_type_key_separates_exactly_what_numba_types_apart(tmp_path):
    arrays = _arrays(tmp_path)
    assert not arrays[11].flags.aligned  # the unaligned case is one
    for a in arrays:
        for b in arrays:
            same_type = typeof(a) == typeof(b)
            same_key = cpu._type_key(a) == cpu._type_key(b)
            # equal keys must mean equal types (else a wrong entry point); the converse, for
            # one class and alignment, keeps the memo small (equal types under two keys
            # bind twice; numba's typeof ignores alignment, the key keeps it to be safe)
            assert same_key <= same_type, (a.flags, b.flags, typeof(a), typeof(b))
            if type(a) is type(b) and a.flags.aligned == b.flags.aligned:
                assert same_key == same_type, (a.flags, b.flags, typeof(a), typeof(b))


def test_type_key_of_scalars_and_none_is_numbas_type():
    for v in (0, 1, 2**63, -1, 1.5, None, True):
        assert cpu._type_key(v) == typeof(v)


def test_bind_remembers_one_entry_per_kernel_and_types():
    @njit
    def total(a, k):
        return a.sum() * k

    a = np.ones((3, 4), np.float32)
    first = cpu._bind(total, (a, 2))
    assert cpu._bind(total, (np.zeros((5, 6), np.float32), 7)) is first  # other values, same types
    assert first(a, 2) == 24.0
    f_order = cpu._bind(total, (np.asfortranarray(np.ones((3, 4), np.float32)), 2))
    assert f_order is not first  # another layout: another compiled entry
    view = np.ones((3, 8), np.float32)[:, ::2]
    assert cpu._bind(total, (view, 3))(view, 3) == 36.0  # a strided view read through its strides


def test_plans_of_one_model_share_entries_and_match_a_read_only_models(tmp_path):
    layer, _ = random_recurrent(np.random.default_rng(0), "lstm", 6, 16)
    model = single_layer_model(layer)
    path = tmp_path / "m.trnn"
    model.save(path)
    writable, mapped = tinyrnn.load(path), tinyrnn.load(path)
    for p in cpu.prepared(writable):
        for key in ("W", "R"):
            p[key] = p[key].copy()  # writable weights: another type than the mapped file's
    x = np.random.default_rng(1).standard_normal((2, 9, 6)).astype(np.float32)
    plans = [cpu.build_plan(m, 2, 9, cpu.new_state(m, 2)) for m in (writable, writable, mapped)]
    assert plans[0].calls[0][0] is plans[1].calls[0][0]  # the memo served the second plan
    if not cpu.prepared(mapped)[0]["W"].flags.writeable:
        assert plans[2].calls[0][0] is not plans[0].calls[0][0]
    outs = []
    for plan in plans:
        plan.input[...] = x
        outs.append(plan.run().copy())
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    np.testing.assert_array_equal(outs[0], writable.run(x))
