"""The CPU backend: turns a model's layers into a plan of Numba kernel calls.

A *plan* is built once for a batch size B and a step count T: every intermediate buffer,
every scratch array and every kernel argument tuple is allocated and checked up front, so
running it is a flat loop of compiled calls with no allocation and no validation. A stream
keeps one plan for ``step`` (T = 1) and caches plans for ``process``; ``run`` builds one
per call.
"""

from __future__ import annotations

import numpy as np

from .. import spec
from ..layers import Activation, Dense, Embedding, Layer, Recurrent, Softmax
from . import cpu_kernels as K
from .weights import kernel_view

name = "cpu"


class Plan:
    """Preallocated buffers and bound kernel calls for B streams and T steps."""

    __slots__ = ("calls", "input", "output", "lengths", "batch", "steps")

    def __init__(self, calls, input, output, lengths, batch, steps):
        self.calls = calls  # list of (compiled function, argument tuple)
        self.input = input  # (B, T, *in_features) float32, or (B, T) int64 token ids
        self.output = output  # (B, T, *out_features) float32
        self.lengths = lengths  # (B,) int64, steps valid per stream
        self.batch = batch
        self.steps = steps

    def run(self) -> np.ndarray:
        """Execute every call; returns ``self.output`` (overwritten by the next run)."""
        for fn, args in self.calls:
            fn(*args)
        return self.output


# --- per-layer preparation (once per model) ---------------------------------------------


def _activation_row(a) -> list[float]:
    name, alpha, beta = a
    return [float(spec.ACTIVATIONS[name]), alpha, beta]


def _prepare_recurrent(layer: Recurrent) -> dict:
    D, H, G, Hr = layer.num_directions, layer.hidden_size, layer.gates, layer.recurrent_size
    GH = G * H
    p = layer.params
    lay = K.vector_layout(G, H, Hr)
    V = np.zeros((D, lay["sP"][1]), np.float32)
    for d in range(D):
        wb, rb = p["B"][d, :GH], p["B"][d, GH:]
        bias = wb + rb
        if layer.cell == "gru" and layer.linear_before_reset:
            # Rbh sits inside r * (h·Rh + Rbh): keep it apart from the hoisted bias
            bias[2 * H:] = wb[2 * H:]
            V[d, slice(*lay["rbh"])] = rb[2 * H:]
        V[d, slice(*lay["bias"])] = bias
        if layer.peepholes:
            V[d, slice(*lay["peep"])] = p["P"][d]
        for key, tensor in (("sW", "W"), ("sR", "R"), ("sP", "proj")):
            scale = p.get(tensor + "_scale")
            V[d, slice(*lay[key])] = 1.0 if scale is None else scale[d]
    cfg = np.zeros((D, K.CFG_SIZE), np.float32)
    for d in range(D):
        for slot, a in zip((K.CFG_F, K.CFG_G, K.CFG_H), layer.activations_for(d)):
            cfg[d, slot:slot + 3] = _activation_row(a)
        cfg[d, K.CFG_CLIP] = np.inf if layer.clip is None else layer.clip
        cfg[d, K.CFG_COUPLED] = layer.input_forget
        cfg[d, K.CFG_PEEPHOLES] = layer.peepholes
        cfg[d, K.CFG_PROJ] = layer.proj_size > 0
        cfg[d, K.CFG_REVERSE] = layer.direction == "reverse" or d == 1
        cfg[d, K.CFG_LBR] = layer.linear_before_reset
        cfg[d, K.CFG_YOFF] = d * Hr
    W = kernel_view(p["W"])
    proj = kernel_view(p["proj"]) if layer.proj_size else np.zeros((D, 1, 1), W.dtype)
    return {"W": W, "R": kernel_view(p["R"]), "proj": proj, "V": V, "cfg": cfg}


def _prepare(layer: Layer) -> dict:
    p = layer.params
    if isinstance(layer, Recurrent):
        return _prepare_recurrent(layer)
    if isinstance(layer, Dense):
        scale = p.get("W_scale", np.ones(layer.out_features, np.float32))
        return {"W": kernel_view(p["W"]), "b": p["b"], "scale": scale}
    if isinstance(layer, Embedding):
        scale = p.get("table_scale", np.ones(layer.vocab_size, np.float32))
        return {"table": kernel_view(p["table"]), "scale": scale}
    if isinstance(layer, Activation):
        return {"a": np.array([spec.ACTIVATIONS[layer.fn], layer.alpha, layer.beta], np.float32)}
    if isinstance(layer, Softmax):
        return {"log": layer.log}
    raise NotImplementedError(f"the CPU backend has no kernel for layer type {layer.type!r}")


def prepared(model) -> list[dict]:
    """Kernel-ready arrays per layer, computed once per model and cached on it."""
    cache = model._backend_cache
    if "cpu" not in cache:
        cache["cpu"] = [_prepare(layer) for layer in model.layers]
    return cache["cpu"]


# --- plans ------------------------------------------------------------------------------


def new_state(model, batch: int) -> dict[str, dict[str, np.ndarray]]:
    """Zero state for every recurrent layer: ``{layer: {"h": (B, D, Hr), "c": ...}}``."""
    return {
        layer.name: {k: np.zeros((batch, *shape), np.float32) for k, shape in layer.state_shapes().items()}
        for layer in model.layers if layer.stateful
    }


def build_plan(model, batch: int, steps: int, state: dict) -> Plan:
    """Allocate buffers and bind kernel calls for ``batch`` streams over ``steps`` steps.

    ``state`` maps each recurrent layer's name to its ``h``/``c`` arrays (from
    ``new_state``); the plan updates them in place. The caller fills ``plan.input`` (and
    ``plan.lengths`` for ragged batches) and calls ``plan.run()``.
    """
    B, T = batch, steps
    if model.input.tokens:
        inp = np.zeros((B, T), np.int64)
    else:
        inp = np.zeros((B, T, *model.input.shape), np.float32)
    lengths = np.full(B, T, np.int64)
    values = {"input": inp}
    calls = []
    for layer, prep in zip(model.layers, prepared(model)):
        x = values[layer.inputs[0]]
        y = np.empty((B, T, *model.shapes[layer.name]), np.float32)
        values[layer.name] = y
        if isinstance(layer, Recurrent):
            st = state[layer.name]
            work = np.empty(K.work_size(B, T, layer.gates, layer.hidden_size, layer.recurrent_size), np.float32)
            for d in range(layer.num_directions):
                if layer.cell == "lstm":
                    calls.append((K.lstm_sequence, (x, lengths, prep["W"], prep["R"], prep["proj"], prep["V"],
                                                    prep["cfg"], d, st["h"], st["c"], y, work)))
                elif layer.cell == "gru":
                    calls.append((K.gru_sequence, (x, lengths, prep["W"], prep["R"], prep["V"], prep["cfg"],
                                                   d, st["h"], y, work)))
                else:
                    calls.append((K.rnn_sequence, (x, lengths, prep["W"], prep["R"], prep["V"], prep["cfg"],
                                                   d, st["h"], y, work)))
        elif isinstance(layer, Dense):
            calls.append((K.dense, (x.reshape(B * T, -1), prep["W"], prep["b"], prep["scale"],
                                    y.reshape(B * T, -1))))
        elif isinstance(layer, Embedding):
            calls.append((K.embedding, (x.reshape(B * T), prep["table"], prep["scale"], y.reshape(B * T, -1))))
        elif isinstance(layer, Activation):
            calls.append((K.activation, (x.reshape(-1), prep["a"], y.reshape(-1))))
        elif isinstance(layer, Softmax):
            calls.append((K.softmax, (x.reshape(B * T, -1), prep["log"], y.reshape(B * T, -1))))
        else:  # pragma: no cover - _prepare already refused it
            raise NotImplementedError(layer.type)
    return Plan(calls, inp, values[model.output], lengths, B, T)


# --- the rest of the backend interface (what Model and Stream call) ----------------------


def run_plan(plan: Plan) -> np.ndarray:
    """Run a plan; returns its output buffer (overwritten by the plan's next run)."""
    return plan.run()


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
