"""Which file of a model folder holds the weights (the rules discovery documents, in one place)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from ..errors import CheckpointNotFoundError, InvalidCheckpointError
from ._files import (
    ONNX_SUFFIX,
    SAFETENSORS_FILE,
    SAFETENSORS_INDEX,
    TORCH_FILE,
    TORCH_INDEX,
    broken_link_error,
    check_index_kept,
    check_shards_exist,
    is_broken_link,
    is_weight_file_name,
    read_weight_map,
    shard_paths,
    shown,
)
from ._guards import boundary_of, check_regular
from .types import TensorInfo

T = TypeVar("T")

# Checked in this order: safetensors before pickles (HF repos often hold both), an index before a lone
# file (a folder with both was re-saved sharded, and the index is what transformers itself reads).
_NAMED_FILES = (SAFETENSORS_INDEX, SAFETENSORS_FILE, TORCH_INDEX, TORCH_FILE)
INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json")


def file_names(folder: Path) -> list[str]:
    """Names of the entries of ``folder`` that are not folders: files, broken or looping links, and special
    files (a FIFO named ``model.safetensors`` is a model that cannot be read, and must be reported as one)."""
    names = []
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:  # a link that loops or leads nowhere readable
                is_dir = False
            if not is_dir:
                names.append(entry.name)
    return sorted(names)


def named_weights_file(names: list[str]) -> str | None:
    """The file that makes a folder a model by its name alone (``model.safetensors``, an index, ...)."""
    for name in _NAMED_FILES:
        if name in names:
            return name
    for suffix in INDEX_SUFFIXES:
        indexes = [name for name in names if name.endswith(suffix) and not name.startswith(".")]
        if indexes:
            return indexes[0]
    return None


def loose_weight_files(names: list[str], folder: Path | None = None) -> list[str]:
    """Files of ``folder`` that may each hold a whole model (``.safetensors``, ``.bin``, ``.pt``, ``.pth``,
    ``.onnx``, ``.gguf``), less the files an ONNX model beside them keeps its external data in (an export
    may name it ``weights.bin``): those are part of that model, not models of their own."""
    loose = [name for name in names if is_weight_file_name(name)]
    onnx_files = [name for name in loose if name.endswith(ONNX_SUFFIX)]
    # Parsing an ONNX file costs a read of it: only where some other file could be its external data.
    if folder is None or not onnx_files or len(onnx_files) == len(loose):
        return loose
    from .onnx_reader import external_data_files

    held = {name for onnx_file in onnx_files for name in external_data_files(folder / onnx_file)}
    return [name for name in loose if name not in held]


def weights_file(folder: Path) -> Path | None:
    """The file to read a model folder from: a named file or index, else its only weight file, else None."""
    names = file_names(folder)
    named = named_weights_file(names)
    if named is not None:
        return folder / named
    loose = loose_weight_files(names, folder)
    return folder / loose[0] if len(loose) == 1 else None


def locate_weights(
    path: Path, *, accepts: tuple[str, ...], expected: str, hint: str, boundary: Path | None = None
) -> tuple[Path | None, list[Path], dict[str, Path] | None]:
    """(index or None, shard files, tensor name -> shard file or None) for a file or folder a user gave.

    ``accepts`` are the file-name endings a reader handles (its weight files and its index); ``expected``
    says what a folder should hold, for the error when it holds none of them. Every file must lie inside
    ``boundary`` (default: the folder of ``path``), shards included.
    """
    if boundary is None:
        boundary = boundary_of(path)
    if is_broken_link(path):
        raise broken_link_error(path)
    if os.path.isdir(path):
        found = weights_file(path)
        if found is None or not found.name.endswith(accepts):
            raise InvalidCheckpointError(f"{shown(path)} holds no {expected}", hint=hint, path=path)
        path = found
        if is_broken_link(path):
            raise broken_link_error(path)
    if not os.path.lexists(path):
        raise CheckpointNotFoundError(f"{shown(path)} does not exist", path=path)
    check_regular(path, boundary)
    if path.name.endswith(".index.json"):
        weight_map = read_weight_map(path, boundary)
        shards = shard_paths(path, weight_map)
        check_shards_exist(path, shards)
        for shard in shards:
            check_regular(shard, boundary, named_by=path)
        return path, shards, {name: path.parent / shard for name, shard in weight_map.items()}
    return None, [path], None


def tensors_by_shard(
    shards: Sequence[Path],
    index: Path | None,
    weight_map: Mapping[str, Path] | None,
    describe: Callable[[Path], Iterable[tuple[TensorInfo, T]]],
) -> tuple[Mapping[str, TensorInfo], dict[str, tuple[int, T]]]:
    """Every tensor of a checkpoint, in storage order, with its shard number and the reader's record of it.

    ``describe`` lists a shard's tensors (header only). With an index, the index decides which shard a
    tensor is read from: tensors a shard holds but the index does not name are ignored, as transformers
    ignores them, and a name the index places in a shard that lacks it is an error.
    """
    infos: dict[str, TensorInfo] = {}
    located: dict[str, tuple[int, T]] = {}
    for number, shard in enumerate(shards):
        for info, record in describe(shard):
            if weight_map is not None and weight_map.get(info.name) != shard:
                continue
            infos[info.name] = info
            located[info.name] = (number, record)
    if weight_map is not None and index is not None:
        check_index_kept(index, weight_map, infos)
    return MappingProxyType(infos), located
