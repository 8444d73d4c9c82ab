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


def _many_files(args) -> bool:
    """True for the many-files form: a pattern or folder in, a folder out, or a cluster named."""
    many = (any(c in args.input for c in "*?[") or os.path.isdir(args.input) or os.path.isdir(args.output)
            or args.output.endswith(("/", os.sep)))
    if not many and (args.scheduler is not None or args.workers):
        raise InputError(f"--workers and --scheduler run many files: give --input a quoted pattern or folder "
                         f"and --output a folder, found --input {args.input!r} --output {args.output!r}")
    return many


def _run(args) -> int:
    import numpy as np

    from .batching import check_batch_size, check_reduce, reduce_output

    check_reduce(args.reduce)
    check_batch_size(args.batch_size)
    model = _load_model(args.model)
    if _many_files(args):
        return _run_files(args, model)
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
    if args.reduce is not None:
        from .stream import check_input

        _, batched = check_input(model, x, block=True)
        if not batched:
            y = reduce_output(y, args.reduce)
        else:
            lens = [y.shape[1]] * len(y) if lengths is None else np.asarray(lengths).tolist()
            y = np.stack([reduce_output(y[i, :n], args.reduce) for i, n in enumerate(lens)]) if len(y) else \
                np.zeros((0, *model.output_shape), np.float32)
    np.save(args.output, y)
    print(f"{args.input} {tuple(x.shape)} -> {args.output} {tuple(y.shape)}", file=sys.stderr)
    return 0


def _input_files(pattern: str) -> list[str]:
    import glob

    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, "*.npy")
    paths = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    if not paths:
        raise InputError(f"no input files match {pattern!r}")
    return [os.path.abspath(p) for p in paths]


def _output_pairs(paths: list[str], out_dir: str) -> list[tuple[str, str]]:
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputError(f"--output {out_dir!r} must be a folder when there are many inputs; it is a file")
    out_dir = os.path.abspath(out_dir)
    pairs, seen = [], {}
    for p in paths:
        dst = os.path.join(out_dir, os.path.basename(p))
        if dst in seen:
            raise InputError(f"inputs {seen[dst]!r} and {p!r} would both write {dst!r}; give inputs with "
                             f"distinct file names")
        if dst == p:
            raise InputError(f"output {dst!r} would overwrite its input; choose another --output folder")
        seen[dst] = p
        pairs.append((p, dst))
    os.makedirs(out_dir, exist_ok=True)
    return pairs


def _cluster_args(args) -> dict:
    """``{"workers": N}`` or ``{"scheduler": ADDR}``; workers default to the CPU count."""
    if args.scheduler is not None:
        return {"scheduler": args.scheduler}
    workers = args.workers if args.workers is not None else max(1, os.cpu_count() or 1)
    if workers < 0:
        raise InputError(f"--workers must be >= 0 (0: run in this process without Dask), found {workers}")
    return {"workers": workers}


def _show_progress(args) -> bool:
    return sys.stderr.isatty() if args.progress is None else args.progress


def _dask_job(args, model, build, inputs: list, per_task: int):
    """Run ``build(model, bag_or_items, ...)`` on the cluster the arguments name; returns the
    computed list. ``inputs`` are split into about ``per_task``-item partitions, at least
    four per worker thread so every worker keeps busy and a lost task costs little."""
    from . import dask as tdask

    with tdask.connect(**_cluster_args(args)) as client:
        threads = max(1, sum(client.nthreads().values()))
        nparts = max(1, min(len(inputs), max(4 * threads, -(-len(inputs) // per_task))))
        job = build(model, inputs, nparts)
        return tdask.compute(client, job, progress=_show_progress(args))


def _run_files(args, model) -> int:
    from . import dask as tdask

    pairs = _output_pairs(_input_files(args.input), args.output)
    if args.workers == 0 and args.scheduler is None:
        done = tdask.run_files(model, pairs, args.reduce, args.batch_size)
    else:
        done = _dask_job(args, model, lambda m, items, n: tdask.files(m, items, args.reduce, args.batch_size, n),
                         pairs, per_task=64)
    for src, dst, shape_in, shape_out in done:
        print(f"{src} {shape_in} -> {dst} {shape_out}", file=sys.stderr)
    print(f"{len(done)} files -> {os.path.abspath(args.output)}", file=sys.stderr)
    return 0


def _add_cluster_options(p) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, help="start a local Dask cluster of N worker processes (default: one per "
                                               "CPU; 0 runs in this process without Dask)")
    g.add_argument("--scheduler", help="address of a running Dask scheduler, tcp://HOST:PORT")
    p.add_argument("--batch-size", type=int, default=64,
                   help="sequences of similar length run together in one call (default 64)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="draw Dask's progress bar on stderr (default: when stderr is a terminal)")


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run a model over input arrays (.npy) and save the outputs",
                       description="One file: --input IN.npy --output OUT.npy. Many files, on Dask: --input "
                                   "'dir/*.npy' (or a folder) --output DIR writes DIR/<name>.npy for each input; "
                                   "each file holds one sequence (T, F) / (T,) or a batch (B, T, F) / (B, T).")
    p.add_argument("model", help="path to a .trnn file")
    p.add_argument("--input", "-i", required=True,
                   help="input .npy: (T, F) / (B, T, F) floats or (T,) / (B, T) ids; or a quoted pattern or folder")
    p.add_argument("--output", "-o", required=True, help="where to write the outputs (.npy, or a folder)")
    p.add_argument("--lengths", help="optional .npy of per-sequence lengths (B,) for a padded batch (one file)")
    p.add_argument("--reduce", choices=["last", "mean"],
                   help="keep only each sequence's last step, or the mean over its steps (default: every step)")
    _add_cluster_options(p)
    p.set_defaults(func=_run)


# --- score ----------------------------------------------------------------------------------


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path!r} as UTF-8 text: {e}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line does not start another
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _score(args) -> int:
    import math

    from .batching import bits_per_character, check_batch_size, line_bits

    check_batch_size(args.batch_size)
    model = _load_model(args.model)
    line_bits(model)  # refuse a model that is not a text model before reading the corpus
    lines = _read_lines(args.text)
    if args.workers == 0 and args.scheduler is None:
        pairs = bits_per_character(model, lines, args.batch_size, first=1)  # errors name lines from 1
    else:
        from . import dask as tdask

        def build(m, items, n):
            import dask.bag as db

            return tdask.line_bits(m, db.from_sequence(items, npartitions=n), args.batch_size)

        pairs = _dask_job(args, model, build, lines, per_task=2048)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for bits, chars in pairs:
            out.write(f"{bits / chars:.6f}\n" if chars else "nan\n")
    finally:
        if args.output:
            out.close()
    bits = sum(b for b, _ in pairs)
    chars = sum(c for _, c in pairs)
    overall = f"{bits / chars:.4f} bits per character" if chars else "nothing to predict"
    print(f"{args.text}: {len(lines):,} lines, {chars:,} characters scored: {overall}"
          + ("" if chars == 0 else f" ({bits / math.log2(math.e) / chars:.4f} nats)"), file=sys.stderr)
    return 0


def _add_score(sub) -> None:
    p = sub.add_parser("score", help="bits per character of each line of a text file under a text model",
                       description="Prints one number per line of TEXT: the model's cross-entropy in bits "
                                   "per character of that line (each character predicted from the ones "
                                   "before it, after a line break when the vocabulary has one; 'nan' for a "
                                   "line with nothing to predict), then the corpus total on stderr. Runs "
                                   "on Dask like 'tinyrnn run' with many files.")
    p.add_argument("model", help="path to a .trnn text model (with a vocabulary)")
    p.add_argument("text", help="UTF-8 text file, one item per line")
    p.add_argument("--output", "-o", help="write the per-line numbers here instead of stdout")
    _add_cluster_options(p)
    p.set_defaults(func=_score)


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


# --- generate -------------------------------------------------------------------------------


# Seconds the first token may take before ``generate`` says that it is compiling. A warm
# start gives it in well under a second; a first run compiles for ~20 s, and without a word
# the command would sit there looking hung.
COMPILE_NOTICE_AFTER = 1.5


def _first_piece(pieces) -> list[str]:
    """The first piece of ``pieces`` (an empty list when there is none).

    Its stream is built (on a first run: compiled) while it is computed; if that takes
    longer than ``COMPILE_NOTICE_AFTER`` seconds, a line on stderr says so, before the
    caller prints anything.
    """
    import itertools
    import threading

    notice = threading.Timer(COMPILE_NOTICE_AFTER, lambda: print(
        "tinyrnn: compiling kernels for this machine (the first run only; cached afterwards) ...",
        file=sys.stderr, flush=True))
    notice.daemon = True
    notice.start()
    try:
        return list(itertools.islice(pieces, 1))
    finally:
        notice.cancel()


def _generate(args) -> int:
    import itertools
    import time

    from .generate import default_model, generate

    t0 = time.perf_counter()
    model = _load_model(args.model) if args.model else default_model()
    pieces = generate(model, args.prompt, max_tokens=args.n, temperature=args.temperature,
                      top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    t1 = time.perf_counter()
    first = _first_piece(pieces)
    t_first = time.perf_counter()
    out = sys.stdout
    out.write(args.prompt)
    out.flush()
    count = 0
    for piece in itertools.chain(first, pieces):
        out.write(piece)
        out.flush()
        count += 1
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

SUBCOMMANDS = [_add_info, _add_generate, _add_convert, _add_run, _add_score, _add_quantize, _add_bench]


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
