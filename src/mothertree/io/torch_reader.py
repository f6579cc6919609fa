"""Pickled PyTorch checkpoints: ``pytorch_model.bin`` (sharded or not) and any ``.bin``/``.pt``/``.pth`` file.

Only ``torch.load(path, map_location="cpu", weights_only=True, mmap=True)`` is ever called: unpickling
code from a downloaded file is never acceptable, and ``mmap`` makes loading a shard cost its pickle, not its
size. Files in the legacy (pre-1.6, non-zip) format cannot be memory-mapped and are loaded whole.

What a file may hold:

- a state_dict: a dict of tensor name -> tensor (nested dicts are flattened with ``.``-joined keys);
- a dict that wraps one under ``"state_dict"``, ``"model_state_dict"`` or ``"model"`` (the usual training
  checkpoint next to ``"optimizer"``, ``"epoch"``, ...); the wrapped dict is used, the rest ignored.

Anything else (a pickled ``nn.Module``, which ``weights_only`` refuses; a list; a dict without tensors) is an
InvalidCheckpointError. torch is imported only when such a file is opened, so it stays optional.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import pickletools
import re
import sys
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidCheckpointError, LimitExceededError, MissingDependencyError
from ._files import (
    TORCH_SUFFIXES,
    looks_like_a_failed_download,
    shown,
)
from ._guards import boundary_of, check_regular, open_regular, os_error
from ._layout import locate_weights, tensors_by_shard
from .quantized import StoredTensorsCheckpoint
from .safetensors_reader import widen_bf16
from .types import TensorInfo

if TYPE_CHECKING:
    import torch

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_SAVE_STATE_DICT = "save the weights with `torch.save(model.state_dict(), path)` and pass that file"
_ZIP_MAGIC = b"PK\x03\x04"
# torch.save's legacy format is a plain pickle, which starts with the PROTO opcode.
_PICKLE_PROTO = b"\x80"
# Bounds on what a pickle's dicts may make the flattening walk: a state_dict is one or two levels deep and
# the largest hold a few hundred thousand tensors.
MAX_DEPTH = 32
MAX_ENTRIES = 2_000_000
_DTYPE_NAMES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "float8_e8m0fnu": "F8_E8M0",
    "complex64": "C64",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint64": "U64",
    "uint32": "U32",
    "uint16": "U16",
    "uint8": "U8",
    "bool": "BOOL",
}


def import_torch() -> Any:
    """torch, or MissingDependencyError saying how to install it."""
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(
            "reading `.bin`, `.pt` and `.pth` checkpoints needs PyTorch, which is not installed",
            hint="pip install 'mothertree[torch]'",
        ) from None
    return torch


def dtype_name(dtype: torch.dtype) -> str:
    """safetensors' name for a torch dtype (``torch.bfloat16`` -> ``BF16``); unknown ones keep torch's."""
    short = str(dtype).removeprefix("torch.")
    return _DTYPE_NAMES.get(short, short)


def load_state_dict(path: Path, boundary: Path | None = None) -> dict[str, torch.Tensor]:
    """The tensors of one pickled checkpoint file, by name, in the order the file holds them.

    Raises:
        InvalidCheckpointError: the file is not a PyTorch checkpoint, is corrupt, holds something
            ``weights_only`` refuses (a whole model), or holds no tensors (LimitExceededError: dicts nested
            deeper than ``MAX_DEPTH``, or more than ``MAX_ENTRIES`` entries, shared ones counted each time).
        NotARegularFileError, OutsideInputError, UnreadableFileError: see ``_guards.open_regular``.
    """
    torch = import_torch()
    with open_regular(path, boundary) as file:
        try:
            magic = file.read(16)
        except OSError as exc:
            raise os_error(path, exc) from None
    if magic.startswith(_ZIP_MAGIC):
        mmap = True
        if _is_torchscript(path):
            raise InvalidCheckpointError(
                f"{shown(path)} is a TorchScript archive (`torch.jit.save`), not a state_dict",
                hint="load it with `torch.jit.load` and save `model.state_dict()` with `torch.save`",
                path=path,
            )
        # A memory-mapped load takes each storage's size from the pickle, not from its record: a file
        # that lies about it would be read past its record, into the bytes that follow.
        _check_storage_records(path)
    elif magic.startswith(_PICKLE_PROTO):
        mmap = False
    else:
        why = (
            "it is empty"
            if not magic
            else looks_like_a_failed_download(magic) or "it is neither a zip archive nor a pickle"
        )
        raise InvalidCheckpointError(f"{shown(path)} is not a PyTorch checkpoint: {why}", path=path)
    check_regular(path, boundary)  # torch.load opens the file by name again
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise _load_error(path, exc) from None
    tensors = _tensors_of(loaded, torch.Tensor, path)
    if not tensors:
        raise InvalidCheckpointError(
            f"{shown(path)} holds no tensors: it contains {_describe(loaded)}, not a state_dict",
            hint=_SAVE_STATE_DICT,
            path=path,
        )
    return tensors


class TorchCheckpoint(StoredTensorsCheckpoint):
    """A pickled PyTorch checkpoint, opened lazily.

    ``path`` may be a ``.bin``/``.pt``/``.pth`` file, a ``*.bin.index.json`` shard index, or a folder holding
    ``pytorch_model.bin.index.json``, ``pytorch_model.bin`` or a single such file. Opening reads the index,
    checks that every shard it names exists, then loads each shard in turn (memory-mapped) to list its
    tensors, keeping only a lone memory-mapped one. ``read`` keeps one shard loaded, switching when a
    tensor lives in another.

    Attributes:
        path: what was opened.
        shards: the files read, in order (one unless sharded).
    """

    format = "pytorch"

    def __init__(self, path: str | Path, *, boundary: Path | None = None) -> None:
        self.path = Path(path)
        self._loaded: dict[str, torch.Tensor] | None = None
        self._loaded_shard: int | None = None
        self._mapped = False
        self._boundary = boundary if boundary is not None else boundary_of(self.path)
        index, self.shards, weight_map = _locate(self.path, self._boundary)

        stored, self._shard_of = tensors_by_shard(self.shards, index, weight_map, self._describe)
        self._list_tensors(stored)

    def _describe(self, shard: Path) -> Iterator[tuple[TensorInfo, None]]:
        """The tensors of one shard, for ``tensors_by_shard``. A lone memory-mapped shard stays loaded
        for the first read (its mapping costs no memory, a second load half the reading of a ``.bin``);
        any other is dropped after the listing, so that no pickle-loaded model stays in memory."""
        loaded = load_state_dict(shard, self._boundary)
        infos = [TensorInfo(name, tuple(t.shape), dtype_name(t.dtype)) for name, t in loaded.items()]
        if len(self.shards) == 1 and _is_zip(shard, self._boundary):
            self._loaded, self._loaded_shard, self._mapped = loaded, 0, True
        del loaded
        return ((info, None) for info in infos)

    def _read_stored(self, name: str) -> np.ndarray:
        tensor = self._stored_tensor(name)
        # One copy, straight to float32 and C order: the source may be a view into the mmap'ed file.
        copied = np.empty(tuple(tensor.shape), dtype=np.float32)
        _convert_into(tensor, copied)
        self._release(tensor)
        return copied

    def _read_stored_into(self, name: str, out: np.ndarray) -> None:
        tensor = self._stored_tensor(name)
        if out.size != tensor.numel():
            raise ValueError(f"`{name}` has {tensor.numel()} values, the array {out.size}")
        _convert_into(tensor, out)
        self._release(tensor)

    def _read_stored_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        tensor = self._stored_tensor(name)
        torch = import_torch()
        # Only the rows asked for are copied out of the mapping (the clock reads 48 of an embedding's).
        picked = tensor.detach().reshape(tensor.shape[0], -1)[
            torch.from_numpy(np.asarray(rows, dtype=np.int64))
        ]
        # Indexing copied them already: converting needs no second copy.
        copied = picked.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        self._release(tensor)
        return copied.numpy()

    def _stored_tensor(self, name: str) -> torch.Tensor:
        """Tensor ``name`` as loaded (a view into the memory-mapped shard for zip checkpoints), dense."""
        number, _ = self._shard_of.get(name, (None, None))
        if number is None:
            raise KeyError(f"{shown(self.path)} has no tensor `{name}`")
        if self._loaded is None or self._loaded_shard != number:
            self.close()
            self._loaded = load_state_dict(self.shards[number], self._boundary)
            self._loaded_shard = number
            self._mapped = _is_zip(
                self.shards[number], self._boundary
            )  # zip archives are loaded memory-mapped
        tensor = self._loaded.get(name)
        if tensor is None:  # the file changed on disk since it was opened
            shard = self.shards[number]
            raise InvalidCheckpointError(f"{shown(shard)} no longer holds `{name}`", path=shard)
        torch = import_torch()
        return tensor.to_dense() if tensor.layout != torch.strided else tensor

    def _release(self, tensor: torch.Tensor) -> None:
        if self._mapped:
            _release_pages(tensor)

    def close(self) -> None:
        # Dropping the dict drops its storages, and with them the file mapping.
        self._loaded = None
        self._loaded_shard = None


def _convert_into(tensor: torch.Tensor, out: np.ndarray) -> None:
    """``tensor``'s values as float32 into ``out`` (C-contiguous, as many values): one pass over the
    mapped bytes, no second copy.

    float32, float16 and bfloat16 (its bits widened by a shift) are converted by numpy, on the calling
    thread: torch's ``copy_`` splits a tensor this size over its intra-op pool, whose threads fight the
    feature loop's for the cores (recover of the MiniLM graph as ``.bin``: 0.53 s with it, 0.41 s so).
    """
    torch = import_torch()
    source = tensor.detach().reshape(-1)
    target = out.reshape(-1)
    if source.dtype == torch.bfloat16:
        widen_bf16(source.view(torch.int16).numpy(), out=target)
    elif source.dtype in (torch.float32, torch.float16):
        np.copyto(target, source.numpy())
    else:
        torch.from_numpy(target).copy_(source)


_PAGE = mmap.PAGESIZE
_MADV_DONTNEED = 4  # Linux


def _is_zip(path: Path, boundary: Path) -> bool:
    with open_regular(path, boundary) as file:
        return file.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC


def _release_pages(tensor: Any) -> None:
    """Let the kernel drop the pages of the mapped file that ``tensor`` was read from.

    Only for tensors of a memory-mapped (zip) checkpoint: on anonymous memory the same call would zero
    the data.

    Every model's shard stays mapped while the loop runs, and pages once touched count in RSS until the
    mapping goes: without this, peak memory grew with every ``.bin`` byte read (as whole-model loading
    does). The pages are clean and read-only, so dropping them is safe: touching them again re-reads the file.
    """
    if not sys.platform.startswith("linux") or tensor.device.type != "cpu":
        return
    start = tensor.untyped_storage().data_ptr()
    end = start + tensor.untyped_storage().nbytes()
    first, last = -(-start // _PAGE) * _PAGE, end // _PAGE * _PAGE  # whole pages inside the storage only
    if last > first:
        _libc().madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED)


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _locate(path: Path, boundary: Path) -> tuple[Path | None, tuple[Path, ...], dict[str, Path] | None]:
    index, shards, weight_map = locate_weights(
        path,
        boundary=boundary,
        accepts=(*TORCH_SUFFIXES, ".bin.index.json"),
        expected="`pytorch_model.bin`, `pytorch_model.bin.index.json` or single `.bin`/`.pt`/`.pth` file",
        hint="pass the checkpoint file itself, or a model folder",
    )
    return index, tuple(shards), weight_map


def _is_torchscript(path: Path) -> bool:
    # torch.load would dispatch these to torch.jit.load, which weights_only forbids; the tell is a
    # `constants.pkl` record, which torch.save never writes. Reading the zip directory costs one seek.
    try:
        with zipfile.ZipFile(path) as archive:
            return any(
                name.endswith("/constants.pkl") or name == "constants.pkl" for name in archive.namelist()
            )
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError, RuntimeError):
        # Non-UTF-8 member names, unsupported zip versions, ...: torch.load will say what is wrong.
        return False


def _check_storage_records(path: Path) -> None:
    """Raise unless every storage the archive's pickle declares has a record of exactly that many bytes
    (what ``torch.load`` checks when it does not memory-map). Declarations it cannot size are left to it."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [info for info in archive.infolist() if info.filename.endswith("/data.pkl")]
            if len(pickles) != 1:
                return
            prefix = pickles[0].filename[: -len("data.pkl")]
            records = {info.filename: info.file_size for info in archive.infolist()}
            declared = _declared_storages(archive.read(pickles[0]))
    # A pickle our walk cannot follow (malformed, or a stack it does not model) is torch.load's to judge.
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError, RuntimeError, IndexError):
        return
    for key, storage_type, numel in declared:
        size = _STORAGE_ITEM_BYTES.get(storage_type)
        record = records.get(f"{prefix}data/{key}")
        if size is None or record is None or not isinstance(numel, int):
            continue
        if record != numel * size:
            raise InvalidCheckpointError(
                f"{shown(path)} is corrupt: its pickle declares storage `{key}` of {numel * size} bytes, "
                f"but the archive's record holds {record}",
                path=path,
            )


# Bytes per element of the typed storages torch.save names in its pickles (`torch.FloatStorage`, ...).
_STORAGE_ITEM_BYTES = {
    f"torch {name}Storage": size
    for name, size in (
        ("Double", 8),
        ("Float", 4),
        ("Half", 2),
        ("BFloat16", 2),
        ("Long", 8),
        ("Int", 4),
        ("Short", 2),
        ("Char", 1),
        ("Byte", 1),
        ("Bool", 1),
        ("ComplexFloat", 8),
        ("ComplexDouble", 16),
        ("Float8_e4m3fn", 1),
        ("Float8_e5m2", 1),
        ("Untyped", 1),
    )
}
_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
)
_INT_OPS = frozenset({"BININT", "BININT1", "BININT2", "LONG1", "LONG4", "INT", "LONG"})


def _declared_storages(pickled: bytes) -> list[tuple[str, str, object]]:
    """(key, storage type, element count) of every ``("storage", type, key, location, numel)`` persistent
    id in a pickle, found by walking its opcodes (never by unpickling: nothing is constructed or called)."""
    stack: list[object] = []
    memo: dict[object, object] = {}
    found: list[tuple[str, str, object]] = []
    mark = object()

    def pop_to_mark() -> list[object]:
        at = len(stack) - 1 - stack[::-1].index(mark)
        items = stack[at + 1 :]
        del stack[at:]
        return items

    for op, arg, _ in pickletools.genops(pickled):
        name = op.name
        if name in _STRING_OPS or name in _INT_OPS:
            stack.append(arg)
        elif name == "GLOBAL":
            stack.append(("global", arg))
        elif name == "STACK_GLOBAL":
            module, qualified = stack.pop(-2), stack.pop()
            stack.append(("global", f"{module} {qualified}"))
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(memo.get(arg))
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name == "MARK":
            stack.append(mark)
        elif name == "TUPLE":
            stack.append(tuple(pop_to_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            count = int(name[-1])
            items = tuple(stack[-count:])
            del stack[-count:]
            stack.append(items)
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name == "DUP":
            stack.append(stack[-1])
        elif name == "BINPERSID":
            pid = stack.pop()
            if isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage":
                _, kind, key, _, numel = pid
                if isinstance(kind, tuple) and isinstance(key, str):
                    found.append((key, str(kind[1]), numel))
            stack.append(None)
        else:  # every other opcode: its documented stack effect, values unknown
            before = op.stack_before
            if pickletools.markobject in before:
                pop_to_mark()
                before = before[: before.index(pickletools.markobject)]
            if before:
                del stack[-len(before) :]
            stack.extend([None] * len(op.stack_after))
    return found


def _tensors_of(loaded: object, tensor_type: type, path: Path) -> dict[str, Any]:
    if not isinstance(loaded, Mapping):
        return {}
    for key in WRAPPER_KEYS:
        inner = loaded.get(key)
        if isinstance(inner, Mapping):
            loaded = inner
            break
    flat: dict[str, Any] = {}
    _Flattener(tensor_type, path).flatten(loaded, "", flat, ())
    return flat


class _Flattener:
    """Nested dicts to ``.``-joined names, within bounds: a pickle can make a dict hold itself, or dicts
    that share their children level after level (2**depth paths from a few KB)."""

    def __init__(self, tensor_type: type, path: Path) -> None:
        self.tensor_type = tensor_type
        self.path = path
        self.entries = 0

    def flatten(
        self, mapping: Mapping[Any, Any], prefix: str, into: dict[str, Any], above: tuple[int, ...]
    ) -> None:
        if id(mapping) in above:
            raise InvalidCheckpointError(
                f"{shown(self.path)} is not a state_dict: a dict in it contains itself",
                hint=_SAVE_STATE_DICT,
                path=self.path,
            )
        if len(above) >= MAX_DEPTH:
            raise LimitExceededError(
                f"{shown(self.path)} nests dicts more than {MAX_DEPTH} deep; a state_dict is flat",
                path=self.path,
            )
        inside = (*above, id(mapping))
        for key, value in mapping.items():
            self.entries += 1
            if self.entries > MAX_ENTRIES:
                raise LimitExceededError(
                    f"{shown(self.path)} holds more than {MAX_ENTRIES:,} entries (dicts shared many times "
                    "count each time); no state_dict is that large",
                    path=self.path,
                )
            name = f"{prefix}{key}"
            if isinstance(value, self.tensor_type):
                into[name] = value
            elif isinstance(value, Mapping):
                self.flatten(value, f"{name}.", into, inside)
            # Other values (an epoch number, a config string) are not weights.


def _describe(loaded: object) -> str:
    if isinstance(loaded, Mapping):
        return "a dict without tensors" if loaded else "an empty dict"
    kind = type(loaded).__name__
    return f"a `{kind}`"


def _load_error(path: Path, exc: Exception) -> InvalidCheckpointError:
    message = str(exc)
    # torch names a refused callable in one of two ways, depending on whether its module is blocked.
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", message) or re.search(
        r"unsupported GLOBAL (\S+) whose module", message
    )
    if refused:
        return InvalidCheckpointError(
            f"{shown(path)} holds a pickled `{refused.group(1)}`, which "
            "`torch.load(weights_only=True)` refuses to load: it is not a state_dict",
            hint=f"mothertree never runs code from checkpoint files; {_SAVE_STATE_DICT}",
            path=path,
        )
    if "Weights only load failed" in message:
        # torch's text is long; the line after "WeightsUnpickler error:" is the one that says what broke.
        _, _, after = message.partition("WeightsUnpickler error:")
        lines = [line.strip() for line in after.splitlines() if line.strip()]
        why = lines[0] if lines else "it is not a plain pickle of tensors"
        return InvalidCheckpointError(
            f"{shown(path)} could not be loaded with `torch.load(weights_only=True)`: {why}",
            hint=f"the file may be corrupt; if it holds a whole model, {_SAVE_STATE_DICT}",
            path=path,
        )
    # torch appends paragraphs of advice to the cause; its first sentence is the cause.
    first_line = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    cause = first_line.split(". ")[0].rstrip(".")
    return InvalidCheckpointError(f"{shown(path)} is truncated or corrupt: {cause}", path=path)
