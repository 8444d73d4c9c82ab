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


# --- convert --------------------------------------------------------------------------------


def _parse_constant(text: str):
    """``NAME=VALUE`` -> (name, int | float | list) for ``from_onnx(constants=...)``."""
    import json

    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, found {text!r}")
    try:
        v = json.loads(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: value {value!r} is not a number or a JSON list") from None
    if isinstance(v, bool) or not isinstance(v, (int, float, list)):
        raise argparse.ArgumentTypeError(f"{name}: value {value!r} is not a number or a JSON list")
    return name, v


def _convert(args) -> int:
    import time

    from .errors import UnsupportedModelError

    try:
        import tinyrnn_converters
    except ImportError as e:
        raise UnsupportedModelError(f"converting needs the converters (pip install 'tinyrnn[onnx]'): {e}") from None
    constants = dict(args.constant or [])
    t0 = time.perf_counter()
    src = args.input
    if src.lower().endswith(".onnx"):
        print(f"reading {src} (constants: {constants or 'none'})", flush=True)
        model = tinyrnn_converters.from_onnx(src, constants=constants or None)
    elif src.lower().endswith((".pt", ".pth")):
        if constants:
            raise InputError("--constant applies to ONNX models only")
        print(f"reading {src}", flush=True)
        model = tinyrnn_converters.load_checkpoint(src)
    else:
        raise InputError(f"{src!r}: expected an .onnx file or a PyTorch checkpoint (.pt/.pth)")
    print(f"converted in {time.perf_counter() - t0:.1f} s", flush=True)
    if args.quantize:
        model = model.quantize(args.quantize)
        print(f"quantized to {args.quantize}", flush=True)
    model.save(args.output)
    print(model)
    print(f"wrote {args.output}: {len(model.layers)} layers, {model.num_params():,} parameters, "
          f"{os.path.getsize(args.output):,} bytes")
    return 0


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert an ONNX model or a PyTorch checkpoint into a .trnn file")
    p.add_argument("input", help="model.onnx, or a state_dict saved with torch.save (.pt)")
    p.add_argument("--output", "-o", required=True, help="the .trnn file to write")
    p.add_argument("--constant", action="append", type=_parse_constant, metavar="NAME=VALUE",
                   help="bind an ONNX graph input to a value so what it decides folds away "
                        "(repeatable), e.g. --constant sr=16000")
    p.add_argument("--quantize", choices=["int8", "fp16"], help="store the weights quantized")
    p.set_defaults(func=_convert)


# --- entry point ----------------------------------------------------------------------------

SUBCOMMANDS = [_add_info, _add_run, _add_quantize, _add_convert]


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
