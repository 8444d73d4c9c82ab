"""Facts about a character language model: bits per character (held-out and outside text),
what int8 and fp16 storage cost, and generation speed. Used for the shipped model.

    python benchmarks/textmodel_report.py FLOAT32.trnn [--json OUT.json]

* held-out text: the validation topics of examples/train_char_lm.py (one topic in ten of
  ``pydoc_data.topics``), never trained on.
* outside text: docstrings of 14 pure-Python standard-library modules (argparse, json, ...;
  ``OUTSIDE_MODULES`` in the training script, which keeps them and everything under them out
  of its training text), technical English the model never saw; characters outside the
  model's vocabulary are dropped (their count is reported).
* quantized: ``Model.quantize`` and ``tinyrnn.quantize.accuracy_report`` over the held-out
  text (bits per char, top-1 next-character agreement), file sizes as saved.
* speed: ``tinyrnn.generate`` of 2000 characters after a warm-up, wall and CPU seconds
  (on a shared machine the CPU figure is the steadier one).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

import tinyrnn
from tinyrnn.quantize import accuracy_report

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples"))
from train_char_lm import OUTSIDE_MODULES, outside_text, topic_splits  # noqa: E402  (one definition of each text)


def held_out_text() -> str:
    return topic_splits()[1]


def bits_per_char(model, text: str) -> float:
    ids = model.encode(text)
    z = model.run(ids[:-1]).astype(np.float64)  # (T-1, V) logits
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(ids) - 1), ids[1:]].mean() / math.log(2))


def speed(model, n: int = 2000) -> dict:
    list(tinyrnn.generate(model, "The ", max_tokens=50, seed=0))  # compile / load the cache
    w0, c0 = time.perf_counter(), time.process_time()
    k = sum(1 for _ in tinyrnn.generate(model, "The ", max_tokens=n, temperature=0.8, seed=1))
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"tokens": k, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "tokens_per_s_wall": round(k / wall), "tokens_per_s_cpu": round(k / cpu)}


def ship(ref, out: dict, path: str) -> None:
    """Save the int8 form of ``ref`` at ``path`` with the numbers measured for it in its metadata."""
    q = tinyrnn.load(out["int8"]["path"])
    q.metadata.update({
        "valid_bits_per_char": round(out["int8"]["held_out_bpc"], 4),
        "valid_bits_per_char_float32": round(out["float32"]["held_out_bpc"], 4),
        "outside_bits_per_char": round(out["int8"]["outside_bpc"], 4),
        "outside_text": f"docstrings of {', '.join(OUTSIDE_MODULES)} (first {out['outside_chars']:,} "
                        f"characters the vocabulary spells)",
        "top1_agreement_with_float32": round(out["int8"]["top1_agreement"], 4),
        "float32_bytes": out["bytes"],
    })
    q.save(path)
    out["shipped"] = {"path": path, "bytes": os.path.getsize(path)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="the float32 .trnn text model")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--ship", metavar="OUT", help="write the int8 model, its measured numbers in its metadata, here")
    p.add_argument("--save-dir", help="keep the quantized files here (default: a temporary directory)")
    args = p.parse_args(argv)
    ref = tinyrnn.load(args.model)
    held = held_out_text()
    raw = outside_text()
    vocab = set(ref.vocab)
    outside = "".join(ch for ch in raw if ch in vocab)
    out = {"model": args.model, "bytes": os.path.getsize(args.model), "held_out_chars": len(held),
           "outside_chars": len(outside), "outside_dropped_chars": len(raw) - len(outside),
           "outside_modules": OUTSIDE_MODULES, "float32": {}}
    out["float32"]["held_out_bpc"] = bits_per_char(ref, held)
    out["float32"]["outside_bpc"] = bits_per_char(ref, outside)
    out["float32"]["speed"] = speed(ref)
    save_dir = args.save_dir or tempfile.mkdtemp(prefix="tinyrnn-textmodel-")
    base = os.path.splitext(os.path.basename(args.model))[0]
    for scheme in ("int8", "fp16"):
        q = ref.quantize(scheme)
        path = os.path.join(save_dir, f"{base}-{scheme}.trnn")
        q.save(path)
        q = tinyrnn.load(path)
        rep = accuracy_report(ref, q, held)
        size = os.path.getsize(path)
        out[scheme] = {
            "path": path, "bytes": size, "size_vs_float32": size / out["bytes"],
            "held_out_bpc": rep.bits_quantized, "held_out_bpc_float32": rep.bits_reference,
            "bpc_change": rep.bits_quantized / rep.bits_reference - 1,
            "top1_agreement": rep.top1_agreement, "max_abs_logit_error": rep.max_abs_error,
            "outside_bpc": bits_per_char(q, outside), "speed": speed(q),
        }
    if args.ship:
        ship(ref, out, args.ship)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return out


if __name__ == "__main__":
    sys.exit(main() and 0)
