"""The ``tinyrnn`` command.

Each subcommand is a pair: ``_add_<name>(subparsers)`` declares its arguments and points
``func`` at the function that runs it. Errors the library raises on purpose
(``TinyRNNError``) are printed as one line and exit with status 1; bad arguments exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from .errors import InputError, TinyRNNError


def _load_model(path: str):
    from .format import load

    return load(path)


# --- info -----------------------------------------------------------------------------------


def _info(args) -> int:
    model = _load_model(args.model)
    print(model)
    meta = model.metadata
    size = os.path.getsize(args.model)
    print(f"  file    {args.model} ({size:,} bytes), written by {model.architecture()['producer']}")
    for key in sorted(meta):
        value = meta[key]
        text = value if isinstance(value, str) else repr(value)
        print(f"  {key}: {text if len(text) < 200 else text[:197] + '...'}")
    if model.vocab is not None:
        print(f"  vocabulary: {len(model.vocab)} tokens")
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="describe a .trnn model: layers, sizes, where it came from")
    p.add_argument("model", help="path to a .trnn file")
    p.set_defaults(func=_info)


# --- run ------------------------------------------------------------------------------------


def _run(args) -> int:
    import numpy as np

    model = _load_model(args.model)
    try:
        x = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read input {args.input!r} as a .npy array: {e}") from None
    lengths = None
    if args.lengths:
        try:
            lengths = np.load(args.lengths, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read lengths {args.lengths!r} as a .npy array: {e}") from None
    y = model.run(x, lengths=lengths)
    np.save(args.output, y)
    print(f"{args.input} {tuple(x.shape)} -> {args.output} {tuple(y.shape)}", file=sys.stderr)
    return 0


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run a model over an input array (.npy) and save the outputs")
    p.add_argument("model", help="path to a .trnn file")
    p.add_argument("--input", "-i", required=True, help="input .npy: (T, F) / (B, T, F) floats or (T,) / (B, T) ids")
    p.add_argument("--output", "-o", required=True, help="where to write the outputs (.npy)")
    p.add_argument("--lengths", help="optional .npy of per-sequence lengths (B,) for a padded batch")
    p.set_defaults(func=_run)


# --- quantize -------------------------------------------------------------------------------


def _read_sample(path: str):
    """A sample for the accuracy report: a .npy array, or any other file as UTF-8 text."""
    import numpy as np

    if path.endswith(".npy"):
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read sample {path!r} as a .npy array: {e}") from None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read sample {path!r} as UTF-8 text (give a .npy for array inputs): {e}") from None


def _quantize(args) -> int:
    import dataclasses
    import json

    from .quantize import QuantizationError, accuracy_report

    if os.path.abspath(args.model) == os.path.abspath(args.output):
        raise InputError(f"the output {args.output!r} would overwrite the model it is made from; "
                         f"name another file")
    model = _load_model(args.model)
    sample = _read_sample(args.sample) if args.sample else None
    if isinstance(sample, str) and model.vocab is None:
        raise QuantizationError(f"a text sample needs a model with a vocabulary; {args.model} has none "
                                f"(give a .npy of inputs instead)")
    quantized = model.quantize(args.scheme)
    report = accuracy_report(model, quantized, sample, steps=args.steps, seed=args.seed)
    quantized.save(args.output)
    report = dataclasses.replace(report, reference_bytes=os.path.getsize(args.model),
                                 quantized_bytes=os.path.getsize(args.output))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(f"{args.model} -> {args.output} ({args.scheme})")
        print(report.format())
    return 0


def _add_quantize(sub) -> None:
    from . import spec

    p = sub.add_parser("quantize", help="store a model's weights as int8 or fp16 and report the accuracy cost",
                       description="Quantize a .trnn model and print how far its outputs move from the "
                                   "original's over a sample: max and mean output error and, for text "
                                   "models, bits per character and top-1 next-character agreement.")
    p.add_argument("model", help="path to a .trnn file (normally float32)")
    p.add_argument("--output", "-o", required=True, help="where to write the quantized .trnn file")
    p.add_argument("--scheme", required=True, choices=sorted(spec.QUANT_SCHEMES),
                   help="int8: per-output-column int8 with float32 scales; fp16: half-precision weights")
    p.add_argument("--sample", help="sample input: a text file (text models) or a .npy array as 'tinyrnn run' "
                                    "takes it; default: random input")
    p.add_argument("--steps", type=int, default=1000, help="length of the random sample (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random sample (default 0)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_quantize)


# --- generate -------------------------------------------------------------------------------


def _generate(args) -> int:
    import time

    from .generate import default_model, generate

    t0 = time.perf_counter()
    model = _load_model(args.model) if args.model else default_model()
    pieces = generate(model, args.prompt, max_tokens=args.n, temperature=args.temperature,
                      top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    out = sys.stdout
    out.write(args.prompt)
    out.flush()
    t1 = t_first = time.perf_counter()
    count = 0
    for piece in pieces:
        out.write(piece)
        out.flush()
        count += 1
        if count == 1:
            t_first = time.perf_counter()
    out.write("\n")
    out.flush()
    if args.stats:
        t2 = time.perf_counter()
        rate = f"{(count - 1) / (t2 - t_first):,.0f} tokens/s" if count > 1 and t2 > t_first else "n/a"
        print(f"[{count} tokens: load {t1 - t0:.2f} s, prompt and first token {t_first - t1:.2f} s "
              f"(includes compiling on a first run), then {rate}]", file=sys.stderr)
    return 0


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="stream text from a text model (the shipped one by default)",
                       description="Print the prompt, then text sampled one token at a time from a "
                                   "language model, as it is produced.")
    p.add_argument("prompt", nargs="?", default="", help="text to start from (default: a new document)")
    p.add_argument("--model", "-m", help="a .trnn text model (default: the model shipped with tinyrnn)")
    p.add_argument("-n", type=int, default=200, help="tokens to generate (default 200)")
    p.add_argument("--temperature", "-t", type=float, default=0.8,
                   help="sampling temperature; 0 always takes the most likely token (default 0.8)")
    p.add_argument("--top-k", type=int, default=None, help="sample only from the K most likely tokens")
    p.add_argument("--top-p", type=float, default=None,
                   help="sample only from the most likely tokens holding probability P (nucleus)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same text (default 0)")
    p.add_argument("--stats", action="store_true", help="print timings and tokens/s to stderr at the end")
    p.set_defaults(func=_generate)


# --- entry point ----------------------------------------------------------------------------

SUBCOMMANDS = [_add_info, _add_run, _add_quantize, _add_generate]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="tinyrnn", description="Run recurrent networks (RNN, LSTM, GRU) with numpy and numba.")
    parser.add_argument("--version", action="version", version=f"tinyrnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TinyRNNError as e:
        print(f"tinyrnn {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
