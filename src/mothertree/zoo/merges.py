"""Merged models, made with mergekit's own merge arithmetic: linear, TIES, SLERP.

``merge_models(method, models, out, weights=..., base=..., density=..., t=...)`` reads the models one
tensor at a time (safetensors), merges each tensor as mergekit's method does and saves the result as
``model.safetensors`` beside the first model's ``config.json``:

- ``linear``: ``sum(w_i * W_i) / sum(w_i)`` (mergekit's ``linear_merge``, normalised);
- ``ties``: task vectors ``W_i - W_base`` trimmed to their largest ``density`` share by magnitude
  (``mergekit.sparsify.sparsify``, ``magnitude``), weighted, signs elected by ``get_mask(..., "sum")``, and
  the agreeing entries averaged onto the base (mergekit's ``GeneralizedTaskArithmeticMerge`` with
  TIES' settings);
- ``dare_ties``: the same with DARE's sparsification: entries dropped at random (``random``, seeded), the
  survivors rescaled to keep the task vector's L1 norm, not normalised by the weights (mergekit's
  ``dare_ties`` defaults);
- ``slerp``: ``mergekit.merge_methods.slerp.slerp(t, W_0, W_1)`` for every tensor of two models.

Why not ``mergekit-yaml``: mergekit 0.1.5's planner fails on every BERT (its optional weight
``embeddings.position_ids`` has aliases, which it concatenates as a tuple to a list), and 0.1.4 does not
import beside pydantic 2.14; the functions called here are the ones its planner calls per tensor. Tensors
that are not floating point (``position_ids``), and task heads whose shapes differ between the models
(a classifier of another class count, which no merge method can combine), are the first model's.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import InvalidParameterError
from .files import WEIGHT_FILES

MergeMethod = Literal["linear", "ties", "dare_ties", "slerp"]
WEIGHTS_FILE = WEIGHT_FILES["safetensors"]
PICKLE_FILE = WEIGHT_FILES["bin"]


def merge_models(
    method: MergeMethod,
    models: Sequence[Path],
    out: Path,
    *,
    weights: Sequence[float] | None = None,
    base: Path | None = None,
    density: float = 0.5,
    t: float = 0.5,
    seed: int = 0,
) -> Path:
    """Merge model folders ``models`` (``model.safetensors``, or a ``pytorch_model.bin`` state dict) into
    the new folder ``out`` (see the module)."""
    from mergekit.merge_methods.generalized_task_arithmetic import get_mask
    from mergekit.merge_methods.slerp import slerp
    from mergekit.sparsify import RescaleNorm, SparsificationMethod, sparsify

    weights = list(weights) if weights is not None else [1.0 / len(models)] * len(models)
    sparse = method in ("ties", "dare_ties")
    if (
        len(weights) != len(models)
        or (method == "slerp" and len(models) != 2)
        or sparse != (base is not None)
    ):
        raise InvalidParameterError(
            f"a {method} merge of {len(models)} models with {len(weights)} weights"
            + (" and a base" if base is not None else ""),
            hint="linear: 2+ models and their weights; ties, dare_ties: 2+ models, weights and a base; "
            "slerp: 2 models and t",
        )
    torch.manual_seed(seed)  # DARE's random drops
    handles = [_open_weights(folder) for folder in models]
    base_handle = _open_weights(base) if base is not None else None
    merged: dict[str, torch.Tensor] = {}
    for name in handles[0].keys():
        tensors = [handle.get_tensor(name) for handle in handles]
        first = tensors[0]
        origin = base_handle.get_tensor(name).float() if base_handle is not None else None
        together = tensors if origin is None else [*tensors, origin]
        if not first.is_floating_point() or any(t.shape != first.shape for t in together):
            merged[name] = first
            continue
        if method == "linear":
            total = torch.zeros_like(first, dtype=torch.float32)
            for tensor, weight in zip(tensors, weights, strict=True):
                total += weight * tensor.float()
            merged[name] = (total / sum(weights)).to(first.dtype)
        elif method == "slerp":
            merged[name] = slerp(torch.tensor(t), tensors[0], tensors[1]).to(first.dtype)
        else:
            assert origin is not None
            dare = method == "dare_ties"
            deltas = torch.stack(
                [
                    sparsify(
                        tensor.float() - origin,
                        density=density,
                        method=SparsificationMethod.random if dare else SparsificationMethod.magnitude,
                        rescale_norm=RescaleNorm.l1 if dare else None,
                    )
                    for tensor in tensors
                ]
            )
            scale = torch.tensor(weights, dtype=torch.float32).reshape(-1, *([1] * first.ndim))
            deltas = deltas * scale
            mask = get_mask(deltas, method="sum")
            if dare:  # not normalised: the weighted survivors are added as they are
                merged[name] = (origin + (deltas * mask).sum(dim=0)).to(first.dtype)
                continue
            divisor = (scale * mask).sum(dim=0)
            divisor[divisor == 0] = 1
            merged[name] = (origin + (deltas * mask).sum(dim=0) / divisor).to(first.dtype)
    out.mkdir(parents=True, exist_ok=False)
    save_file(
        {k: v.contiguous() for k, v in merged.items()}, str(out / WEIGHTS_FILE), metadata={"format": "pt"}
    )
    if (models[0] / "config.json").is_file():
        shutil.copy2(models[0] / "config.json", out / "config.json")
    return out


class _StateDict:
    """A pickled state dict read as tensors only, with safetensors' ``keys`` / ``get_tensor``."""

    def __init__(self, path: Path) -> None:
        self._state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)

    def keys(self) -> list[str]:
        return list(self._state)

    def get_tensor(self, name: str) -> torch.Tensor:
        return self._state[name]


def _open_weights(folder: Path) -> Any:
    """A model folder's weights, one tensor at a time: ``model.safetensors``, else ``pytorch_model.bin``."""
    if (folder / WEIGHTS_FILE).is_file():
        return safe_open(str(folder / WEIGHTS_FILE), "pt")
    if (folder / PICKLE_FILE).is_file():
        return _StateDict(folder / PICKLE_FILE)
    raise InvalidParameterError(
        f"`{folder}` holds neither {WEIGHTS_FILE} nor {PICKLE_FILE}", hint="merge unsharded model folders"
    )
