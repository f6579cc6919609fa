"""Which file of a model folder holds the weights (the rules discovery documents, in one place)."""

from __future__ import annotations

import os
from pathlib import Path

from ._files import (
    SAFETENSORS_FILE,
    SAFETENSORS_INDEX,
    TORCH_FILE,
    TORCH_INDEX,
    is_weight_file_name,
)

# Checked in this order: safetensors before pickles (HF repos often hold both), an index before a lone
# file (a folder with both was re-saved sharded, and the index is what transformers itself reads).
_NAMED_FILES = (SAFETENSORS_INDEX, SAFETENSORS_FILE, TORCH_INDEX, TORCH_FILE)
INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json")


def file_names(folder: Path) -> list[str]:
    """Names of the files in ``folder`` (broken links included: they are files whose content is missing)."""
    names = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file() or (entry.is_symlink() and not os.path.exists(entry.path)):
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


def loose_weight_files(names: list[str]) -> list[str]:
    """Files that may each hold a whole model (``.safetensors``, ``.bin``, ``.pt``, ``.pth``)."""
    return [name for name in names if is_weight_file_name(name)]


def weights_file(folder: Path) -> Path | None:
    """The file to read a model folder from: a named file or index, else its only weight file, else None."""
    names = file_names(folder)
    named = named_weights_file(names)
    if named is not None:
        return folder / named
    loose = loose_weight_files(names)
    return folder / loose[0] if len(loose) == 1 else None
