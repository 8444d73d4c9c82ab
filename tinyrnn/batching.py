"""Run many sequences of any lengths in length-bucketed batches (numpy and numba only).

``run_many(model, seqs)`` answers exactly what ``[model.run(s) for s in seqs]`` answers, in
the same order, but far faster for many short sequences: it sorts the sequences by length,
cuts the sorted list into batches of ``batch_size``, pads each batch only to its own longest
member and runs it in one ``Model.run(x, lengths=...)`` call. Sorting first keeps similar
lengths together, so a batch of short sequences never pays for a long one (the padding
waste of a batch is at most the spread of ``batch_size`` neighbouring lengths).

Why the answers are equal bit for bit, not just close: every kernel computes each batch
row with the same operations in the same order whatever the batch size and padding (rows
never mix; padded steps are skipped per row, not masked after the fact), so padding changes
nothing a sequence sees. ``tests/test_batching.py`` checks this for every cell kind.

This is the work a Dask worker does on one partition (``tinyrnn.dask``), and what
``tinyrnn score`` and ``tinyrnn run`` do on one machine; it needs no Dask.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np

from .errors import InputError
from .stream import check_input

REDUCTIONS = (None, "last", "mean")


def check_reduce(reduce) -> None:
    """``InputError`` unless ``reduce`` is None, ``"last"``, ``"mean"`` or a callable."""
    if reduce in REDUCTIONS or callable(reduce):
        return
    raise InputError(f"reduce must be None (every step), 'last' or 'mean', found {reduce!r}")


def check_batch_size(batch_size) -> int:
    """``batch_size`` as an int; ``InputError`` unless it is an integer >= 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be an integer >= 1, found {batch_size!r}")
    return int(batch_size)


def reduce_output(y: np.ndarray, reduce, x=None):
    """One sequence's outputs ``y (T, *out)`` reduced over time.

    ``None``: ``y`` itself; ``"last"``: ``y[T-1] (*out)``; ``"mean"``: ``y.mean(0) (*out)``
    float32; a callable: ``reduce(y, x)`` with ``x`` the sequence's checked input. Raises
    ``InputError`` for ``"last"``/``"mean"`` of an empty sequence (there is no step to
    report).
    """
    if reduce is None:
        return y
    if callable(reduce):
        return reduce(y, x)
    if y.shape[0] == 0:
        raise InputError(f"reduce={reduce!r} needs at least one step; found an empty sequence")
    if reduce == "last":
        return y[-1].copy()
    return y.mean(axis=0, dtype=np.float32)


def check_sequence(model, seq, index: int) -> np.ndarray:
    """One sequence for ``model``: ``(T,)`` int64 ids or ``(T, *features)`` float32.

    Raises ``InputError`` naming ``index`` when ``seq`` is not one sequence the model reads.
    """
    try:
        x, batched = check_input(model, seq, block=True)
    except InputError as e:
        raise type(e)(f"sequence {index}: {e}") from None
    if batched:
        want = "(T,) token ids" if model.input.tokens else f"(T, {', '.join(map(str, model.input.shape))})"
        raise InputError(f"sequence {index}: expected one sequence {want}, found a batch of shape "
                         f"{tuple(np.shape(seq))}; give its sequences one by one")
    return x[0]


def buckets(lengths, batch_size: int) -> list[np.ndarray]:
    """Indices of ``lengths`` grouped into batches of at most ``batch_size`` similar lengths.

    Sorted by length (ties keep their order), then cut into consecutive runs, so each batch
    spans the narrowest possible range of lengths.
    """
    order = np.argsort(np.asarray(lengths, np.int64), kind="stable")  # (N,)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def run_many(model, seqs: Iterable, reduce=None, batch_size: int = 64) -> list:
    """Run ``model`` over every sequence of ``seqs``; outputs in the same order.

    ``seqs``: sequences of any lengths, each ``(T,)`` token ids or ``(T, *features)``
    floats (what ``Model.run`` takes unbatched). ``reduce``: ``None`` gives each sequence's
    ``(T, *out)`` float32 outputs, ``"last"`` its last step ``(*out)``, ``"mean"`` the mean
    over its steps ``(*out)``, a callable ``f(y, x)`` whatever it returns. ``batch_size``:
    sequences run together in one call (similar lengths batched, see the module docstring).

    Every result equals ``model.run(seq)`` (reduced the same way) exactly. Raises
    ``InputError`` naming the first sequence that is not valid input (or is empty where
    ``reduce`` needs a step), before any runs.
    """
    check_reduce(reduce)
    batch_size = check_batch_size(batch_size)
    xs = [check_sequence(model, s, i) for i, s in enumerate(seqs)]
    out: list = [None] * len(xs)
    lengths = [x.shape[0] for x in xs]
    if reduce in ("last", "mean") and 0 in lengths:
        raise InputError(f"sequence {lengths.index(0)}: reduce={reduce!r} needs at least one step; found an "
                         f"empty sequence")
    for idx in buckets(lengths, batch_size):
        lens = np.array([lengths[i] for i in idx], np.int64)  # (b,)
        T = int(lens.max())
        x0 = xs[idx[0]]
        xb = np.zeros((len(idx), T, *x0.shape[1:]), x0.dtype)  # (b, T, *F) padded
        for row, i in enumerate(idx):
            xb[row, :lengths[i]] = xs[i]
        # a batch without padding needs no lengths; they would only cost the masking pass
        yb = model.run(xb, lengths=lens if lens.min() < T else None)  # (b, T, *out)
        copy = reduce is None or callable(reduce)  # "last" and "mean" make new arrays anyway
        for row, i in enumerate(idx):
            y = yb[row, :lengths[i]]
            if copy:
                y = np.array(y)  # own copy: results must not pin the batch buffer
            out[i] = reduce_output(y, reduce, xs[i])
    return out


# --- text models --------------------------------------------------------------------------


def text_context(model) -> np.ndarray:
    """Token ids that stand before every scored line: the newline's id when the vocabulary
    has ``"\\n"`` (a line follows a line break, so its first character is predicted too),
    else nothing (the first token is context, not scored)."""
    if model.vocab is not None and "\n" in model.vocab:
        return model.encode("\n")
    return np.zeros(0, np.int64)


def line_bits(model) -> Callable:
    """A reducer for ``run_many``: ``(y, ids) -> (bits, characters)`` of predicting
    ``ids[1:]`` from the model's outputs ``y[:-1]``. Characters are the spelled lengths of
    the predicted tokens. Raises ``InputError`` when the model's output is not a
    distribution (or logits) over its own vocabulary."""
    from .quantize import _log_probs

    if model.vocab is None or model.output_shape != (model.input.vocab_size,):
        raise InputError(f"scoring text needs a text model (a vocabulary, and outputs over it); this model "
                         f"reads {model.input!r} and writes {model.output_shape}")
    if _log_probs(model, np.zeros((1, model.input.vocab_size), np.float32)) is None:
        raise InputError(f"scoring text needs a model whose output layer {model.output!r} gives logits "
                         f"(dense) or (log-)probabilities (softmax)")
    spelled = np.array([len(t) for t in model.vocab], np.int64)  # (V,)

    def bits(y: np.ndarray, ids: np.ndarray) -> tuple[float, int]:
        if ids.shape[0] < 2:
            return 0.0, 0
        lp = _log_probs(model, y[:-1])  # (T-1, V) float64 natural log
        target = ids[1:]  # (T-1,)
        nats = -np.take_along_axis(lp, target[:, None], axis=1).sum()
        return float(nats / math.log(2)), int(spelled[target].sum())

    return bits


def encode_lines(model, lines: Iterable[str], first: int | None = 0) -> list[np.ndarray]:
    """Token ids of each line with ``text_context`` before it. ``InputError`` names the
    line that holds a character outside the vocabulary: its number counting from ``first``
    (``None`` when numbers would mislead, as inside one Dask partition) and its start."""
    ctx = text_context(model)
    out = []
    for n, line in enumerate(lines):
        where = f"line {n + first}" if first is not None else "line"
        if not isinstance(line, str):
            raise InputError(f"{where}: expected text (str), found {type(line).__name__}")
        try:
            ids = model.encode(line.rstrip("\r\n"))
        except InputError as e:
            raise InputError(f"{where} {line[:40]!r}: {e}") from None
        out.append(np.concatenate([ctx, ids]))
    return out


def bits_per_character(model, lines: Iterable[str], batch_size: int = 64,
                       first: int | None = 0) -> list[tuple[float, int]]:
    """``(bits, characters)`` for each line of text: the model's cross-entropy, in bits,
    of each character of the line given the ones before it (and the line break before the
    line when the vocabulary has one, see ``text_context``). ``bits / characters`` is the
    line's bits per character (undefined, ``characters == 0``, for a line with nothing to
    predict). A trailing ``"\\n"``/``"\\r\\n"`` is not part of the line. Raises ``InputError``
    for a model that is not a text model or a line it cannot spell (numbered from ``first``)."""
    reducer = line_bits(model)
    return run_many(model, encode_lines(model, lines, first), reduce=reducer, batch_size=batch_size)
