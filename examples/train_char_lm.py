"""Train the character-level LSTM that ships with tinyrnn (``tinyrnn.default_model()``).

The corpus is text every Python installation carries (PSF license), so nothing is
downloaded: the documentation topics of ``pydoc_data.topics`` (433k characters for training)
and the docstrings of the standard library's modules, classes and functions (836k characters
on CPython 3.11, gathered by ``stdlib_docstrings``). One topic in ten (by sorted topic name)
is held out for validation, so the validation text is whole documents the model never saw,
not a tail cut from a seen one. The docstrings of 14 modules (``OUTSIDE_MODULES``, and all
below them) are never trained on: they are the "outside" text the shipped model is also
scored on (``benchmarks/textmodel_report.py``).

Model: Embedding(V, 64) -> LSTM(64->384) -> Linear(384, V), an ordinary
``nn.Module`` that the PyTorch converter (or the fallback in ``export``) turns into a
``.trnn`` file. CPU only, seeded (``torch.manual_seed``, ``numpy`` sampling of batch
offsets), one thread by default. With the defaults (5,000 steps of 64 x 64 characters,
dropout 0.2) the shipped model took 35 minutes on one core of a 2-core machine (0.42 s a
step) and reached 1.84 bits/char on the held-out topics. (The first shipped model, trained
on the topics alone for 2,500 steps, reached 1.93 there but 2.51 on the outside text; with
the docstrings: 1.92.)

Usage::

    python examples/train_char_lm.py --out build/charlm            # train, writes ckpt.pt + vocab.json + log
    python examples/train_char_lm.py --out build/charlm --export tinyrnn/data/pydoc_chars.trnn
                                                                    # (re)export a trained checkpoint

Requires torch (training tooling only; the tinyrnn runtime never imports it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time

import numpy as np

EMBED = 64
HIDDEN = 384
LAYERS = 1


# The outside text (benchmarks/textmodel_report.py): docstrings of these modules, never trained on.
OUTSIDE_MODULES = ["argparse", "json", "subprocess", "textwrap", "logging", "csv", "pathlib", "shutil",
                   "tempfile", "functools", "dataclasses", "fractions", "configparser", "zipfile"]
# Not imported for their docstrings: side effects on import (a browser, a printed poem, a GUI),
# test suites, the corpus itself, and tooling that prints while importing.
_SKIP = {"antigravity", "this", "idlelib", "turtledemo", "turtle", "tkinter", "test", "pydoc_data",
         "lib2to3", "ensurepip", "__main__"}


def topic_splits(every: int = 10):
    """Topics of ``pydoc_data.topics``, training and held out: topic i (in sorted key order) is
    held out when i % every == 0."""
    from pydoc_data.topics import topics

    keys = sorted(topics)
    train = "".join(topics[k] for i, k in enumerate(keys) if i % every)
    valid = "".join(topics[k] for i, k in enumerate(keys) if i % every == 0)
    return train, valid


def _docstrings(mod, name: str, methods: bool = True) -> list[str]:
    """A module's docstring, then those of its public classes (with their methods'
    when ``methods``) and functions defined in it, as ``inspect.getdoc`` cleans them."""
    import inspect

    docs = [inspect.getdoc(mod)]
    for attr, obj in sorted(vars(mod).items()):
        if attr.startswith("_") or getattr(obj, "__module__", None) != name:
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            docs.append(inspect.getdoc(obj))
        if methods and inspect.isclass(obj):
            docs.extend(inspect.getdoc(f) for a, f in sorted(vars(obj).items())
                        if not a.startswith("_") and inspect.isfunction(f))
    return [d for d in docs if d]


def _outside_docs() -> list[str]:
    return [d for name in OUTSIDE_MODULES for d in _docstrings(importlib.import_module(name), name, methods=False)]


def outside_text(limit: int = 40000) -> str:
    """The outside text: docstrings of ``OUTSIDE_MODULES`` and their public classes and
    functions, the first ``limit`` characters."""
    return "\n\n".join(_outside_docs())[:limit]


def _gather_docstrings() -> str:
    import contextlib
    import io
    import pkgutil
    import warnings

    outside = set(_outside_docs())
    names = []
    for top in sorted(sys.stdlib_module_names):
        if top.startswith("_") or top in _SKIP or top in OUTSIDE_MODULES:
            continue
        names.append(top)
        spec = importlib.util.find_spec(top)
        if spec is not None and spec.submodule_search_locations:
            names.extend(info.name for info in pkgutil.iter_modules(spec.submodule_search_locations, top + ".")
                         if not any(p.startswith("_") or "test" in p for p in info.name.split(".")))
    seen, docs = set(), []
    warnings.simplefilter("ignore")  # deprecated modules warn on import
    for name in names:
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                mod = importlib.import_module(name)
        except Exception:  # platform modules (winreg, msvcrt, ...) and optional extensions
            continue
        for d in _docstrings(mod, name):
            if d not in seen and d not in outside:
                seen.add(d)
                docs.append(d)
    return "\n\n".join(docs)


def stdlib_docstrings() -> str:
    """Docstrings of the standard library: every module and first-level submodule that
    imports here, except the outside modules and anything under them (and any text equal
    to an outside docstring), each distinct text once, in sorted module order. About 0.84 M
    characters on CPython 3.11; they vary a little with the version.

    Gathered in a child interpreter: importing ~500 modules (deprecation warnings, codec and
    atexit registrations) must not change the process that asked.
    """
    import subprocess

    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--docstrings"], env=env,
                          capture_output=True, check=True)
    return done.stdout.decode("utf-8")


def corpus_splits(every: int = 10, docstrings: bool = True):
    """Training and validation text.

    Validation: the held-out topics (``topic_splits``). Training: the other topics, then,
    with ``docstrings``, the standard library's docstrings (``stdlib_docstrings``) spelled in
    the topics' characters (others dropped, so the vocabulary is the topics' own).
    """
    train, valid = topic_splits(every)
    if docstrings:
        chars = set(train + valid)
        train += "\n\n" + "".join(ch for ch in stdlib_docstrings() if ch in chars)
    return train, valid


def build_vocab(text: str) -> list[str]:
    """Every character of the corpus, sorted by code point (index = token id)."""
    return sorted(set(text))


def make_model(vocab_size: int, dropout: float = 0.0):
    """The network. ``dropout`` (training only; a no-op in eval mode and absent from the
    weights) regularizes the LSTM's input and output: the corpus is small (~420k characters)
    and many passes over it otherwise overfit the held-out and outside text."""
    import torch.nn as nn

    class CharLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab_size, EMBED)
            self.lstm = nn.LSTM(EMBED, HIDDEN, num_layers=LAYERS, batch_first=True)
            self.head = nn.Linear(HIDDEN, vocab_size)
            self.drop = nn.Dropout(dropout)

        def forward(self, x, state=None):
            y, state = self.lstm(self.drop(self.embed(x)), state)
            return self.head(self.drop(y)), state

    return CharLSTM()


def evaluate(model, ids, seq: int = 256, batch: int = 32) -> float:
    """Bits per character on ``ids``, reading it as ``batch`` contiguous streams whose state
    carries across chunks (the way a streaming runtime sees text)."""
    import torch
    import torch.nn.functional as F

    n = (len(ids) - 1) // batch
    x = torch.as_tensor(ids[: n * batch].reshape(batch, n), dtype=torch.long)
    y = torch.as_tensor(ids[1: n * batch + 1].reshape(batch, n), dtype=torch.long)
    total, count, state = 0.0, 0, None
    model.eval()
    with torch.no_grad():
        for s in range(0, n, seq):
            logits, state = model(x[:, s:s + seq], state)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[:, s:s + seq].reshape(-1),
                                     reduction="sum").item()
            count += y[:, s:s + seq].numel()
    model.train()
    return total / count / math.log(2)


def train(args) -> None:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train_text, valid_text = corpus_splits()
    vocab = build_vocab(train_text + valid_text)
    index = {c: i for i, c in enumerate(vocab)}
    tr = np.array([index[c] for c in train_text], dtype=np.int64)
    va = np.array([index[c] for c in valid_text[:args.valid_chars]], dtype=np.int64)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    log = open(os.path.join(args.out, "train.log"), "a", buffering=1, encoding="utf-8")

    def say(msg):
        print(msg, flush=True)
        log.write(msg + "\n")

    model = make_model(len(vocab), args.dropout)
    nparams = sum(p.numel() for p in model.parameters())
    say(f"train {len(tr)} chars, valid {len(va)} chars, vocab {len(vocab)}, params {nparams}, "
        f"steps {args.steps} x batch {args.batch} x seq {args.seq}, seed {args.seed}")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    # Cosine decay after a short warm-up: most of the gain comes early, the tail polishes.
    warm = max(1, args.steps // 50)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))))
    t0 = time.time()
    best = float("inf")
    for step in range(1, args.steps + 1):
        starts = rng.integers(0, len(tr) - args.seq - 1, size=args.batch)
        xb = torch.as_tensor(np.stack([tr[s:s + args.seq] for s in starts]))
        yb = torch.as_tensor(np.stack([tr[s + 1:s + args.seq + 1] for s in starts]))
        logits, _ = model(xb)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 20 == 0:
            say(f"step {step} train_bpc {loss.item() / math.log(2):.3f} lr {sched.get_last_lr()[0]:.2e} "
                f"elapsed {time.time() - t0:.0f}s")
        if step % args.eval_every == 0 or step == args.steps:
            vb = evaluate(model, va)
            say(f"step {step} valid_bpc {vb:.4f} elapsed {time.time() - t0:.0f}s")
            if vb < best:
                best = vb
                torch.save({"state_dict": model.state_dict(), "vocab": vocab, "valid_bpc": vb, "step": step,
                            "config": {"embed": EMBED, "hidden": HIDDEN, "layers": LAYERS, "seed": args.seed,
                                       "steps": args.steps, "batch": args.batch, "seq": args.seq,
                                       "lr": args.lr, "dropout": args.dropout, "train_chars": len(tr), "valid_chars": len(va),
                                       "python": sys.version.split()[0],
                                       "train_seconds": round(time.time() - t0),
                                       "torch": str(torch.__version__)}},
                           os.path.join(args.out, "ckpt.pt"))
    say(f"done: best valid_bpc {best:.4f} in {time.time() - t0:.0f}s")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="build/charlm", help="directory for ckpt.pt, vocab.json, train.log")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; the shipped model used 1 (results differ slightly with more)")
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--valid-chars", type=int, default=None, help="score only this many held-out characters")
    p.add_argument("--export", metavar="TRNN", help="skip training; convert OUT/ckpt.pt to this .trnn file")
    p.add_argument("--docstrings", action="store_true", help="print the standard-library docstring text and exit")
    args = p.parse_args(argv)
    if args.docstrings:
        sys.stdout.write(_gather_docstrings())
    elif args.export:
        export(args.out, args.export)
    else:
        train(args)


def to_tinyrnn(state_dict, vocab, metadata):
    """A ``tinyrnn.Model`` from the trained ``state_dict``.

    Uses ``tinyrnn_converters.from_torch`` when it is installed and handles the module;
    otherwise builds the layers directly: PyTorch's LSTM gate blocks (i, f, g, o) are
    reordered to ONNX's (i, o, f, c), the two biases concatenated into ONNX's ``B``, and
    Linear's weight transposed into Dense's ``W (in, out)``.
    """
    from tinyrnn import InputSpec, Model
    from tinyrnn.layers import Dense, Embedding, Recurrent

    sd = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in state_dict.items()}
    V = len(vocab)
    H = sd["lstm.weight_hh_l0"].shape[1]
    order = np.concatenate([np.arange(g * H, (g + 1) * H) for g in (0, 3, 1, 2)])  # i,f,g,o -> i,o,f,c
    layers = [Embedding("embed", None, {"table": sd["embed.weight"]}, V, sd["embed.weight"].shape[1])]
    for k in range(LAYERS):
        W = sd[f"lstm.weight_ih_l{k}"][order][None]  # (1, 4H, I)
        R = sd[f"lstm.weight_hh_l{k}"][order][None]  # (1, 4H, H)
        B = np.concatenate([sd[f"lstm.bias_ih_l{k}"][order], sd[f"lstm.bias_hh_l{k}"][order]])[None]  # (1, 8H)
        layers.append(Recurrent.from_onnx("lstm", f"lstm{k}", W, R, B))
    head_w = sd["head.weight"]  # (V, H)
    layers.append(Dense("head", None, {"W": np.ascontiguousarray(head_w.T), "b": sd["head.bias"]}, H, V))
    return Model(layers, InputSpec.token_ids(V), vocab=vocab, metadata=metadata)


def export(out_dir: str, path: str) -> None:
    """Write ``OUT/ckpt.pt`` as a float32 ``.trnn`` at ``path``, after checking that tinyrnn
    reproduces PyTorch's outputs on held-out text, with the training facts in its metadata."""
    import torch

    import tinyrnn

    # weights_only: nothing but tensors and plain data is unpickled (TorchVersion is a str)
    with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
        ck = torch.load(os.path.join(out_dir, "ckpt.pt"), map_location="cpu", weights_only=True)
    ck["config"] = {k: (str(v) if k == "torch" else v) for k, v in ck["config"].items()}
    vocab, cfg = ck["vocab"], ck["config"]
    _, valid_text = topic_splits()
    metadata = {
        "name": "pydoc-char-lstm",
        "description": "character-level LSTM language model of the Python documentation "
                       "(pydoc topics and standard-library docstrings)",
        "corpus": "pydoc_data.topics and the docstrings of the standard library (Python "
                  f"{cfg.get('python', '?')}; PSF license); one topic in ten (sorted by name) held out "
                  "for validation; the docstrings of " + ", ".join(OUTSIDE_MODULES) + " never trained on",
        "train_step": int(ck["step"]),
        "training": cfg,
        "trained_with": "examples/train_char_lm.py",
    }
    model = to_tinyrnn(ck["state_dict"], vocab, metadata)
    # the exported model must give PyTorch's answers: compare logits over held-out text
    net = make_model(len(vocab))
    net.load_state_dict(ck["state_dict"])
    ids = model.encode(valid_text[:2000])
    with torch.no_grad():
        want = net(torch.as_tensor(ids[None]))[0][0].numpy()
    got = model.run(ids)
    err = float(np.abs(got - want).max())
    print(f"tinyrnn vs torch: max |logit difference| {err:.2e} over {len(ids)} steps")
    if err > 1e-3:
        sys.exit(f"export mismatch: {err}")
    bpc = tinyrnn_bpc(model, valid_text)
    print(f"tinyrnn validation bits/char {bpc:.4f} (torch, 32 streams at training: {ck['valid_bpc']:.4f})")
    # the number users see is tinyrnn's own, one stream over the whole held-out text
    model.metadata["valid_bits_per_char"] = round(bpc, 4)
    model.metadata["valid_bits_per_char_torch_32_streams"] = round(float(ck["valid_bpc"]), 4)
    with open(os.path.join(out_dir, "valid.txt"), "w", encoding="utf-8") as f:
        f.write(valid_text)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    model.save(path)
    print(f"wrote {path} ({os.path.getsize(path):,} bytes)")


def tinyrnn_bpc(model, text: str) -> float:
    """Bits per character of a tinyrnn text model on ``text`` (one stream, from a fresh state)."""
    ids = model.encode(text)
    z = model.run(ids[:-1]).astype(np.float64)  # (T, V) logits
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(ids) - 1), ids[1:]].mean() / math.log(2))


if __name__ == "__main__":
    main()
