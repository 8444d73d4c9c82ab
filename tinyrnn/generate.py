"""Text generation with a character (or token) language model, one token at a time.

``generate(model, prompt, ...)`` feeds the prompt through a fresh stream in one compiled
call, then repeats: turn the last output into a distribution over the vocabulary, sample a
token, hand its text to the caller, feed the token back. Each piece is yielded as soon as it
is sampled, so a caller printing the pieces sees text appear while the model runs.

Sampling, per step, from the model's output ``z`` (logits, or probabilities when the model
ends in a softmax layer)::

    temperature == 0      greedy: the most likely token (lowest id on ties)
    otherwise             p = softmax(z / temperature)
    top_k = k             keep the k most likely tokens (ties at the k-th kept too)
    top_p = q             keep the most likely tokens whose probabilities sum to >= q
                          (nucleus sampling); both may be given: top-k first, then top-p
    draw                  u ~ U[0, 1) from numpy's PCG64 seeded with ``seed``;
                          the token is the first whose cumulative probability exceeds u

One uniform draw per token from a generator owned by the call makes a run reproducible
for a given seed (and independent of anything else the program samples).

``default_model()`` loads the character model shipped inside the package
(``tinyrnn/data/*.trnn``).
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Iterator

import numpy as np

from .errors import InputError, ModelNotFoundError

DEFAULT_MODEL = "pydoc-char-lstm"


# --- the shipped model ----------------------------------------------------------------------


def _data_dir() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def shipped_models() -> list[str]:
    """Names of the models shipped in the package (``tinyrnn/data/<name>.trnn``)."""
    try:
        return sorted(f[:-5] for f in os.listdir(_data_dir()) if f.endswith(".trnn"))
    except OSError:
        return []


def default_model(name: str | None = None):
    """The language model shipped inside the package, as a ``tinyrnn.Model``.

    ``name`` picks another shipped model (see ``shipped_models()``); by default the
    character LSTM trained on the Python documentation topics (``pydoc_data.topics``).
    Its vocabulary (``model.vocab``) and training facts (``model.metadata``: validation
    bits per character, corpus, steps) travel in the file. Raises ``ModelNotFoundError``
    if the package was installed without its data files.
    """
    from .format import load

    name = DEFAULT_MODEL if name is None else name
    if not isinstance(name, str) or not name or os.sep in name or "/" in name:
        raise InputError(f"a shipped model name is a plain name like {DEFAULT_MODEL!r}, found {name!r}")
    path = os.path.join(_data_dir(), name + ".trnn")
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"no shipped model {name!r} at {path}; the package holds "
                                 f"{shipped_models() or 'none (installed without its data files?)'}")
    return load(path)


# --- argument checks ------------------------------------------------------------------------


def _check_int(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise InputError(f"{name} must be an integer >= {lo}, found {value!r}")
    return int(value)


def _check_float(name: str, value, lo: float, hi: float, lo_open: bool) -> float:
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if ok:
        value = float(value)
        ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise InputError(f"{name} must be a finite number in {rng}, found {value!r}")
    return value


def _output_kind(model) -> str:
    """'logits', 'probs' or 'logprobs': what the model's output per step means."""
    from .layers import Softmax

    last = next(layer for layer in model.layers if layer.name == model.output)
    if isinstance(last, Softmax):
        return "logprobs" if last.log else "probs"
    return "logits"


def check_text_model(model) -> None:
    """Raise ``InputError`` unless ``model`` reads token ids, carries a vocabulary and
    outputs one score per vocabulary entry."""
    from .model import Model

    if not isinstance(model, Model):
        raise InputError(f"generate needs a tinyrnn.Model, found {type(model).__name__}")
    if not model.input.tokens or model.vocab is None:
        found = f"reads {model.input!r}" + (" and has no vocabulary" if model.vocab is None else "")
        raise InputError(f"generate needs a text model (token-id input with a vocabulary); this model {found}")
    if model.output_shape != (len(model.vocab),):
        raise InputError(f"generate needs one output per vocabulary entry, shape ({len(model.vocab)},); "
                         f"this model outputs shape {model.output_shape}")
    if not model.streamable:
        raise InputError("generate needs a causal model; this one has layers that run backwards in time")


# --- sampling -------------------------------------------------------------------------------


def distribution(z: np.ndarray, temperature: float, top_k: int | None, top_p: float | None,
                 kind: str = "logits") -> np.ndarray:
    """The sampling distribution (float64, sums to 1) for one output vector ``z (V,)``.

    ``kind`` says what ``z`` holds: ``'logits'``, ``'probs'`` or ``'logprobs'``.
    ``temperature`` must be > 0 here (greedy decoding takes the argmax instead).
    Raises ``InputError`` if ``z`` holds NaN (a broken model or input).
    """
    z = np.asarray(z, np.float64)
    if kind == "probs":
        with np.errstate(divide="ignore"):
            z = np.log(np.maximum(z, 0.0))
    if np.isnan(z).any():
        raise InputError("the model's output holds NaN; cannot sample from it")
    logits = z / temperature
    if top_k is not None and top_k < logits.size:
        kth = np.partition(logits, logits.size - top_k)[logits.size - top_k]
        logits = np.where(logits >= kth, logits, -np.inf)
    logits = logits - logits.max()
    p = np.exp(logits)
    p /= p.sum()
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        # keep up to and including the first token at which the mass reaches top_p
        keep = order[: int(np.searchsorted(cum, top_p * cum[-1])) + 1]
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    return p


def generate(model, prompt: str = "", max_tokens: int = 200, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = 0) -> Iterator[str]:
    """Sample up to ``max_tokens`` tokens after ``prompt``; yield each token's text as it is sampled.

    ``model``: a text model (token ids in, one score per vocabulary entry out; the last
    layer's output is read as logits, or as (log-)probabilities when it is a softmax).
    ``prompt``: text the model can spell (``model.encode``); it is run through the stream
    first and is not yielded. An empty prompt starts from a newline (the start of a
    document). ``temperature`` >= 0 (0: greedy), ``top_k`` None or an integer >= 1,
    ``top_p`` None or in (0, 1], ``seed`` an integer >= 0 (same seed, same text) or None
    (fresh randomness).

    Every argument is checked when ``generate`` is called, before anything runs; bad ones
    raise ``InputError`` (a ``TinyRNNError``) saying what was expected and what was found.
    Returns an iterator of strings; joining them gives the generated text.
    """
    check_text_model(model)
    if not isinstance(prompt, str):
        raise InputError(f"prompt must be a str, found {type(prompt).__name__}")
    max_tokens = _check_int("max_tokens", max_tokens, 0)
    temperature = _check_float("temperature", temperature, 0.0, 1e6, lo_open=False)
    if top_k is not None:
        top_k = _check_int("top_k", top_k, 1)
    if top_p is not None:
        top_p = _check_float("top_p", top_p, 0.0, 1.0, lo_open=True)
    if seed is not None:
        seed = _check_int("seed", seed, 0)
    if not prompt:
        if "\n" not in model.vocab:
            raise InputError("an empty prompt starts from a newline, which this model's vocabulary lacks; "
                             "give a prompt")
        prompt = "\n"
    ids = model.encode(prompt)  # InputError names a character the model cannot spell
    return _sample(model, ids, max_tokens, temperature, top_k, top_p, seed)


def _sample(model, ids, max_tokens, temperature, top_k, top_p, seed) -> Iterator[str]:
    if max_tokens == 0:
        return
    rng = np.random.Generator(np.random.PCG64(seed))
    vocab = model.vocab
    kind = _output_kind(model)
    stream = model.stream()
    z = stream.process(ids)[-1]  # (V,) output after the whole prompt
    for n in range(max_tokens):
        if temperature == 0.0:
            tok = int(np.argmax(z))
        else:
            p = distribution(z, temperature, top_k, top_p, kind)
            cum = np.cumsum(p)
            tok = min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), len(p) - 1)
        yield vocab[tok]
        if n + 1 < max_tokens:  # the last token's successor is never needed
            z = stream.step(tok)
