"""Reading checkpoints: the only code in mothertree that knows file formats.

``discover`` finds models under a path (names and layout only), ``open_checkpoint`` opens one lazily and
checks everything that can be checked without reading tensor data, ``Checkpoint.read`` reads one tensor
as float32. A PEFT LoRA adapter is a model too, read as its base model plus the update (``PeftCheckpoint``);
``match_base`` finds the base an adapter declares among the models discovered. bitsandbytes int8 and 4-bit
weights are read dequantised (dtypes ``I8_SCB``, ``NF4``, ``FP4``); other integer-quantised checkpoints
(GPTQ/AWQ) are refused (``quantized``).
ONNX models (``onnx_reader``) and GGUF files (``gguf_reader``) are read as the PyTorch parameters they were
made from, quantised weights dequantised.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import (
    CheckpointNotFoundError,
    InvalidParameterError,
    NoModelsFoundError,
    UnsupportedFormatError,
)
from ._files import (
    GGUF_SUFFIX,
    ONNX_SUFFIX,
    SAFETENSORS_SUFFIX,
    TORCH_SUFFIXES,
    broken_link_error,
    is_broken_link,
    shown,
)
from ._guards import FOLLOW_LINKS, boundary_of, check_inside, os_error
from ._layout import file_names, loose_weight_files, weights_file
from .discovery import discover, with_unique_ids
from .gguf_reader import GgufCheckpoint
from .hf_cache import is_cache_entry, repo_id, resolve_snapshot
from .model_card import read_declared_base_models
from .onnx_reader import OnnxCheckpoint
from .peft_reader import (
    PeftCheckpoint,
    adapter_folder_of,
    adapter_weights_file,
    lora_file_error,
    read_adapter_config,
)
from .safetensors_reader import SafetensorsCheckpoint
from .torch_reader import TorchCheckpoint
from .types import (
    FLOAT_DTYPES,
    INT8_ROWWISE,
    LINEAR_INT8,
    QUANTIZED_DTYPES,
    BrokenModel,
    Checkpoint,
    ModelRef,
    TensorInfo,
)

__all__ = [
    "FLOAT_DTYPES",
    "INT8_ROWWISE",
    "LINEAR_INT8",
    "QUANTIZED_DTYPES",
    "BrokenModel",
    "Checkpoint",
    "GgufCheckpoint",
    "ModelRef",
    "OnnxCheckpoint",
    "PeftCheckpoint",
    "SafetensorsCheckpoint",
    "TensorInfo",
    "TorchCheckpoint",
    "discover",
    "is_cache_entry",
    "match_base",
    "open_checkpoint",
    "os_error",
    "read_declared_base_models",
    "repo_id",
    "resolve_snapshot",
    "with_unique_ids",
]

BaseResolver = Callable[[str], Checkpoint | None]


def open_checkpoint(
    ref_or_path: ModelRef | str | os.PathLike[str],
    *,
    resolve_base: BaseResolver | None = None,
    follow_links: bool = False,
) -> Checkpoint:
    """Open one model for reading, validating it first (index, every shard present, headers, truncation).

    Takes a ModelRef from ``discover`` (its ``weights_path`` is read) or a path: a weights file, a shard
    index, a model folder, a PEFT adapter folder, or a Hugging Face cache entry. The format follows from the
    file found: safetensors when there is one (``model.safetensors`` and its index win over
    ``pytorch_model.bin``), else PyTorch. The returned checkpoint's ``path`` is the model's path as the user
    knows it (``ModelRef.path``, or the path given), which is what reports name.

    A PEFT LoRA adapter is checked (its config, then that its weights file is there), then
    ``resolve_base(name)`` is called with the ``base_model_name_or_path`` it declares (``""`` when none) and
    must return the base model's checkpoint, opened, or None when it has none; the returned
    ``PeftCheckpoint`` owns that checkpoint (closing it closes both).

    Every file opened must lie inside the model's boundary: a ModelRef's (the input it was found in), else
    the folder of the path given, widened to its Hugging Face cache entry; ``follow_links`` lifts that.
    Only regular files are opened (see ``_guards``).

    Raises:
        CheckpointNotFoundError: the path does not exist; an adapter's base is not found (no resolver, or it
            returned None); an adapter folder without its weights file.
        NoModelsFoundError: a folder holds no weights file, or several and no index.
        UnsupportedFormatError: a file that is not a checkpoint; a kohya-style LoRA file; LoRA factors
            without their ``adapter_config.json``; an adapter that is not plain LoRA (IA3, DoRA, ...).
        InvalidCheckpointError: a missing shard, a broken cache link, a truncated or corrupt file, an adapter
            whose factors do not fit its base; NotARegularFileError for a FIFO or device, LimitExceededError
            for a structure larger than any real checkpoint's.
        OutsideInputError: a link, shard name or cache ref leads outside the boundary.
        UnreadableFileError: the operating system refused a read (permissions, I/O error, link loop).
        MissingDependencyError: a PyTorch checkpoint without torch installed.
    """
    boundary: Path | None = None
    if isinstance(ref_or_path, ModelRef):
        target, user_path, boundary = ref_or_path.weights_path, ref_or_path.path, ref_or_path.boundary
    else:
        target = user_path = Path(ref_or_path)
    if is_broken_link(target):
        raise broken_link_error(target)
    if not os.path.lexists(target):
        raise CheckpointNotFoundError(f"{shown(target)} does not exist", path=target)
    if follow_links:
        boundary = FOLLOW_LINKS
    elif boundary is None:
        boundary = boundary_of(target)
    if is_cache_entry(target):
        target = resolve_snapshot(target)
    check_inside(target, boundary)
    adapter = adapter_folder_of(target)
    if adapter is not None:
        return _open_adapter(adapter, user_path, resolve_base, boundary)
    if os.path.isdir(target):
        target = _weights_file_of_folder(target)

    name = target.name
    checkpoint: Checkpoint
    if name.endswith((SAFETENSORS_SUFFIX, ".safetensors.index.json")):
        checkpoint = SafetensorsCheckpoint(target, boundary=boundary)
    elif name.endswith((*TORCH_SUFFIXES, ".bin.index.json")):
        checkpoint = TorchCheckpoint(target, boundary=boundary)
    elif name.endswith(ONNX_SUFFIX):
        checkpoint = OnnxCheckpoint(target, boundary=boundary)
    elif name.endswith(GGUF_SUFFIX):
        checkpoint = GgufCheckpoint(target, boundary=boundary)
    else:
        raise UnsupportedFormatError(
            f"{shown(target)} is not a checkpoint file mothertree reads",
            hint="mothertree reads `.safetensors`, `.bin`, `.pt` and `.pth` files, sharded or not, and "
            "`.onnx` and `.gguf` files",
            path=target,
        )
    refused = lora_file_error(checkpoint.tensors, target)
    if refused is not None:
        checkpoint.close()
        raise refused
    checkpoint.path = user_path
    return checkpoint


def match_base(name: str, refs: Sequence[ModelRef]) -> ModelRef | None:
    """The model in ``refs`` that an adapter's declared base ``name`` means, or None.

    Tried in order, the first rule that matches any model decides: ``name`` is a path to the model's folder
    or file (peft writes the absolute path of a base loaded from disk); ``name`` equals a model's id (a
    cache entry's ``org/name``); ``name``'s last path component equals a model's id or its id's last
    component (``org/name`` or ``/old/place/name`` finds a folder named ``name``). Adapters are never a base.

    Raises:
        InvalidParameterError: the rule that decides matches several models.
    """
    name = name.strip().rstrip("/")
    candidates = [ref for ref in refs if ref.adapter_base is None]
    if not name or not candidates:
        return None
    real = _existing(name)
    if real is not None:
        by_path = [ref for ref in candidates if real in (ref.path.resolve(), ref.weights_path.resolve())]
        if by_path:
            return _only(name, by_path)
    by_id = [ref for ref in candidates if ref.id == name]
    if by_id:
        return _only(name, by_id)
    last = name.rsplit("/", 1)[-1]
    by_last = [ref for ref in candidates if ref.id.rsplit("/", 1)[-1] == last]
    return _only(name, by_last) if by_last else None


def _existing(name: str) -> Path | None:
    try:
        path = Path(name).expanduser()
        return path.resolve() if os.path.exists(path) else None
    except (OSError, RuntimeError):  # a hub id is no path: too long, or `~user` of nobody
        return None


def _only(name: str, refs: list[ModelRef]) -> ModelRef:
    if len(refs) == 1:
        return refs[0]
    listed = ", ".join(f"`{ref.id}`" for ref in refs)
    raise InvalidParameterError(
        f"the base model `{name}` an adapter declares matches several models: {listed}",
        hint="name the base model's folder with `--base PATH`",
    )


def _open_adapter(
    folder: Path, user_path: Path, resolve_base: BaseResolver | None, boundary: Path
) -> Checkpoint:
    # The adapter's own files first: what is wrong with them is the more specific news.
    config = read_adapter_config(folder, boundary)
    adapter_weights_file(folder)
    base = resolve_base(config.base_name) if resolve_base is not None else None
    if base is None:
        if config.base_name:
            message = (
                f"{shown(user_path)} is a LoRA adapter of `{config.base_name}`, "
                "which is not in this collection"
            )
            hint = "add the base model's folder to the collection, or name it with `--base PATH`"
        else:
            message = f"{shown(user_path)} is a LoRA adapter whose `adapter_config.json` names no base model"
            hint = "name the base model's folder with `--base PATH`"
        raise CheckpointNotFoundError(message, hint=hint, path=user_path)
    # Closes `base` itself when the adapter does not fit it.
    checkpoint = PeftCheckpoint(folder, base, boundary=boundary)
    checkpoint.path = user_path
    return checkpoint


def _weights_file_of_folder(folder: Path) -> Path:
    found = weights_file(folder)
    if found is not None:
        return found
    loose = loose_weight_files(file_names(folder), folder)
    if not loose:
        raise NoModelsFoundError(f"{shown(folder)} holds no weights file", path=folder)
    raise NoModelsFoundError(
        f"{shown(folder)} holds {len(loose)} weight files and no index, so it is not one model",
        hint="pass one of the files; `mothertree recover` treats a folder of checkpoints as a collection",
        path=folder,
    )
