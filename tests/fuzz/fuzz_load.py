"""Coverage-guided fuzzing of ``tinyrnn.loads`` with atheris (libFuzzer for Python).

Opt-in, not part of the test suite's default run::

    pip install atheris            # Python <= 3.11 wheels; the [fuzz] extra
    python tests/fuzz/fuzz_load.py -max_total_time=300          # 5 minutes
    python tests/fuzz/fuzz_load.py -runs=20000 CORPUS_DIR       # keep and grow a corpus

or ``pytest -m slow tests/test_format_fuzz.py`` (TINYRNN_FUZZ_SECONDS, default 120).

Each input is either a whole file (first byte even) or, to reach past the JSON parser
more often, a list of edits applied to the header of a valid sample file (first byte odd).
The rule checked is ``tests/hostile.py``'s: refused with ModelFormatError, or a model that
runs. Anything else raises and libFuzzer stops with the input saved as ``crash-*`` in
``-artifact_prefix`` (default: the current directory). Only tinyrnn's front end (format,
layers, model, stream) is instrumented: instrumenting the kernels' bytecode would stop
numba from compiling them.
"""

from __future__ import annotations

import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: hostile, builders, oracle

import atheris  # noqa: E402

with atheris.instrument_imports(include=["tinyrnn"], exclude=["tinyrnn.backends", "tinyrnn.cells",
                                                             "tinyrnn._cache"]):
    import tinyrnn  # noqa: F401

import hostile  # noqa: E402

SAMPLES = hostile.sample_files()
NAMES = sorted(SAMPLES)
PARTS = {k: hostile.split(v) for k, v in SAMPLES.items()}


def _value(fdp: atheris.FuzzedDataProvider):
    kind = fdp.ConsumeIntInRange(0, 7)
    if kind == 0:
        return fdp.ConsumeInt(9)
    if kind == 1:
        return fdp.ConsumeIntInRange(-2, 2**25)
    if kind == 2:
        return fdp.ConsumeFloat()
    if kind == 3:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12))
    if kind == 4:
        return [fdp.ConsumeIntInRange(-2, 64) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    if kind == 5:
        return None
    if kind == 6:
        return fdp.ConsumeBool()
    return {}


def structured(data: bytes) -> bytes:
    import copy

    fdp = atheris.FuzzedDataProvider(data)
    header, arch, blob = copy.deepcopy(PARTS[NAMES[fdp.ConsumeIntInRange(0, len(NAMES) - 1)]])
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        root = arch if fdp.ConsumeBool() else header
        spots = hostile.paths(root)
        if not spots:
            break
        path = spots[fdp.ConsumeIntInRange(0, len(spots) - 1)]
        try:
            hostile.set_path(root, path, _value(fdp), delete=fdp.ConsumeIntInRange(0, 9) == 0)
        except (IndexError, KeyError, TypeError):
            pass
    cut = fdp.ConsumeIntInRange(-16, 16)
    blob = blob[:cut] if cut < 0 else blob + b"\0" * cut
    return hostile.join(header, arch, blob)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    raw = data[1:] if data[0] % 2 == 0 else structured(data[1:])
    hostile.check_bytes(raw)


def main(argv: list[str]) -> None:
    args = list(argv)
    if not [a for a in args[1:] if not a.startswith("-")]:
        # no corpus given: start from the valid samples (whole-file mode)
        corpus = tempfile.mkdtemp(prefix="tinyrnn-fuzz-")
        for name, raw in SAMPLES.items():
            with open(os.path.join(corpus, name), "wb") as f:
                f.write(b"\0" + raw)
        # and seeds for the structured mode: edit scripts drawn from fixed bytes
        for i in range(16):
            with open(os.path.join(corpus, f"edits{i}"), "wb") as f:
                f.write(bytes([1]) + bytes((i * 37 + k * 11) % 256 for k in range(64)))
        args.append(corpus)
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
