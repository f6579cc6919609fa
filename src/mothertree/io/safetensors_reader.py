"""``.safetensors`` checkpoints: one file, a model folder, or shards listed by ``*.safetensors.index.json``.

A safetensors file is an 8-byte little-endian header length, a JSON header (``{name: {dtype, shape,
data_offsets}}`` plus an optional ``__metadata__``), then the tensors' bytes. Opening parses every header
itself, so that a bad file is reported by name with what is wrong with it (safetensors' own errors say
"header too large" for an HTML page), then lets ``safe_open`` validate the rest. Reading seeks to a
tensor's byte range in the one shard file held open and views the bytes through numpy (bf16 widened by a
shift, float8 through ``ml_dtypes``).
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from ..errors import (
    CheckpointNotFoundError,
    InvalidCheckpointError,
    LimitExceededError,
    UnsupportedFormatError,
)
from ._files import (
    SAFETENSORS_SUFFIX,
    looks_like_a_failed_download,
    shown,
)
from ._guards import boundary_of, open_regular, os_error, parse_json
from ._layout import locate_weights, tensors_by_shard
from .quantized import StoredTensorsCheckpoint
from .types import TensorInfo

# safetensors itself refuses headers above 100 MB; a length beyond that means the file is something else.
_MAX_HEADER_BYTES = 100_000_000
_DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}
# safetensors stores little-endian data; every dtype mothertree reads, as numpy sees it.
_NUMPY_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# numpy has no float8: ml_dtypes adds it, at the cost of most of a second of import, so only when a
# checkpoint holds one. bfloat16, the common case, needs no library: it is the upper half of a float32.
_ML_DTYPES = {"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
_BF16_BITS = np.dtype("<u2")


def numpy_dtype(name: str) -> np.dtype | None:
    """numpy's view of safetensors dtype ``name`` (BF16: its raw 16 bits, ``as_float32`` widens them);
    None for one mothertree cannot read."""
    if name == "BF16":
        return _BF16_BITS
    if name in _ML_DTYPES:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, _ML_DTYPES[name]))
    return _NUMPY_DTYPES.get(name)


def as_float32(array: np.ndarray, name: str) -> np.ndarray:
    """Values viewed as ``numpy_dtype(name)``, as float32 (exact for every float dtype up to 32 bits)."""
    if name == "BF16":
        return widen_bf16(array)
    return array if array.dtype == np.float32 else array.astype(np.float32)


def widen_bf16(bits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The float32 values of bfloat16 ``bits`` (16-bit integers): a bfloat16 is a float32's upper half.
    Into ``out`` (float32, as many values) where given."""
    widened = np.left_shift(
        bits.view(np.uint16), np.uint32(16), out=None if out is None else out.view(np.uint32), dtype=np.uint32
    )
    return widened.view(np.float32)


# The opener of tensor data files; a name of its own so that tests can count open handles.
open_shard_file = open_regular
# No real checkpoint file comes near this (the largest hub models hold a few thousand tensors per shard).
MAX_TENSORS = 100_000

_UNCONVERTIBLE = frozenset({"F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"})


@dataclass(frozen=True)
class HeaderEntry:
    """One tensor as a safetensors header describes it; ``start``/``end`` are byte offsets in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def read_header(path: Path, boundary: Path | None = None) -> list[HeaderEntry]:
    """Parse and check a safetensors header, reading no tensor data; entries in storage (offset) order.

    Raises:
        InvalidCheckpointError: the file is not a safetensors file, is truncated, or its header is malformed
            (LimitExceededError: it lists more than ``MAX_TENSORS`` tensors).
        NotARegularFileError, OutsideInputError, UnreadableFileError: see ``_guards.open_regular``.
    """
    with open_regular(path, boundary) as file:
        try:
            size = os.fstat(file.fileno()).st_size
            prefix = file.read(8)
            if size < 8:
                why = "it is empty" if size == 0 else f"it is only {size} bytes long"
                raise _not_safetensors(path, why)
            (length,) = struct.unpack("<Q", prefix)
            if length > _MAX_HEADER_BYTES or length < 2:
                raise _not_safetensors(
                    path, _guess_what(prefix, "its first 8 bytes are not a plausible header length")
                )
            raw = file.read(length)
        except OSError as exc:
            raise os_error(path, exc) from None
    if raw and not raw.startswith(b"{"):
        raise _not_safetensors(path, _guess_what(prefix, "its header is not a JSON object"))
    if len(raw) < length:
        raise InvalidCheckpointError(
            f"{shown(path)} is truncated: header says it is {length} bytes long, file has {len(raw)}",
            path=path,
        )
    # Counted before parsing: a crafted header of a million empty tensors costs minutes downstream.
    listed = raw.count(b'"data_offsets"')
    if listed > MAX_TENSORS:
        raise LimitExceededError(
            f"{shown(path)} lists {listed:,} tensors; mothertree reads at most {MAX_TENSORS:,} per file",
            path=path,
        )
    header = parse_json(
        raw, path, "a safetensors file", hint=_RESAVE_HINT, invalid="its header is not valid JSON"
    )
    if not isinstance(header, dict):
        raise _not_safetensors(path, "its header is not a JSON object")

    data_start = 8 + length
    entries = []
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (begin, end) = _parse_entry(path, name, spec)
        entries.append(HeaderEntry(name, dtype, shape, data_start + begin, data_start + end))
    entries.sort(key=lambda entry: (entry.start, entry.name))

    claimed = max((entry.end for entry in entries), default=data_start) - data_start
    present = size - data_start
    if claimed > present:
        raise InvalidCheckpointError(
            f"{shown(path)} is truncated: header says {claimed} bytes of tensor data, file has {present}",
            path=path,
        )
    if claimed < present:
        # safe_open refuses such files ("file not fully covered"); name the cause instead.
        raise InvalidCheckpointError(
            f"{shown(path)} is corrupt: header says {claimed} bytes of tensor data, file has {present}",
            path=path,
        )
    return entries


class SafetensorsCheckpoint(StoredTensorsCheckpoint):
    """A safetensors checkpoint, opened lazily.

    ``path`` may be a ``.safetensors`` file, a ``*.safetensors.index.json`` shard index, or a folder holding
    either (``model.safetensors.index.json``, then ``model.safetensors``, then any other index, then the
    folder's only ``.safetensors`` file). Opening reads the index, checks that every shard it names exists,
    then parses and checks every shard's header; no tensor data is read until ``read``.

    With an index, the index decides which shard a tensor is read from (tensors a shard holds but the index
    does not name are ignored, as transformers ignores them).

    Attributes:
        path: what was opened.
        shards: the files read, in order (one unless sharded).
    """

    format = "safetensors"

    def __init__(self, path: str | Path, *, boundary: Path | None = None) -> None:
        self.path = Path(path)
        self._handle: BufferedReader | None = None
        self._handle_shard: int | None = None
        self._boundary = boundary if boundary is not None else boundary_of(self.path)
        index, shards, weight_map = _locate(self.path, self._boundary)
        self.shards: tuple[Path, ...] = tuple(shards)

        stored, self._entries = tensors_by_shard(
            self.shards, index, weight_map, lambda shard: _describe_shard(shard, self._boundary)
        )
        self._list_tensors(stored)

    def _read_stored(self, name: str) -> np.ndarray:
        number, entry, dtype = self._located(name)
        # Positional reads into a private buffer rather than safetensors' mmap: mapped pages count in the
        # process's RSS until the map is dropped, so streaming every model's tensors through open maps made
        # peak RSS grow with everything read so far, not with one tensor.
        raw = np.empty(entry.end - entry.start, dtype=np.uint8)
        self._read_span(number, name, entry.start, raw)
        return as_float32(raw.view(dtype).reshape(entry.shape), entry.dtype)

    def _read_stored_into(self, name: str, out: np.ndarray) -> None:
        number, entry, dtype = self._located(name)
        stored = entry.end - entry.start
        if not out.flags.c_contiguous:
            super()._read_stored_into(name, out)  # copyto fills any view
        elif dtype == np.dtype(np.float32) and out.nbytes == stored:
            self._read_span(number, name, entry.start, out.reshape(-1).view(np.uint8))
        elif entry.dtype == "BF16" and out.dtype == np.float32 and out.nbytes == 2 * stored:
            bits = np.empty(out.size, dtype=_BF16_BITS)
            self._read_span(number, name, entry.start, bits.view(np.uint8))
            widen_bf16(bits, out=out.reshape(-1))  # straight into the row: no float32 copy between
        else:
            super()._read_stored_into(name, out)  # converted, or the sizes differ (copyto says so)

    def _read_stored_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        number, entry, dtype = self._located(name)
        if not entry.shape:
            return super()._read_stored_rows(name, rows)
        row_bytes = (entry.end - entry.start) // entry.shape[0]
        raw = np.empty((len(rows), row_bytes), dtype=np.uint8)
        for k, row in enumerate(np.asarray(rows, dtype=np.int64).tolist()):
            self._read_span(number, name, entry.start + row * row_bytes, raw[k])
        return np.ascontiguousarray(as_float32(raw.view(dtype).reshape(len(rows), -1), entry.dtype))

    def _located(self, name: str) -> tuple[int, HeaderEntry, np.dtype]:
        """The shard number, header entry and numpy dtype of tensor ``name``."""
        located = self._entries.get(name)
        if located is None:
            raise KeyError(f"{shown(self.path)} has no tensor `{name}`")
        number, entry = located
        dtype = numpy_dtype(entry.dtype)
        if dtype is None or entry.dtype in _UNCONVERTIBLE:
            raise UnsupportedFormatError(
                f"{shown(self.shards[number])}: tensor `{name}` has dtype `{entry.dtype}`, which mothertree "
                "cannot read",
                path=self.shards[number],
            )
        return number, entry, dtype

    def _read_span(self, number: int, name: str, offset: int, into: np.ndarray) -> None:
        """Fill the bytes ``into`` from shard ``number`` at ``offset`` (part of tensor ``name``)."""
        shard = self.shards[number]
        file = self._open_shard(number)
        try:
            got = read_at(file, offset, into.data)
        except OSError as exc:
            raise os_error(shard, exc) from None
        if got != into.size:
            raise InvalidCheckpointError(f"{shown(shard)} is truncated: `{name}` is cut short", path=shard)

    def close(self) -> None:
        if self._handle is not None:
            handle, self._handle, self._handle_shard = self._handle, None, None
            handle.close()

    def _open_shard(self, number: int) -> BufferedReader:
        if self._handle is not None and self._handle_shard == number:
            return self._handle
        self.close()
        self._handle = open_shard_file(self.shards[number], self._boundary)
        self._handle_shard = number
        return self._handle


def read_at(file: BufferedReader, offset: int, into: memoryview) -> int:
    """Fill ``into`` from ``file`` at ``offset``; the bytes read (fewer only at the end of the file).

    Positional reads straight into the buffer: no seek, and no copy through the file's buffer, which a
    seek empties (the weight-decay clock reads a thousand rows of 1.5 KB each on ten MiniLMs)."""
    if not hasattr(os, "preadv"):  # not on Windows
        file.seek(offset)
        return file.readinto(into) or 0
    view, got = into.cast("B"), 0
    while got < len(view):
        count = os.preadv(file.fileno(), [view[got:]], offset + got)  # short for reads past 2 GiB
        if count == 0:
            break
        got += count
    return got


def _describe_shard(shard: Path, boundary: Path) -> list[tuple[TensorInfo, HeaderEntry]]:
    entries = read_header(shard, boundary)
    _check_with_safetensors(shard)
    return [(TensorInfo(entry.name, entry.shape, entry.dtype), entry) for entry in entries]


def _locate(path: Path, boundary: Path) -> tuple[Path | None, list[Path], dict[str, Path] | None]:
    return locate_weights(
        path,
        boundary=boundary,
        accepts=(SAFETENSORS_SUFFIX, ".safetensors.index.json"),
        expected="`model.safetensors`, `*.safetensors.index.json` or single `.safetensors` file",
        hint="pass the `.safetensors` file itself, or a model folder",
    )


def _parse_entry(path: Path, name: str, spec: object) -> tuple[str, tuple[int, ...], tuple[int, int]]:
    def malformed(why: str) -> InvalidCheckpointError:
        return InvalidCheckpointError(
            f"{shown(path)} has a malformed header: tensor `{name}` {why}", path=path
        )

    if not isinstance(spec, dict):
        raise malformed("is not described by a JSON object")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if not isinstance(dtype, str):
        raise malformed("has no `dtype`")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise malformed("has no valid `shape`")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(n, int) for n in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise malformed("has no valid `data_offsets`")
    bits = _DTYPE_BITS.get(dtype)
    if bits is None:
        raise malformed(f"has unknown dtype `{dtype}`")
    expected = -(-math.prod(shape) * bits // 8)  # integers: a crafted shape must not overflow a float
    if offsets[1] - offsets[0] != expected:
        raise malformed(f"spans {offsets[1] - offsets[0]} bytes, but {dtype} {shape} needs {expected}")
    return dtype, tuple(shape), (offsets[0], offsets[1])


def _check_with_safetensors(shard: Path) -> None:
    # Our header checks cover what goes wrong in practice; safetensors also checks that offsets neither
    # overlap nor leave gaps. Opening costs a header parse and an mmap, dropped at once.
    _safe_open(shard).__exit__(None, None, None)


def _safe_open(shard: Path) -> safe_open:
    try:
        return safe_open(os.fspath(shard), framework="np")
    except SafetensorError as exc:
        raise InvalidCheckpointError(
            f"{shown(shard)} is not a valid safetensors file: {exc}", path=shard
        ) from None
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{shown(shard)} does not exist", path=shard) from None


_RESAVE_HINT = "download or save it again; a real `.safetensors` file starts with its header length and JSON"


def _not_safetensors(path: Path, why: str) -> InvalidCheckpointError:
    return InvalidCheckpointError(
        f"{shown(path)} is not a safetensors file: {why}", hint=_RESAVE_HINT, path=path
    )


def _guess_what(prefix: bytes, otherwise: str) -> str:
    return looks_like_a_failed_download(prefix) or otherwise
