"""File-name conventions and checks shared by the readers and by discovery (no format parsing here)."""

from __future__ import annotations

import errno
import importlib
import os
import re
from collections.abc import Container, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import (
    CheckpointNotFoundError,
    InvalidCheckpointError,
    MissingDependencyError,
    MissingShardError,
    OutsideInputError,
    UnreadableFileError,
    UnsupportedFormatError,
)
from ._guards import MAX_JSON_BYTES, os_error, parse_json, read_bounded

SAFETENSORS_SUFFIX = ".safetensors"
TORCH_SUFFIXES = (".bin", ".pt", ".pth")
ONNX_SUFFIX = ".onnx"
GGUF_SUFFIX = ".gguf"
WEIGHT_SUFFIXES = (SAFETENSORS_SUFFIX, *TORCH_SUFFIXES, ONNX_SUFFIX, GGUF_SUFFIX)

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_FILE = "model.safetensors"
TORCH_INDEX = "pytorch_model.bin.index.json"
TORCH_FILE = "pytorch_model.bin"
ADAPTER_CONFIG = "adapter_config.json"
README = "README.md"

# Files the HF Trainer and common training loops write next to the weights. They are pickles of
# optimizer/scheduler/RNG state or of TrainingArguments, never a model, so they must not count as one.
_NOT_WEIGHTS = re.compile(
    r"^(training_args\.bin|optimizer\.(pt|bin)|scheduler\.(pt|bin)|scaler\.pt|rng_state(_\d+)?\.pth)$"
)
# Model formats mothertree does not read (yet). A file of one of these, where no readable model is, is
# listed as a skipped model with its format named: a collection never loses a model without a word.
OTHER_MODEL_FORMATS = {
    ".h5": "a Keras/TensorFlow HDF5 file",
    ".keras": "a Keras model",
    ".msgpack": "a Flax msgpack checkpoint",
    ".ckpt": "a Lightning/TensorFlow checkpoint",
    ".tflite": "a TensorFlow Lite model",
    ".mlmodel": "a Core ML model",
    ".mlpackage": "a Core ML package",
    ".pdparams": "a PaddlePaddle checkpoint",
}


def import_optional(module: str, reading: str, extra: str) -> Any:
    """``module``, imported; or MissingDependencyError saying that ``reading`` needs it, and how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"reading {reading} needs the `{module}` package, which is not installed",
            hint=f"pip install 'mothertree[{extra}]'",
        ) from None


def other_model_format(name: str) -> str | None:
    """What kind of unreadable model file ``name`` is, by its extension; None for any other file."""
    if name.startswith("."):
        return None
    return next((kind for suffix, kind in OTHER_MODEL_FORMATS.items() if name.lower().endswith(suffix)), None)


def unread_format_error(path: Path, kind: str) -> UnsupportedFormatError:
    return UnsupportedFormatError(
        f"{shown(path)} is {kind}, which mothertree does not read",
        hint="mothertree reads safetensors, PyTorch, ONNX and GGUF files: save the model in one of them "
        "(from the library that made it, e.g. transformers `save_pretrained`), or leave this file out",
        path=path,
    )


# `model-00001-of-00003.safetensors`: a shard, meaningless without the index that lists its tensors.
SHARD_NAME = re.compile(r"-(\d{5})-of-(\d{5})\.(safetensors|bin)$")


def shown(path: str | Path) -> str:
    """A path as error messages print it."""
    return f"`{path}`"


def is_weight_file_name(name: str) -> bool:
    """Whether a file of this name may hold a model's weights (by extension; hidden files never do)."""
    return not name.startswith(".") and name.endswith(WEIGHT_SUFFIXES) and not _NOT_WEIGHTS.match(name)


def is_shard_name(name: str) -> bool:
    """``*-0000k-of-0000n.*`` with n > 1 (a lone ``-00001-of-00001`` file is a complete model)."""
    match = SHARD_NAME.search(name)
    return match is not None and int(match.group(2)) > 1


def looks_like_a_failed_download(prefix: bytes) -> str | None:
    """Why a weights file's first bytes say it is no checkpoint at all, if they are telling."""
    # Failed downloads commonly leave an HTML error page or a Git LFS pointer under the model's name.
    text = prefix.lstrip().lower()
    if text.startswith(b"<"):
        return "it looks like an HTML page (a failed download?)"
    if text.startswith(b"version "):
        return "it looks like a Git LFS pointer (run `git lfs pull`)"
    return None


def is_broken_link(path: Path) -> bool:
    return os.path.islink(path) and not os.path.exists(path)


def broken_link_error(path: Path) -> MissingShardError | UnreadableFileError | CheckpointNotFoundError:
    """A symlink whose target is gone: in a Hugging Face cache, a snapshot file whose blob is missing.
    A link that loops back on itself is another matter, and said so."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return UnreadableFileError(
                f"{shown(path)} cannot be read: it is a symbolic link that loops",
                hint="fix or remove the link",
                path=path,
            )
        if exc.errno != errno.ENOENT:
            return os_error(path, exc)
    target = Path(os.readlink(path))
    if not target.is_absolute():
        target = path.parent / target
    return MissingShardError(
        f"{shown(path)} is a broken link: its target {shown(os.path.normpath(target))} is missing",
        path=path,
    )


def check_shards_exist(index: Path, shards: list[Path]) -> None:
    """Raise for every shard the index names that is not on disk, before any file is parsed."""
    broken = [shard for shard in shards if is_broken_link(shard)]
    if broken:
        raise broken_link_error(broken[0])
    missing = [shard for shard in shards if not os.path.lexists(shard)]
    if len(missing) == 1:
        raise MissingShardError(
            f"{shown(missing[0])} is missing: {shown(index)} names it as a shard", path=index
        )
    if missing:
        names = ", ".join(shown(shard.name) for shard in missing)
        raise MissingShardError(
            f"{len(missing)} shards named by {shown(index)} are missing: {names}", path=index
        )


def check_index_kept(index: Path, weight_map: Mapping[str, Path], found: Container[str]) -> None:
    """Raise unless every tensor the index names was found in the shard it names."""
    lost = [name for name in weight_map if name not in found]
    if lost:
        more = f" ({len(lost) - 1} more tensors likewise)" if len(lost) > 1 else ""
        shard = shown(weight_map[lost[0]].name)
        raise InvalidCheckpointError(
            f"{shown(index)} places `{lost[0]}` in {shard}, which does not hold it{more}",
            path=index,
        )


def read_json(path: Path, what: str, hint: str | None = None, boundary: Path | None = None) -> object:
    """The JSON value in ``path``; else an error saying it is not ``what`` ("a shard index"), and why.

    The file must be a regular file inside ``boundary`` (default: its own folder), of at most
    ``MAX_JSON_BYTES``; see ``_guards.parse_json`` for what its contents may not do.
    """
    if is_broken_link(path):
        raise broken_link_error(path)
    raw = read_bounded(path, MAX_JSON_BYTES, what, boundary)
    return parse_json(raw, path, what, hint)


def read_weight_map(index: Path, boundary: Path | None = None) -> dict[str, str]:
    """``weight_map`` (tensor name -> shard file name) of a ``*.index.json`` written by transformers."""
    content = read_json(index, "a shard index", boundary=boundary)
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in weight_map.items()
    ):
        raise InvalidCheckpointError(
            f"{shown(index)} is not a shard index: it has no `weight_map` of tensor names to shard files",
            path=index,
        )
    if not weight_map:
        raise InvalidCheckpointError(
            f"{shown(index)} names no tensors: its `weight_map` is empty", path=index
        )
    for shard in set(weight_map.values()):
        _check_shard_name(index, shard)
    return weight_map


def _check_shard_name(index: Path, name: str) -> None:
    # transformers writes bare file names; a path, `..` or an absolute name can only point elsewhere.
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or name.startswith(("/", "\\")) or ".." in parts or ":" in name or "\0" in name:
        raise OutsideInputError(
            f"{shown(index)} names the shard `{name}`, which is not a file beside the index",
            hint="a shard index lists shard files by their bare names; this one was edited or crafted",
            path=index,
        )


def shard_paths(index: Path, weight_map: dict[str, str]) -> list[Path]:
    """The shard files an index names, in file-name order (numbers compared as numbers)."""
    return [index.parent / name for name in sorted(set(weight_map.values()), key=natural_key)]


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    # HF zero-pads shard numbers, but hand-made indexes may say `shard2` and `shard10`.
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part)
