"""Damaged and hostile .trnn files, generated: every one is refused with ModelFormatError or
loads into a model that runs cleanly (tests/hostile.py states the rule).

Cut at every byte and flip every header byte exhaustively; let hypothesis mutate the
header JSON (any node replaced by a hostile value or deleted, offsets shuffled, data cut
or padded). Example counts are bounded so the suite stays fast; set
TINYRNN_FUZZ_EXAMPLES=2000 (say) for a longer search, or run the atheris target
(tests/fuzz/fuzz_load.py) for a coverage-guided one.
"""

from __future__ import annotations

import copy
import functools
import os
import struct

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import hostile  # noqa: E402
import tinyrnn  # noqa: E402

EXAMPLES = int(os.environ.get("TINYRNN_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@functools.lru_cache(maxsize=None)
def files() -> dict[str, bytes]:
    return hostile.sample_files()


NAMES = sorted(files())


def test_the_sample_files_load_and_run():
    for name, raw in files().items():
        assert hostile.check_bytes(raw) == "loaded", name


@pytest.mark.parametrize("name", NAMES)
def test_cut_at_every_byte(name):
    raw = files()[name]
    for cut in range(len(raw)):
        with pytest.raises(tinyrnn.ModelFormatError):
            tinyrnn.loads(raw[:cut])


@pytest.mark.parametrize("name", NAMES)
def test_every_header_byte_flipped(name):
    """Each byte of the length prefix and JSON header xor-ed with 0x01 and with 0x80."""
    raw = files()[name]
    n = struct.unpack("<Q", raw[:8])[0]
    outcomes = {"refused": 0, "loaded": 0}
    for pos in range(8 + n):
        for mask in (0x01, 0x80):
            bad = bytearray(raw)
            bad[pos] ^= mask
            outcomes[hostile.check_bytes(bytes(bad))] += 1
    # most flips break the JSON or a name; a few land in free text (metadata, a float)
    assert outcomes["refused"] > outcomes["loaded"] > 0


def test_the_command_line_reports_a_damaged_file_in_one_line(tmp_path, capsys):
    from tinyrnn.cli import main

    raw = files()["text"]
    path = tmp_path / "cut.trnn"
    path.write_bytes(raw[:len(raw) // 2])
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tinyrnn info: error: ") and "truncated" in err and "\n" not in err


# --- hypothesis: structured lies -----------------------------------------------------------

HOSTILE_VALUES = st.one_of(
    st.integers(-2**70, 2**70),
    st.sampled_from([0, 1, -1, 2, 3, 4, 5, 8, 10**12, 2**24, 2**24 + 1, 2**31, 2**63, 2**64 - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["F32", "F16", "I8", "I64", "U8", "BF16", "F64", "float32", "int8", "float16",
                     "lstm", "gru", "rnn", "dense", "embedding", "softmax", "activation",
                     "bidirectional", "reverse", "tanh", "relu", "input", "emb", "lstm", "head"]),
    st.none(),
    st.booleans(),
    st.lists(st.integers(-3, 2**40), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@FUZZ
@given(name=st.sampled_from(NAMES), where=st.integers(0, 10**6), value=HOSTILE_VALUES,
       delete=st.booleans(), in_arch=st.booleans())
def test_one_header_node_lies(name, where, value, delete, in_arch):
    header, arch, data = hostile.split(files()[name])
    root = {"h": header, "a": arch}["a" if in_arch else "h"]
    spots = hostile.paths(root)
    if not spots:  # a model without tensors has an empty header
        return
    path = spots[where % len(spots)]
    try:
        hostile.set_path(root, path, value, delete=delete)
    except (IndexError, KeyError, TypeError):
        return
    hostile.check_bytes(hostile.join(header, arch, data))


@FUZZ
@given(name=st.sampled_from(NAMES), edits=st.lists(st.tuples(st.booleans(), st.integers(0, 10**6), HOSTILE_VALUES),
                                                  min_size=2, max_size=6),
       cut=st.integers(-64, 64), keep_meta=st.booleans())
def test_many_lies_and_a_cut(name, edits, cut, keep_meta):
    header, arch, data = hostile.split(files()[name])
    for in_arch, where, value in edits:
        root = arch if in_arch else header
        spots = hostile.paths(root)
        if not spots:
            break
        try:
            hostile.set_path(root, spots[where % len(spots)], copy.deepcopy(value))
        except (IndexError, KeyError, TypeError):
            pass
    data = data[:cut] if cut < 0 else data + b"\0" * cut
    hostile.check_bytes(hostile.join(header, arch, data, metadata=keep_meta))


@FUZZ
@given(name=st.sampled_from(NAMES), perm=st.randoms(use_true_random=False))
def test_offsets_shuffled_between_tensors(name, perm):
    """Tensors trading byte ranges: shapes then disagree with spans, or dtypes/shapes with
    the architecture. (A swap of two same-shape tensors is a valid, different model.)"""
    header, arch, data = hostile.split(files()[name])
    names = sorted(header)
    offsets = [header[k]["data_offsets"] for k in names]
    perm.shuffle(offsets)
    for k, o in zip(names, offsets):
        header[k]["data_offsets"] = o
    hostile.check_bytes(hostile.join(header, arch, data))


@FUZZ
@given(name=st.sampled_from(NAMES), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)),
                                                   min_size=1, max_size=8))
def test_random_byte_flips_anywhere(name, flips):
    raw = bytearray(files()[name])
    for pos, mask in flips:
        raw[pos % len(raw)] ^= mask
    hostile.check_bytes(bytes(raw))


# --- coverage-guided fuzzing (opt-in) ------------------------------------------------------


@pytest.mark.slow
def test_atheris_fuzz_target_runs_clean(tmp_path):
    """Drive tests/fuzz/fuzz_load.py for TINYRNN_FUZZ_SECONDS (default 120); any input that
    breaks the rule stops libFuzzer with a crash file, and this test shows its output."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("atheris")
    seconds = int(os.environ.get("TINYRNN_FUZZ_SECONDS", "120"))
    target = Path(__file__).parent / "fuzz" / "fuzz_load.py"
    art = tmp_path / "artifacts"
    art.mkdir()
    proc = subprocess.run([sys.executable, str(target), f"-max_total_time={seconds}",
                           f"-artifact_prefix={art}/"], capture_output=True, text=True,
                          timeout=seconds + 600, cwd=tmp_path)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0 and not list(art.iterdir()), tail
    assert "Done" in tail, tail
