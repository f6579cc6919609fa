"""FeatureSet: everything recovery needs from the weights, per tensor, small enough to keep.

Reading the weights is the expensive part; the reductions kept here (per-tensor pairwise distances and
per-model moments) are a few MB. Changing λ, the direction sign or the aggregation reruns on them in
milliseconds, and a saved FeatureSet (``.npz``) reruns without the checkpoints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import InvalidFeatureSetError
from .reductions import excess_kurtosis

FORMAT_VERSION = 1


@dataclass
class FeatureSet:
    """Per-tensor reductions of one group of comparable models.

    Attributes:
        model_ids: ``(n_models,)`` model ids.
        model_paths: ``(n_models,)`` where each model was read from.
        tensor_names: ``(n_tensors,)`` names of the compared tensors.
        numel: ``(n_tensors,)`` number of elements of each tensor.
        rms_distances: ``(n_tensors, n_models, n_models)`` per-tensor RMS of ``W_i - W_j``
            (Frobenius norm over ``sqrt(numel)``).
        moments: ``(n_tensors, n_models, 4)`` per-tensor mean and 2nd-4th central moments of each model.
        ranks: ``(n_tensors, n_models, n_models)`` numerical rank of each pairwise difference, or None when
            not extracted (``features/rank.py``).
        rank_caps: ``(n_tensors,)`` the largest rank each tensor's estimate can report (its sketch size).
        metadata: free-form provenance (selection rule, reading time, ...).
    """

    model_ids: list[str]
    model_paths: list[str]
    tensor_names: list[str]
    numel: npt.NDArray[np.int64]
    rms_distances: npt.NDArray[np.float64]
    moments: npt.NDArray[np.float64]
    ranks: npt.NDArray[np.int64] | None = None
    rank_caps: npt.NDArray[np.int64] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_models(self) -> int:
        return len(self.model_ids)

    @property
    def n_tensors(self) -> int:
        return len(self.tensor_names)

    def distances(self) -> npt.NDArray[np.float64]:
        """``(n_models, n_models)`` mean over tensors of the per-tensor RMS distance (the paper's)."""
        return np.asarray(self.rms_distances.mean(axis=0), dtype=np.float64)

    def rank_distances(self) -> npt.NDArray[np.float64]:
        """``(n_models, n_models)`` sum over tensors of the rank of ``W_i - W_j`` (the LoRA distance)."""
        if self.ranks is None:
            raise InvalidFeatureSetError(
                "these features hold no ranks",
                hint="extract them again with ranks (`--distance rank` or `auto`)",
            )
        return np.asarray(self.ranks.sum(axis=0), dtype=np.float64)

    def low_rank_share(self) -> float:
        """Median over models of the rank of its difference to its nearest model, as a share of the cap.

        The nearest model is the one at the smallest l2 distance (the likely parent or child). About 1 for
        full fine-tunes (their updates are dense), small for LoRA fine-tunes (a child differs from its parent
        by the adapter's rank).
        """
        if self.ranks is None or self.rank_caps is None:
            raise InvalidFeatureSetError("these features hold no ranks")
        share = (self.ranks / np.maximum(self.rank_caps, 1)[:, None, None]).mean(axis=0)
        distances = self.distances()
        np.fill_diagonal(distances, np.inf)
        nearest = distances.argmin(axis=1)
        return float(np.median(share[np.arange(self.n_models), nearest]))

    def relative_distances(self) -> npt.NDArray[np.float64]:
        """``(n_models, n_models)`` mean over tensors of RMS(``W_i - W_j``) / RMS of the two weights.

        Scale-free: about sqrt(2) for unrelated weights of one scale, a few percent for fine-tunes.
        """
        mean_square = self.moments[..., 1] + self.moments[..., 0] ** 2
        scale = np.sqrt((mean_square[:, :, None] + mean_square[:, None, :]) / 2.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(scale > 0, self.rms_distances / scale, 0.0)
        return np.asarray(ratio.mean(axis=0), dtype=np.float64)

    def kurtosis(self) -> npt.NDArray[np.float64]:
        """``(n_tensors, n_models)`` excess kurtosis of each tensor of each model."""
        return excess_kurtosis(self.moments)

    def summed_kurtosis(self) -> npt.NDArray[np.float64]:
        """``(n_models,)`` excess kurtosis summed over tensors (the paper's direction statistic)."""
        return np.asarray(np.nansum(self.kurtosis(), axis=0), dtype=np.float64)

    def log_norms(self) -> npt.NDArray[np.float64]:
        """``(n_models,)`` log of the squared Frobenius norm of all compared tensors together."""
        mean_square = self.moments[..., 1] + self.moments[..., 0] ** 2
        return np.asarray(np.log((mean_square * self.numel[:, None]).sum(axis=0)), dtype=np.float64)

    def subset(self, indices: npt.ArrayLike) -> FeatureSet:
        """The FeatureSet of some of the models, in the order given."""
        idx = np.asarray(indices, dtype=np.int64)
        return FeatureSet(
            model_ids=[self.model_ids[i] for i in idx],
            model_paths=[self.model_paths[i] for i in idx],
            tensor_names=list(self.tensor_names),
            numel=self.numel.copy(),
            rms_distances=self.rms_distances[:, idx][:, :, idx],
            moments=self.moments[:, idx],
            ranks=self.ranks[:, idx][:, :, idx] if self.ranks is not None else None,
            rank_caps=None if self.rank_caps is None else self.rank_caps.copy(),
            metadata=dict(self.metadata),
        )

    def save(self, path: str | Path) -> None:
        """Write to a ``.npz`` file (arrays plus a JSON header)."""
        header = {
            "format_version": FORMAT_VERSION,
            "model_ids": self.model_ids,
            "model_paths": self.model_paths,
            "tensor_names": self.tensor_names,
            "metadata": self.metadata,
        }
        optional: dict[str, Any] = {}
        if self.ranks is not None and self.rank_caps is not None:
            optional = {"ranks": self.ranks, "rank_caps": self.rank_caps}
        with open(path, "wb") as handle:
            np.savez_compressed(
                handle,
                header=np.array(json.dumps(header)),
                numel=self.numel,
                rms_distances=self.rms_distances,
                moments=self.moments,
                **optional,
            )

    @classmethod
    def load(cls, path: str | Path) -> FeatureSet:
        """Read a file written by :meth:`save`."""
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                arrays = {key: data[key] for key in ("numel", "rms_distances", "moments")}
                ranks = data["ranks"] if "ranks" in data else None
                rank_caps = data["rank_caps"] if "rank_caps" in data else None
        except (OSError, ValueError, KeyError) as exc:
            raise InvalidFeatureSetError(
                f"`{path}` is not a mothertree FeatureSet: {exc}", path=path
            ) from exc
        if header.get("format_version") != FORMAT_VERSION:
            raise InvalidFeatureSetError(
                f"`{path}` has FeatureSet format {header.get('format_version')}, this mothertree reads "
                f"{FORMAT_VERSION}",
                path=path,
            )
        return cls(
            model_ids=list(header["model_ids"]),
            model_paths=list(header["model_paths"]),
            tensor_names=list(header["tensor_names"]),
            numel=arrays["numel"].astype(np.int64),
            rms_distances=arrays["rms_distances"].astype(np.float64),
            moments=arrays["moments"].astype(np.float64),
            ranks=None if ranks is None else ranks.astype(np.int64),
            rank_caps=None if rank_caps is None else rank_caps.astype(np.int64),
            metadata=dict(header.get("metadata", {})),
        )
