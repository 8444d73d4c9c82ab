"""Train the character-level LSTM that ships with tinyrnn (``tinyrnn.default_model()``).

The corpus is the text of the standard-library module ``pydoc_data.topics`` (the Python
documentation topics, PSF license), so every Python installation carries it and nothing is
downloaded. One topic in ten (by sorted topic name) is held out for validation, so the
validation text is whole documents the model never saw, not a tail cut from a seen one.

Model: Embedding(V, 64) -> LSTM(64->384) -> Linear(384, V), an ordinary
``nn.Module`` that the PyTorch converter (or the fallback in ``export``) turns into a
``.trnn`` file. CPU only, seeded (``torch.manual_seed``, ``numpy`` sampling of batch
offsets), one thread by default. With the defaults (2,500 steps of 64 x 64 characters,
dropout 0.2) the shipped model took 31 minutes on one core of a 2-core machine shared with
other jobs (0.75 s a step on average) and reached 1.93 bits/char on the held-out topics.

Usage::

    python examples/train_char_lm.py --out build/charlm            # train, writes ckpt.pt + vocab.json + log
    python examples/train_char_lm.py --out build/charlm --export tinyrnn/data/pydoc_chars.trnn
                                                                    # (re)export a trained checkpoint

Requires torch (training tooling only; the tinyrnn runtime never imports it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

EMBED = 64
HIDDEN = 384
LAYERS = 1


def corpus_splits(every: int = 10):
    """Training and validation text: topic i (in sorted key order) is held out when i % every == 0."""
    from pydoc_data.topics import topics

    keys = sorted(topics)
    train = "".join(topics[k] for i, k in enumerate(keys) if i % every)
    valid = "".join(topics[k] for i, k in enumerate(keys) if i % every == 0)
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
                                       "train_seconds": round(time.time() - t0),
                                       "torch": str(torch.__version__)}},
                           os.path.join(args.out, "ckpt.pt"))
    say(f"done: best valid_bpc {best:.4f} in {time.time() - t0:.0f}s")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="build/charlm", help="directory for ckpt.pt, vocab.json, train.log")
    p.add_argument("--steps", type=int, default=2500)
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
    args = p.parse_args(argv)
    if args.export:
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
    _, valid_text = corpus_splits()
    metadata = {
        "name": "pydoc-char-lstm",
        "description": "character-level LSTM language model of the Python documentation topics",
        "corpus": "pydoc_data.topics (Python standard library; PSF license); one topic in ten "
                  "(sorted by name) held out for validation",
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
