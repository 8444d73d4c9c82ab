"""The CPU backend: turns a model's layers into a plan of Numba kernel calls.

A *plan* is built once for a batch size B and a step count T: every intermediate buffer,
every scratch array and every kernel argument tuple is allocated and checked up front, so
running it is a flat loop of compiled calls with no allocation and no validation. A stream
keeps one plan for ``step`` (T = 1) and caches plans for ``process``; ``run`` keeps plans
for short inputs (``Model._take_plan``) and builds one per call for long ones.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import typeof
from numba.core.typing.typeof import Purpose

from ..graph_layers import GRAPH_LAYER_TYPES, Reshape
from ..layers import Activation, Dense, Embedding, Recurrent, Softmax
from . import cpu_kernels as K
from . import graph_kernels as G
from .graph_plan import fuse, graph_calls, prepare_graph
from .packing import CFG_STD, aligned, pack_input_panels, pack_panels, prepare
from .simd import SMALL

name = "cpu"


_ENTRIES = {}  # (kernel, the arguments' _type_key) -> its compiled entry point


def _type_key(a):
    """What numba's type of argument ``a`` depends on, without asking numba (see ``_bind``).

    An array's type is its dtype, dimensions, layout (C if C-contiguous, else F if
    Fortran-contiguous, else any: numba's order of asking) and whether it is read-only;
    the class is kept as well, so a subclass numba types apart gets its own entry, and
    alignment, which numba's ``typeof`` ignores today (a finer key only binds twice, a
    coarser one would bind wrongly). Anything else (a direction index, None) is typed by
    numba itself: those are few and cheap to type.
    """
    if isinstance(a, np.ndarray):
        f = a.flags
        layout = "C" if f.c_contiguous else "F" if f.f_contiguous else "A"
        return type(a), a.dtype, a.ndim, layout, f.writeable, f.aligned
    return typeof(a, Purpose.argument)


def _bind(fn, args):
    """The machine-code entry of ``fn`` for exactly these arguments' types.

    A plan calls each kernel with the same buffers every time, so numba's per-call type
    dispatch (about 30 ns per argument) buys nothing: we resolve the overload once,
    compiling it (or loading it from the cache) without running it, and call its
    entry point. Resolving costs ~15 µs an argument (numba builds and hashes each
    argument's type, then looks the signature up under its compile lock): 0.3 ms for a
    recurrent kernel's 17, which ``Model.run`` paid on every call (it builds a plan per
    call). The entry is therefore remembered per kernel and argument types, keyed by
    what the types are made of (``_type_key``). Falls back to the dispatcher if numba's
    internals are not as expected.
    """
    key = (fn, tuple(_type_key(a) for a in args))
    entry = _ENTRIES.get(key)
    if entry is not None:
        return entry
    try:
        sig = tuple(fn.typeof_pyval(a) for a in args)
        fn.compile(sig)
        entry = fn.overloads[sig].entry_point
    except Exception:  # pragma: no cover - a numba without these attributes
        return fn
    _ENTRIES[key] = entry
    return entry


class Plan:
    """Preallocated buffers and bound kernel calls for B streams and T steps."""

    __slots__ = ("calls", "input", "output", "lengths", "batch", "steps", "runner", "out_slot")

    def __init__(self, calls, input, output, lengths, batch, steps):
        self.calls = [(_bind(fn, args), args) for fn, args in calls]  # (compiled code, arguments)
        # what a stream's step calls (its result unused): ``run``, or for a plan of one call
        # that kernel with its arguments bound, ~0.1 µs less than ``run``'s loop
        self.runner = self.run
        if len(self.calls) == 1:
            fn, args = self.calls[0]
            self.runner = functools.partial(fn, *args)
        self.input = input  # (B, T, *in_features) float32, or (B, T) int64 token ids
        self.output = output  # (B, T, *out_features) float32
        self.lengths = lengths  # (B,) int64, steps valid per stream
        self.batch = batch
        self.steps = steps
        # which argument of a plan of one call is its output buffer itself (not a view of
        # it), so that ``run_into`` can hand that call the caller's array instead
        slots = [i for i, a in enumerate(self.calls[0][1]) if a is output] if len(self.calls) == 1 else []
        self.out_slot = slots[0] if len(slots) == 1 else None

    def run(self) -> np.ndarray:
        """Execute every call; returns ``self.output`` (overwritten by the next run)."""
        for fn, args in self.calls:
            fn(*args)
        return self.output

    def run_into(self, out: np.ndarray) -> None:
        """Execute every call, leaving the output in ``out``: float32, shaped like ``self.output``.

        A plan of one call (a single recurrent layer: the per-sample models) writes a
        C-contiguous ``out`` directly: its compiled code takes any array of the output
        buffer's type, and a block of ``process`` then costs no copy out of the buffer
        (a 48,000-step LSTM 1->16 ``process``: 0.92x the time). Otherwise it is copied. ``out``
        must not overlap any buffer of the plan (the kernels' arguments are ``noalias``).
        """
        if self.out_slot is not None and out.flags.c_contiguous:
            fn, args = self.calls[0]
            fn(*args[:self.out_slot], out, *args[self.out_slot + 1:])
        else:
            out[...] = self.run()


def _tiled(M: np.ndarray) -> np.ndarray:
    """M, or a cache-line-aligned copy of it if register tiles read it (``simd.SMALL``) unaligned.

    Larger matrices are read through their panels (aligned copies already), and copying
    a memory-mapped one would double its memory for the few columns outside the panels.
    """
    per_matrix = M[0].size if M.ndim == 3 else M.size  # (D, rows, cols): one direction
    return aligned(M) if per_matrix <= SMALL else M


def prepared(model) -> list[dict]:
    """Kernel-ready arrays per layer, computed once per model and cached on it."""
    cache = model._backend_cache
    if "cpu" not in cache:
        cache["cpu"] = [prepare_graph(layer, [model.shapes[i] for i in layer.inputs])
                        if layer.type in GRAPH_LAYER_TYPES else prepare(layer) for layer in model.layers]
        for layer, prep in zip(model.layers, cache["cpu"]):
            if isinstance(layer, Recurrent):  # column panels of the large matrices (CPU only)
                for key in ("W", "R", "proj"):
                    prep[key] = _tiled(prep[key])
                if layer.peepholes:  # the LSTM kernel's own argument (None without: see lstm_sequence)
                    prep["peep"] = np.ascontiguousarray(layer.params["P"])  # (D, 3H) float32, as V holds it
                prep["Wp"], prep["Rp"] = pack_input_panels(prep["W"]), pack_panels(prep["R"])
                # the batched kernels' R: one too small for panels (a lone stream reads it
                # as it is) but past L1 gets panels of its own, so that streams stepping
                # together share each load from L2 (see BATCH_PANELS_MIN)
                prep["Rp_batched"] = prep["Rp"] if prep["Rp"].shape[1] else pack_panels(prep["R"], K.BATCH_PANELS_MIN)
            elif isinstance(layer, Dense):
                prep["W"] = _tiled(prep["W"])
    return cache["cpu"]


# --- plans ------------------------------------------------------------------------------


def new_state(model, batch: int) -> dict[str, dict[str, np.ndarray]]:
    """Zero state for every recurrent layer: ``{layer: {"h": (B, D, Hr), "c": ...}}``."""
    out = {
        layer.name: {k: np.zeros((batch, *shape), np.float32) for k, shape in layer.state_shapes().items()}
        for layer in model.layers if layer.stateful
    }
    for name, st in model.states.items():  # graph state: one array, key "" (flattened as its name)
        out[name] = {"": np.zeros((batch, *st["shape"]), np.float32)}
    return out


def build_plan(model, batch: int, steps: int, state: dict) -> Plan:
    """Allocate buffers and bind kernel calls for ``batch`` streams over ``steps`` steps.

    ``state`` maps each recurrent layer's name to its ``h``/``c`` arrays (from
    ``new_state``); the plan updates them in place. The caller fills ``plan.input`` (and
    ``plan.lengths`` for ragged batches) and calls ``plan.run()``.
    """
    B, T = batch, steps
    if model.states and T > 1:
        # the state feeds back through the graph: steps run one after another
        return LoopPlan(build_plan(model, batch, 1, state), T)
    if model.input.tokens:
        inp = np.zeros((B, T), np.int64)
    else:
        inp = np.zeros((B, T, *model.input.shape), np.float32)
    lengths = np.full(B, T, np.int64)
    values = {"input": inp}
    values.update({name: state[name][""].reshape(B, 1, *st["shape"]) for name, st in model.states.items()})
    calls = []
    fusion = fuse(model)
    for layer, prep in zip(model.layers, prepared(model)):
        f = fusion.get(layer.name, {})
        if "drop" in f:  # computed inside its only reader's call (graph_plan.fuse)
            continue
        if "alias" in f:  # a view of another buffer, or written by the call it was fused into
            values[layer.name] = values[f["alias"]].reshape(B, T, *model.shapes[layer.name])
            continue
        ins = [f.get("reads", layer.inputs[0]), *layer.inputs[1:]]
        x = values[ins[0]]
        if isinstance(layer, Reshape):  # the same buffer under another shape: no call
            values[layer.name] = x.reshape(B, T, *model.shapes[layer.name])
            continue
        y = np.empty((B, T, *model.shapes[layer.name]), np.float32)
        values[layer.name] = y
        if layer.type in GRAPH_LAYER_TYPES:
            calls.extend(graph_calls(layer, prep, [values[i] for i in ins], y, [model.shapes[i] for i in ins], f))
        elif isinstance(layer, Recurrent):
            st = state[layer.name]
            scratch = K.scratch(B, T, layer.gates, layer.hidden_size)
            batched, hoist = K.batched_order(B, prep["Rp_batched"]), K.hoisted(T, x.shape[2])
            for d in range(layer.num_directions):
                # only the kernel this direction needs gets compiled
                std = bool(prep["cfg"][d, CFG_STD])
                sizes = K.sized(std, batched, hoist, layer.hidden_size, x.shape[2], prep["Rp"], layer.proj_size)
                kernel = K.sequence_kernel(layer.cell, std, batched, hoist, *sizes)
                weights = (prep["W"], prep["R"], prep["Wp"], prep["Rp_batched"] if batched else prep["Rp"])
                if layer.cell == "lstm":
                    proj = prep["proj"] if layer.proj_size else None  # None: compiled without it
                    calls.append((kernel, (x, lengths, *weights, proj, prep.get("peep"), prep["V"], prep["cfg"], d,
                                           st["h"], st["c"], y, *scratch)))
                else:
                    calls.append((kernel, (x, lengths, *weights, prep["V"], prep["cfg"], d, st["h"], y, *scratch)))
        elif isinstance(layer, Dense):
            calls.append((K.dense, (x.reshape(B * T, -1), prep["W"], prep["b"], prep["scale"],
                                    y.reshape(B * T, -1))))
        elif isinstance(layer, Embedding):
            calls.append((K.embedding, (x.reshape(B * T), prep["table"], prep["scale"], y.reshape(B * T, -1))))
        elif isinstance(layer, Activation):
            calls.append((K.activation, (x.reshape(-1), prep["a"], y.reshape(-1))))
        elif isinstance(layer, Softmax):
            calls.append((K.softmax, (x.reshape(B * T, -1), prep["log"], y.reshape(B * T, -1))))
        else:  # pragma: no cover - prepare already refused it
            raise NotImplementedError(layer.type)
    for name, st in model.states.items():  # after every reader: the next step's value
        calls.append((G.copy, (values[st["next"]].reshape(-1), state[name][""].reshape(-1))))
    return Plan(calls, inp, values[model.output], lengths, B, T)


class LoopPlan:
    """T steps of a model with graph state: its one-step plan run T times.

    Python runs per step here (the state passes through arbitrary layers, so no block of
    steps can be computed layer by layer); models whose state lives in recurrent cells
    never get one. Ragged ``lengths`` are refused.
    """

    __slots__ = ("step", "input", "output", "lengths", "batch", "steps")

    def __init__(self, step: Plan, T: int):
        self.step = step
        B = step.batch
        self.input = np.zeros((B, T, *step.input.shape[2:]), step.input.dtype)
        self.output = np.zeros((B, T, *step.output.shape[2:]), np.float32)
        self.lengths = np.full(B, T, np.int64)
        self.batch, self.steps = B, T

    def run_into(self, out: np.ndarray) -> None:
        """``run``, its output copied into ``out``."""
        out[...] = self.run()

    def run(self) -> np.ndarray:
        if self.lengths.min() < self.steps:
            from ..errors import InputError

            raise InputError("lengths shorter than the sequence are not supported for models with graph state")
        step_in, step_out = self.step.input, self.step.output
        for t in range(self.steps):
            step_in[:, 0] = self.input[:, t]
            self.step.run()
            self.output[:, t] = step_out[:, 0]
        return self.output


# --- the rest of the backend interface (what Model and Stream call) ----------------------


def run_plan(plan: Plan) -> np.ndarray:
    """Run a plan; returns its output buffer (overwritten by the plan's next run)."""
    return plan.run()


def run_plan_into(plan: Plan, out: np.ndarray) -> None:
    """Run a plan, leaving its output in host array ``out`` (float32, shaped like ``plan.output``,
    a new array of the caller's: see ``Plan.run_into``)."""
    plan.run_into(out)


def to_host(arr: np.ndarray, copy: bool) -> np.ndarray:
    """A numpy array of ``arr`` (a copy when ``copy``)."""
    return arr.copy() if copy else arr


def copy_in(dst: np.ndarray, src: np.ndarray) -> None:
    """Overwrite backend array ``dst`` with host array ``src`` (same shape)."""
    np.copyto(dst, src)


def zero(arr: np.ndarray, i: int | None) -> None:
    """Zero a state array, or only stream ``i``'s slice of it."""
    if i is None:
        arr.fill(0.0)
    else:
        arr[i] = 0.0
