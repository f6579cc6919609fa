"""The files the zoo writes: where its cache is, how a file is written safely, state dicts in both formats.

Every file is written under a temporary name and renamed into place, so that a reader (or a build resumed
after a kill) never sees half of one. State dicts are stored as users store them: ``pytorch_model.bin``
(``torch.save``) or ``model.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import safetensors.torch
import torch

__all__ = [
    "TRUTH_FILE",
    "WEIGHT_FILES",
    "atomic_write",
    "cache_dir",
    "load_state_dict",
    "plain_state_dict",
    "save_state_dict",
    "weights_digest",
    "write_json",
]

# A built graph's edges and per-model records, beside the model folders.
TRUTH_FILE = "truth.json"

WeightsFormat = Literal["bin", "safetensors"]
WEIGHT_FILES: dict[str, str] = {"bin": "pytorch_model.bin", "safetensors": "model.safetensors"}


def cache_dir() -> Path:
    """``$MOTHERTREE_CACHE``, else ``$XDG_CACHE_HOME/mothertree``, else ``~/.cache/mothertree``."""
    if os.environ.get("MOTHERTREE_CACHE"):
        return Path(os.environ["MOTHERTREE_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "mothertree"
    return Path.home() / ".cache" / "mothertree"


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)``, then rename onto ``path``: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, value: object) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value, indent=2) + "\n"))


def plain_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Contiguous, detached copies: safetensors refuses strided views, and a copy cannot alias the live model.
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def save_state_dict(state: Mapping[str, torch.Tensor], folder: Path, fmt: WeightsFormat) -> Path:
    """Write ``state`` into ``folder`` as ``pytorch_model.bin`` or ``model.safetensors``; return the file."""
    path = folder / WEIGHT_FILES[fmt]
    if fmt == "safetensors":
        # Serialised here and written by us: save_file creates its file owner-only (0600), unlike torch.save.
        atomic_write(path, lambda tmp: tmp.write_bytes(safetensors.torch.save(dict(state))))
    else:
        atomic_write(path, lambda tmp: torch.save(dict(state), tmp))
    return path


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or pickled ``.bin`` state dict (safely: tensors only)."""
    if path.suffix == ".safetensors":
        return safetensors.torch.load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def weights_digest(folder: Path) -> str:
    """SHA-256 over every tensor (name, dtype, shape, bytes) of the weight files in ``folder``.

    Independent of file layout details (zip timestamps, shard boundaries), so two builds with the same
    seed compare equal exactly when their weights do.
    """
    digest = hashlib.sha256()
    files = sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin")])
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        tensors.update(load_state_dict(path))
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        # Bytes through a uint8 view: numpy has no bfloat16, and 0-d tensors cannot be viewed directly.
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    # Exports (ONNX, GGUF) are one file each, digested as they are.
    for path in sorted([*folder.glob("*.onnx"), *folder.glob("*.gguf")]):
        digest.update(f"{path.name}|".encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
