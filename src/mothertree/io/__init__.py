"""Reading checkpoints: the only code in mothertree that knows file formats.

``discover`` finds models under a path (names and layout only), ``open_checkpoint`` opens one lazily and
checks everything that can be checked without reading tensor data, ``Checkpoint.read`` reads one tensor
as float32.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CheckpointNotFoundError, NoModelsFoundError, UnsupportedFormatError
from ._files import (
    ADAPTER_CONFIG,
    SAFETENSORS_SUFFIX,
    TORCH_SUFFIXES,
    adapter_error,
    broken_link_error,
    is_broken_link,
    shown,
)
from ._layout import file_names, loose_weight_files, weights_file
from .discovery import discover
from .hf_cache import is_cache_entry, is_cache_root, repo_id, resolve_snapshot
from .model_card import read_declared_base_models
from .safetensors_reader import SafetensorsCheckpoint
from .torch_reader import TorchCheckpoint
from .types import FLOAT_DTYPES, BrokenModel, Checkpoint, ModelRef, TensorInfo

__all__ = [
    "FLOAT_DTYPES",
    "BrokenModel",
    "Checkpoint",
    "ModelRef",
    "SafetensorsCheckpoint",
    "TensorInfo",
    "TorchCheckpoint",
    "discover",
    "is_cache_entry",
    "is_cache_root",
    "open_checkpoint",
    "read_declared_base_models",
    "repo_id",
    "resolve_snapshot",
]


def open_checkpoint(ref_or_path: ModelRef | str | os.PathLike[str]) -> Checkpoint:
    """Open one model for reading, validating it first (index, every shard present, headers, truncation).

    Takes a ModelRef from ``discover`` (its ``weights_path`` is read) or a path: a weights file, a shard
    index, a model folder, or a Hugging Face cache entry. The format follows from the file found: safetensors
    when there is one (``model.safetensors`` and its index win over ``pytorch_model.bin``), else PyTorch.
    The returned checkpoint's ``path`` is the model's path as the user knows it (``ModelRef.path``, or the
    path given), which is what reports name.

    Raises:
        CheckpointNotFoundError: the path does not exist.
        NoModelsFoundError: a folder holds no weights file, or several and no index.
        UnsupportedFormatError: a PEFT adapter, or a file that is not a checkpoint.
        InvalidCheckpointError: a missing shard, a broken cache link, a truncated or corrupt file.
        MissingDependencyError: a PyTorch checkpoint without torch installed.
    """
    if isinstance(ref_or_path, ModelRef):
        target, user_path = ref_or_path.weights_path, ref_or_path.path
    else:
        target = user_path = Path(ref_or_path)
    if is_broken_link(target):
        raise broken_link_error(target)
    if not target.exists():
        raise CheckpointNotFoundError(f"{shown(target)} does not exist", path=target)
    if target.is_dir():
        target = _weights_file_of_folder(target)

    name = target.name
    checkpoint: Checkpoint
    if name.endswith((SAFETENSORS_SUFFIX, ".safetensors.index.json")):
        checkpoint = SafetensorsCheckpoint(target)
    elif name.endswith((*TORCH_SUFFIXES, ".bin.index.json")):
        checkpoint = TorchCheckpoint(target)
    else:
        raise UnsupportedFormatError(
            f"{shown(target)} is not a checkpoint file mothertree reads",
            hint="mothertree reads `.safetensors`, `.bin`, `.pt` and `.pth` files, sharded or not",
            path=target,
        )
    checkpoint.path = user_path
    return checkpoint


def _weights_file_of_folder(folder: Path) -> Path:
    if is_cache_entry(folder):
        folder = resolve_snapshot(folder)
    if (folder / ADAPTER_CONFIG).is_file():
        raise adapter_error(folder)
    found = weights_file(folder)
    if found is not None:
        return found
    loose = loose_weight_files(file_names(folder))
    if not loose:
        raise NoModelsFoundError(f"{shown(folder)} holds no weights file", path=folder)
    raise NoModelsFoundError(
        f"{shown(folder)} holds {len(loose)} weight files and no index, so it is not one model",
        hint="pass one of the files; `mothertree recover` treats a folder of checkpoints as a collection",
        path=folder,
    )
