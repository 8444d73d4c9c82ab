"""``Stream``: B independent recurrent streams with preallocated state and buffers.

Everything a step needs is allocated when the stream is made (state, the step plan's
buffers, the kernel argument tuples), so ``step`` is: check the input's shape and dtype,
copy it into the plan's input buffer, run the compiled calls, copy the output out.
``process`` runs a whole block of steps with one compiled call per layer: causal layers
give the same answer block-wise as step by step, so no Python runs per step.

A stream is not for concurrent use: two threads calling the same stream at once get a
``ConcurrentUseError`` (one ``Model`` may serve many streams in many threads).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from .errors import InputError, NonFiniteError, TinyRNNError, UnsupportedModelError

MAX_BLOCK = 4096  # steps per plan inside process(): bounds the intermediate buffers
_F32 = np.dtype(np.float32)
_NDARRAY = np.ndarray
_BUSY = "this Stream is being used by another thread; give each thread its own stream"


class ConcurrentUseError(TinyRNNError, RuntimeError):
    """One Stream was used from two threads at the same time."""


# --- input checks shared with Model.run --------------------------------------------------


def _describe(x) -> str:
    a = np.asarray(x) if not isinstance(x, np.ndarray) else x
    return f"{a.dtype} array of shape {a.shape}"


def check_input(model, x, block: bool, check_finite: bool = False):
    """Validate ``x`` for ``model`` and return ``(xb, batched)``.

    ``block=True`` (``run``/``process``): ``xb`` is ``(B, T, *features)`` float32 or
    ``(B, T)`` int64. ``block=False`` (``step``): ``xb`` is ``(B, *features)`` / ``(B,)``.
    Raises ``InputError`` (or ``NonFiniteError``) saying what was expected and found.
    """
    F = model.input.shape
    lead = 2 if block else 1  # (B, T) or (B,)
    try:
        a = np.asarray(x)
    except Exception as e:  # ragged lists and the like
        raise InputError(f"input cannot be read as an array: {e}") from None
    want = "(T,)" if block else "an int"
    if model.input.tokens:
        if a.dtype.kind not in "iu":
            raise InputError(f"token ids must be integers, found {_describe(a)}")
        if a.ndim == lead:
            batched = True
        elif a.ndim == lead - 1:
            batched, a = False, a[None]
        else:
            want_b = "(B, T)" if block else "(B,)"
            raise InputError(f"expected token ids shaped {want} or {want_b}, found {_describe(a)}")
        if a.size:
            lo, hi = a.min(), a.max()
            if lo < 0 or hi >= model.input.vocab_size:
                raise InputError(f"token ids must lie in [0, {model.input.vocab_size}), found [{lo}, {hi}]")
        return a.astype(np.int64, copy=False), batched
    if a.dtype.kind not in "fiu":
        raise InputError(f"expected real numbers of shape {_shape_text(F, block)}, found {_describe(a)}")
    k = len(F)
    if a.ndim == k + lead and tuple(a.shape[lead:]) == F:
        batched = True
    elif a.ndim == k + lead - 1 and tuple(a.shape[lead - 1:]) == F:
        batched, a = False, a[None]
    else:
        raise InputError(f"expected input of shape {_shape_text(F, block)}, found {_describe(a)}")
    a = a.astype(np.float32, copy=False)
    if check_finite and not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise NonFiniteError(f"input holds NaN or infinity (first at index {tuple(int(i) for i in bad)}; "
                             f"check_finite=True refuses it)")
    return a, batched


def _shape_text(F, block) -> str:
    f = ", ".join(str(s) for s in F)
    return f"(T, {f}) or (B, T, {f})" if block else f"({f},) or (B, {f})"


def check_state(state, into: dict, backend, check_finite: bool = False) -> None:
    """Copy a flat state dict (``"<layer>.h"`` -> ``(B, D, Hr)``) into backend state ``into``.

    Raises ``InputError`` on missing or unknown keys, wrong shapes or non-numeric values
    (``NonFiniteError`` for NaN/inf when ``check_finite``); nothing is copied unless every
    entry is valid.
    """
    if not isinstance(state, dict):
        raise InputError(f"state must be a dict like Stream.state, found {type(state).__name__}")
    expected = {_key(layer, k): arr for layer, parts in into.items() for k, arr in parts.items()}
    missing, unknown = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unknown:
        raise InputError(f"state keys must be {sorted(expected)}; missing {missing}, unknown {unknown}")
    checked = {}
    for key, dst in expected.items():
        src = np.asarray(state[key])
        if src.dtype.kind not in "fiu" or src.shape != tuple(dst.shape):
            raise InputError(f"state[{key!r}] must be real numbers of shape {tuple(dst.shape)}, "
                             f"found {_describe(src)}")
        checked[key] = src.astype(np.float32, copy=False)
        if check_finite and not np.isfinite(checked[key]).all():
            raise NonFiniteError(f"state[{key!r}] holds NaN or infinity (check_finite=True refuses it)")
    for key, dst in expected.items():
        backend.copy_in(dst, checked[key])


def _key(layer: str, part: str) -> str:
    # a graph state (Model.states) is one array, keyed by its own name
    return f"{layer}.{part}" if part else layer


def zero_state(backend, state: dict, i: int | None = None) -> None:
    """Zero backend state (``{layer: {"h": arr, ...}}``), or only stream ``i``'s slice of it."""
    for parts in state.values():
        for arr in parts.values():
            backend.zero(arr, i)


def flatten_state(backend, state: dict) -> dict[str, np.ndarray]:
    """Host copies of backend state as a flat ``{"<layer>.h": array, "<graph state>": array}`` dict."""
    return {_key(layer, k): backend.to_host(arr, copy=True) for layer, parts in state.items() for k, arr in parts.items()}


# --- the stream ----------------------------------------------------------------------------


def _free_token() -> deque:
    """A stream's one token: a call takes it (``pop``) and gives it back (``append``).

    Test-and-set for refusing concurrent use, at a fraction of a lock's cost: deque's
    ``pop`` and ``append`` are atomic (the documented thread-safe operations of
    ``collections.deque``), and an empty deque's ``pop`` raises instead of waiting. A
    ``threading.Lock``'s ``acquire(False)`` and ``release`` cost ~100 ns more per call,
    about a twentieth of a small model's ``step``.
    """
    return deque((True,))


class _Guard:
    """Holds a stream's token for a ``with`` block, or refuses at once if another thread has
    it. One small class for all streams: a class made per call would be cyclic garbage, and
    a long-running script that snapshots state every step would churn the collector."""

    __slots__ = ("free",)

    def __init__(self, free):
        self.free = free

    def __enter__(self):
        try:
            self.free.pop()
        except IndexError:
            raise ConcurrentUseError(_BUSY) from None

    def __exit__(self, *exc):
        self.free.append(True)



class Stream:
    """B independent streams through one model; see ``Model.stream``."""

    def __init__(self, model, batch: int | None = None, device: str = "cpu", check_finite: bool = False):
        from .model import get_backend

        if not model.streamable:
            backward = [l.name for l in model.recurrent_layers if l.direction != "forward"]
            raise UnsupportedModelError(f"layers {backward} run backwards in time; a stream is causal. "
                                        f"Use model.run() for whole sequences")
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1):
            raise InputError(f"batch must be None or a positive integer, found {batch!r}")
        self.model = model
        self.batched = batch is not None
        self.batch = int(batch) if batch is not None else 1
        self.device = device
        self.check_finite = bool(check_finite)
        self._backend = get_backend(device)
        self._state = self._backend.new_state(model, self.batch)
        self._step_plan = self._backend.build_plan(model, self.batch, 1, self._state)
        self._plans: dict[int, object] = {}
        self._free = _free_token()
        self._tokens = model.input.tokens
        B, F = self.batch, model.input.shape
        # views into the step plan: where an input goes, where the output is read, in the
        # caller's shape (so the fast path below copies without broadcasting)
        lead = (B,) if self.batched else ()  # unbatched: B is 1 and the axis disappears
        self._step_in = self._step_plan.input.reshape((*lead, *F))
        self._step_out = self._step_plan.output.reshape((*lead, *model.output_shape))
        self._step_shape = self._step_in.shape
        # the shape a float32 input must have to take step's fast path: None (no input
        # matches) where every input needs the full check
        self._fast_shape = self._step_in.shape if not self._tokens and not self.check_finite else None
        self._run_step = getattr(self._step_plan, "runner", self._step_plan.run)  # see cpu.Plan.runner
        self._step_shape_out = self._step_out.shape
        self._is_device = getattr(self._backend, "is_device_array", None)  # GPU backends only
        # host backends: the step output is already a host array, read without a call
        self._host_out = self._step_out if self._is_device is None else None

    # --- stepping -----------------------------------------------------------------------
    def step(self, x, out: np.ndarray | None = None) -> np.ndarray:
        """Advance every stream by one step.

        ``x``: ``(F,)`` float / one int token id (unbatched), ``(B, F)`` / ``(B,)`` (batched).
        Returns ``(out,)`` or ``(B, out)`` float32, a new array unless ``out`` is given. On
        a ``device="cuda"`` stream ``x`` and ``out`` may be GPU arrays
        (``__cuda_array_interface__``); a GPU input gives a GPU result, without a round trip
        through the host (see ``_step_device``).
        """
        # This is the hot path of a stream: every line here costs tens of nanoseconds, so
        # the common case (a float32 array of the right shape) is tested first and all
        # else goes through the full checks in _load_step_input.
        free = self._free
        try:
            free.pop()
        except IndexError:
            raise ConcurrentUseError(_BUSY) from None
        try:
            # ``is``: numpy's native float32 dtype is one object; any other float32 dtype
            # (byte-swapped, say) takes the full path below, which converts it
            if type(x) is _NDARRAY and x.shape == self._fast_shape and x.dtype is _F32:
                self._step_in[...] = x
            elif self._is_device is not None and (self._is_device(x) or self._is_device(out)):
                return self._step_device(x, out)
            else:
                self._load_step_input(x)
            if out is None:
                self._run_step()
                host = self._host_out
                return host.copy() if host is not None else self._backend.to_host(self._step_out, copy=True)
            if self._is_device is not None and self._is_device(out):  # a host input, a GPU out
                self._run_step()  # (the backend checks a GPU out after the step, as before)
                return self._backend.device_output(self._step_plan, self._step_shape_out, out)
            # checked before the step runs, so that a refused host ``out`` leaves the state as it was
            if not (type(out) is _NDARRAY and out.shape == self._step_shape_out and out.dtype is _F32
                    and out.flags.writeable):
                self._check_out(out)
            self._run_step()
            host = self._host_out
            out[...] = host if host is not None else self._backend.to_host(self._step_out, copy=False)
            return out
        finally:
            free.append(True)

    def _check_out(self, out) -> None:
        """``InputError`` unless ``out`` is a writable float32 host array of the step output's shape."""
        if (type(out) is not np.ndarray or out.shape != self._step_shape_out or out.dtype != _F32
                or not out.flags.writeable):
            what = _describe(out) if isinstance(out, np.ndarray) and out.flags.writeable else (
                "a read-only array" if isinstance(out, np.ndarray) else type(out).__name__)
            raise InputError(f"out must be a writable float32 array of shape {self._step_out.shape}, found {what}")

    def _step_device(self, x, out):
        """``step`` with GPU arrays (``__cuda_array_interface__``: numba, CuPy, PyTorch).

        A device input goes to the kernels by one device-to-device copy; the result is a
        device array (a new one, or ``out``), also by one device-to-device copy. A host
        input with a device ``out`` is accepted too. CUDA streams only.
        """
        be = self._backend
        if self._is_device(x):
            be.load_device_input(self._step_plan, x, self._step_shape, self.model, self.check_finite)
            self._step_plan.run(upload=False)
        else:
            self._load_step_input(x)
            self._run_step()
        return be.device_output(self._step_plan, self._step_shape_out, out)

    def _load_step_input(self, x) -> None:
        xb, batched = check_input(self.model, x, block=False, check_finite=self.check_finite)
        if batched != self.batched or xb.shape[0] != self.batch:
            raise InputError(self._mismatch("step", x, self._step_shape))
        self._step_in[...] = xb if self.batched else xb[0]

    def process(self, xs) -> np.ndarray:
        """Advance every stream by T steps in compiled code.

        ``xs``: ``(T, F)`` / ``(T,)`` token ids (unbatched) or ``(B, T, F)`` / ``(B, T)``.
        Returns ``(T, out)`` or ``(B, T, out)`` float32: the same values ``step`` would give.
        """
        with self._guard():
            xb, batched = check_input(self.model, xs, block=True, check_finite=self.check_finite)
            if batched != self.batched or xb.shape[0] != self.batch:
                want = ("(B, T, ...) with B = %d" % self.batch) if self.batched else "(T, ...) for an unbatched stream"
                raise InputError(f"process expected {want}, found {_describe(xs)}")
            T = xb.shape[1]
            y = np.empty((self.batch, T, *self.model.output_shape), np.float32)
            for t0 in range(0, T, MAX_BLOCK):
                n = min(MAX_BLOCK, T - t0)
                plan = self._plan(n)
                plan.input[...] = xb[:, t0:t0 + n]
                self._backend.run_plan_into(plan, y[:, t0:t0 + n])
            return y if self.batched else y[0]

    def _plan(self, T: int):
        if T == 1:
            return self._step_plan
        plan = self._plans.get(T)
        if plan is None:
            if len(self._plans) >= 4:
                self._plans.pop(next(iter(self._plans)))
            plan = self._plans[T] = self._backend.build_plan(self.model, self.batch, T, self._state)
        return plan

    def _mismatch(self, what, x, shape) -> str:
        kind = f"{self.batch} batched streams" if self.batched else "an unbatched stream"
        return f"{what} on {kind} expected input of shape {shape}, found {_describe(x)}"

    # --- state --------------------------------------------------------------------------
    def reset(self, i: int | None = None) -> None:
        """Put every stream (or only stream ``i``) back to its initial (zero) state."""
        if i is not None:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < self.batch:
                raise InputError(f"stream index must be an integer in [0, {self.batch}), found {i!r}")
            i = int(i)
        with self._guard():
            zero_state(self._backend, self._state, i)

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the state: ``{"<layer>.h": (B, D, Hr), "<layer>.c": (B, D, H)}``.

        Assigning such a dict back restores it exactly (the continuation is bit for bit
        the same). Unbatched streams have B = 1.
        """
        with self._guard():
            return flatten_state(self._backend, self._state)

    @state.setter
    def state(self, snapshot: dict) -> None:
        with self._guard():
            check_state(snapshot, self._state, self._backend, self.check_finite)

    def _guard(self) -> "_Guard":
        return _Guard(self._free)

    def __repr__(self) -> str:
        kind = f"batch={self.batch}" if self.batched else "unbatched"
        return f"<tinyrnn.Stream {kind} device={self.device} over {len(self.model.layers)} layers>"
