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


# --- bench ----------------------------------------------------------------------------------


def _bench(args) -> int:
    import json

    from .bench import bench

    if args.model:
        model, name = _load_model(args.model), args.model
    else:
        from . import default_model

        model, name = default_model(), "the shipped model"
    result = bench(model, batch=args.batch, steps=args.steps, budget=args.budget)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(f"{name}: {model.num_params():,} parameters, {model.dtype} weights, one thread")
        print(result.format())
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="time a model here: step, process and run (tinyrnn alone)",
                       description="Time a model with tinyrnn alone: the first call (numba compile or "
                                   "cache load), one stream's step, process over many steps, and a "
                                   "batched offline run. For torch/onnxruntime beside it see "
                                   "benchmarks/compare.py.")
    p.add_argument("model", nargs="?", help="a .trnn file (default: the shipped model)")
    p.add_argument("--batch", type=int, default=16, help="sequences in the run figure (default 16)")
    p.add_argument("--steps", type=int, default=1000, help="steps per sequence (default 1000)")
    p.add_argument("--budget", type=float, default=1.0, help="seconds spent per figure (default 1)")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.set_defaults(func=_bench)


# --- convert --------------------------------------------------------------------------------


def _parse_constant(text: str):
    """``NAME=VALUE`` -> (name, value); VALUE is JSON (a number or a list), else a string."""
    import json

    name, sep, value = text.partition("=")
    if not sep or not name:
        raise InputError(f"--constant must be NAME=VALUE, found {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def _convert(args) -> int:
    def stage(msg):
        print(msg, file=sys.stderr, flush=True)

    try:
        import tinyrnn_converters  # noqa: F401
    except ImportError:  # pragma: no cover - the package ships with tinyrnn
        raise InputError("tinyrnn convert needs tinyrnn_converters (pip install 'tinyrnn[onnx,torch]')") from None
    src = args.input
    if not os.path.isfile(src):
        from .errors import ModelNotFoundError

        raise ModelNotFoundError(f"cannot open {src!r}: no such file")
    ext = os.path.splitext(src)[1].lower()
    constants = dict(_parse_constant(c) for c in args.constant or [])
    torch_flags = {"rnn_nonlinearity": args.rnn_nonlinearity, "head_activation": args.head_activation,
                   "head_order": args.head_order.split(",") if args.head_order else None}
    if ext == ".onnx":
        if any(v is not None for v in torch_flags.values()):
            raise InputError("--rnn-nonlinearity, --head-order and --head-activation apply to .pt checkpoints only")
        stage(f"[1/3] reading ONNX model {src}")
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise InputError("converting ONNX needs the onnx package (pip install 'tinyrnn[onnx]')") from None
        from tinyrnn_converters import from_onnx

        model = from_onnx(src, constants=constants or None)
    elif ext in (".pt", ".pth", ".bin", ".ckpt"):
        if constants:
            raise InputError("--constant applies to ONNX models only")
        stage(f"[1/3] reading PyTorch state_dict {src} (weights_only=True)")
        try:
            import torch  # noqa: F401
        except ImportError:
            raise InputError("converting a checkpoint needs torch (pip install 'tinyrnn[torch]')") from None
        from tinyrnn_converters import load_checkpoint

        model = load_checkpoint(src, **torch_flags)
    else:
        raise InputError(f"convert reads .onnx models and .pt state_dicts, found {src!r}")
    model.metadata["source"] = os.path.basename(src)
    stage(f"[2/3] converted: {len(model.layers)} layers")
    if args.quantize:
        stage(f"      quantizing to {args.quantize}")
        model = model.quantize(args.quantize)
    stage(f"[3/3] writing {args.output}")
    model.save(args.output)
    print(model)
    print(f"{src} -> {args.output}: {len(model.layers)} layers, {model.num_params():,} parameters, "
          f"{os.path.getsize(args.output):,} bytes")
    return 0


def _add_convert(sub) -> None:
    from . import spec

    p = sub.add_parser("convert", help="convert an ONNX model or a PyTorch state_dict into a .trnn file",
                       description="Convert IN (.onnx, or a .pt state_dict read with weights_only=True) into a "
                                   ".trnn model, optionally quantized.")
    p.add_argument("input", help="the model to convert (.onnx or .pt)")
    p.add_argument("--output", "-o", required=True, help="where to write the .trnn file")
    p.add_argument("--quantize", choices=sorted(spec.QUANT_SCHEMES), help="store the weights as int8 or fp16")
    p.add_argument("--constant", action="append", metavar="NAME=VALUE",
                   help="bind an ONNX input to a constant (repeatable), e.g. --constant sr=16000")
    p.add_argument("--rnn-nonlinearity", choices=["tanh", "relu"],
                   help="(.pt) the nonlinearity of an nn.RNN, which a state_dict does not record")
    p.add_argument("--head-order", help="(.pt) comma-separated prefixes of the linear heads, in the order they apply")
    p.add_argument("--head-activation", help="(.pt) activation between linear heads (relu, tanh, ..., or none)")
    p.set_defaults(func=_convert)


# --- entry point ----------------------------------------------------------------------------

SUBCOMMANDS = [_add_info, _add_convert, _add_run, _add_quantize, _add_bench]


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
