"""The ``.trnn`` file: a safetensors file whose metadata carries the architecture.

Layout (safetensors' own)::

    8 bytes    N, little-endian uint64: length of the JSON header
    N bytes    JSON: {"<layer>.<param>": {"dtype": "F32", "shape": [...], "data_offsets": [a, b]},
                      ..., "__metadata__": {"tinyrnn": "<architecture JSON as a string>"}}
               padded with spaces to a multiple of 8
    rest       tensor bytes, little-endian, tensor i at [a, b) from the end of the header

Tensors are written widest dtype first, so every tensor starts aligned to its own element
size and is memory-mapped in place (no copy). Reading uses numpy and the standard library
only, and checks the whole file before building a model: header size, JSON, every dtype,
shape and offset, that the tensors tile the data exactly, the format version, and then
(in ``Model.from_architecture``) every tensor against the architecture. Any problem is a
``ModelFormatError`` that says what is wrong.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from pathlib import Path

import numpy as np

from . import spec
from .errors import ModelFormatError, ModelNotFoundError

HEADER_LIMIT = 100 * 1024 * 1024  # safetensors' own bound on the JSON header
MAX_TENSORS = 100_000
# No tensor has more elements than this, even counting the sizes of an empty tensor's
# other axes: numpy cannot even describe some such shapes (2^70 x 0), and no model needs them.
MAX_ELEMENTS = 1 << 48
_DTYPE_NAMES = {np.dtype(v).newbyteorder("<").str if np.dtype(v).itemsize > 1 else np.dtype(v).str: k
                for k, v in spec.SAFETENSORS_DTYPES.items()}


# --- writing ----------------------------------------------------------------------------


def _st_dtype(arr: np.ndarray) -> str:
    key = arr.dtype.newbyteorder("<").str if arr.dtype.itemsize > 1 else arr.dtype.str
    if key not in _DTYPE_NAMES:
        raise ModelFormatError(f"tensors of dtype {arr.dtype} cannot be stored in a .trnn file")
    return _DTYPE_NAMES[key]


def _layout(model) -> tuple[bytes, list[np.ndarray]]:
    """The header bytes (length prefix included) and the tensors in file order."""
    from .model import architecture_json

    tensors = model.tensors()
    names = sorted(tensors, key=lambda k: (-tensors[k].dtype.itemsize, k))
    header: dict = {"__metadata__": {spec.METADATA_KEY: architecture_json(model)}}
    offset = 0
    arrays = []
    for name in names:
        arr = np.ascontiguousarray(tensors[name])
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        header[name] = {"dtype": _st_dtype(arr), "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        arrays.append(arr)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, arrays


def dumps(model) -> bytes:
    """The ``.trnn`` bytes of ``model``."""
    head, arrays = _layout(model)
    return b"".join([head, *(a.tobytes() for a in arrays)])


def save(model, path) -> None:
    """Write ``model`` to ``path`` (written to a temporary file, then renamed into place)."""
    path = Path(path)
    head, arrays = _layout(model)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(head)
        for a in arrays:
            f.write(memoryview(a).cast("B") if a.size else b"")
    os.replace(tmp, path)


# --- reading ----------------------------------------------------------------------------


def load(path) -> "Model":  # noqa: F821
    """Read and validate a ``.trnn`` file, memory-mapping its tensors.

    Raises ``ModelNotFoundError`` if the file cannot be opened and ``ModelFormatError`` if
    it is not a valid tinyrnn model (the message names the first problem found).
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ModelNotFoundError(f"cannot open model file {str(path)!r}: {e.strerror or e}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise ModelFormatError(f"{path}: {size} bytes is too short for a .trnn file (it starts with an "
                                   f"8-byte header length)")
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return _parse(buf, str(path))


def loads(data: bytes) -> "Model":  # noqa: F821
    """Read and validate a model from ``.trnn`` bytes (see ``load``)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ModelFormatError(f"expected the bytes of a .trnn file, found {type(data).__name__}")
    return _parse(memoryview(data).toreadonly() if not isinstance(data, bytes) else data, "<bytes>")


def read_header(buf, source: str = "<bytes>") -> tuple[dict, dict, int]:
    """Parse and check the safetensors header of ``buf``.

    Returns ``(entries, metadata, data_start)`` where entries maps tensor names to
    ``(numpy dtype, shape, begin, end)`` with offsets relative to ``data_start``.
    """
    size = len(buf)
    if size < 8:
        raise ModelFormatError(f"{source}: {size} bytes is too short for a .trnn file")
    n = struct.unpack("<Q", bytes(buf[:8]))[0]
    if n < 2 or n > HEADER_LIMIT or 8 + n > size:
        raise ModelFormatError(f"{source}: header length {n} is impossible for a file of {size} bytes "
                               f"(truncated, or not a safetensors file)")
    try:
        header = json.loads(bytes(buf[8:8 + n]).decode("utf-8"), object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        raise ModelFormatError(f"{source}: header names {e.args[0]!r} twice (which one is meant?)") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ModelFormatError(f"{source}: header is not valid UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise ModelFormatError(f"{source}: header must be a JSON object, found {type(header).__name__}")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and (not isinstance(metadata, dict)
                                 or not all(isinstance(v, str) for v in metadata.values())):
        raise ModelFormatError(f"{source}: __metadata__ must map names to strings")
    if len(header) > MAX_TENSORS:
        raise ModelFormatError(f"{source}: {len(header)} tensors; at most {MAX_TENSORS} are read")
    data_len = size - 8 - n
    entries = {}
    for name, e in header.items():
        entries[name] = _check_entry(name, e, data_len, source)
    spans = sorted((b, e, name) for name, (_, _, b, e) in entries.items())
    pos = 0
    for b, e, name in spans:
        if b != pos:
            what = "overlaps the tensor before it" if b < pos else f"leaves a gap of {b - pos} bytes before it"
            raise ModelFormatError(f"{source}: tensor {name!r} at bytes [{b}, {e}) {what}")
        pos = e
    if pos != data_len:
        raise ModelFormatError(f"{source}: tensors cover {pos} bytes but the file holds {data_len} bytes of "
                               f"data (truncated or padded)")
    return entries, metadata or {}, 8 + n


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list) -> dict:
    # json keeps the last of two equal keys; in a header that is ambiguity a hostile file
    # could use (two different answers for one tensor), so it is refused
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return out


def _check_entry(name, e, data_len: int, source: str):
    if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
        raise ModelFormatError(f"{source}: tensor {name!r} must have exactly dtype, shape and data_offsets")
    dt = e["dtype"]
    if not isinstance(dt, str) or dt not in spec.SAFETENSORS_DTYPES:
        raise ModelFormatError(f"{source}: tensor {name!r} has dtype {dt!r}; readable: "
                               f"{sorted(spec.SAFETENSORS_DTYPES)}")
    shape = e["shape"]
    if (not isinstance(shape, list) or len(shape) > 8
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape)):
        raise ModelFormatError(f"{source}: tensor {name!r} shape must be a list of at most 8 non-negative "
                               f"integers, found {shape!r}")
    if math.prod(max(s, 1) for s in shape) > MAX_ELEMENTS:
        raise ModelFormatError(f"{source}: tensor {name!r} has shape {shape}: more than 2^48 elements "
                               f"(counting every nonzero axis) is not a real tensor")
    offs = e["data_offsets"]
    if (not isinstance(offs, list) or len(offs) != 2
            or any(isinstance(o, bool) or not isinstance(o, int) for o in offs)):
        raise ModelFormatError(f"{source}: tensor {name!r} data_offsets must be [begin, end], found {offs!r}")
    b, end = offs
    if not 0 <= b <= end <= data_len:
        raise ModelFormatError(f"{source}: tensor {name!r} bytes [{b}, {end}) lie outside the file's "
                               f"{data_len} data bytes")
    dtype = np.dtype(spec.SAFETENSORS_DTYPES[dt])
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != end - b:
        raise ModelFormatError(f"{source}: tensor {name!r} of shape {shape} and dtype {dt} needs {nbytes} "
                               f"bytes, its offsets span {end - b}")
    return dtype, tuple(shape), b, end


def _parse(buf, source: str):
    from .model import Model

    entries, metadata, start = read_header(buf, source)
    if spec.METADATA_KEY not in metadata:
        raise ModelFormatError(f"{source}: a safetensors file without tinyrnn metadata (__metadata__"
                               f"[{spec.METADATA_KEY!r}] is missing): not a tinyrnn model. Convert it with a "
                               f"tinyrnn converter")
    try:
        arch = json.loads(metadata[spec.METADATA_KEY], object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        raise ModelFormatError(f"{source}: the tinyrnn metadata names {e.args[0]!r} twice in one object "
                               f"(which one is meant?)") from None
    except (ValueError, RecursionError) as e:
        raise ModelFormatError(f"{source}: the tinyrnn metadata is not valid JSON ({e})") from None
    if not isinstance(arch, dict):
        raise ModelFormatError(f"{source}: the tinyrnn metadata must be a JSON object")
    version = arch.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFormatError(f"{source}: format_version must be a positive integer, found {version!r}")
    if version > spec.FORMAT_VERSION:
        raise ModelFormatError(f"{source}: written in .trnn format {version}, newer than this tinyrnn reads "
                               f"(up to {spec.FORMAT_VERSION}); upgrade tinyrnn")
    tensors = {}
    for name, (dtype, shape, b, e) in entries.items():
        offset = start + b
        count = (e - b) // dtype.itemsize
        arr = np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(shape)
        if offset % dtype.itemsize:
            arr = arr.copy()  # written by another tool without alignment: copy once
        tensors[name] = arr
    try:
        return Model.from_architecture(arch, tensors)
    except ModelFormatError as e:
        raise ModelFormatError(f"{source}: {e}") from None
