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
from .rank import clearly_low_rank, is_clearly_low_rank
from .reductions import excess_kurtosis

# Format 2 adds the optional ``support_norms``. A file without them is written as format 1, which every
# version reads alike; one with them is format 2, so that an older mothertree refuses it rather than
# orienting a pruned collection by whole-tensor norms without saying so.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)


@dataclass
class FeatureSet:
    """Per-tensor reductions of one group of comparable models.

    Attributes:
        model_ids: ``(n_models,)`` model ids.
        model_paths: ``(n_models,)`` where each model was read from.
        tensor_names: ``(n_tensors,)`` names of the compared tensors.
        numel: ``(n_tensors,)`` number of elements of each tensor.
        rms_distances: ``(n_tensors, n_models, n_models)`` per-tensor RMS of ``W_i - W_j``
            (Frobenius norm over ``sqrt(numel)``). For a tensor named in ``metadata["masked_tensors"]``
            (some model pruned), the RMS over the coordinates where both are nonzero, NaN where they share
            none (``features/reductions.py``).
        moments: ``(n_tensors, n_models, 4)`` per-tensor mean and 2nd-4th central moments of each model.
        ranks: ``(n_tensors, n_models, n_models)`` numerical rank of each pairwise difference, or None when
            not extracted (``features/rank.py``).
        rank_caps: ``(n_tensors,)`` the largest rank each tensor's estimate can report (its sketch size).
        firm_ranks: like ``ranks``, counted at ``CLIFF`` (4) times the noise tolerance (``features/rank.py``:
            a LoRA update's count barely moves, a dense one cut by rounding noise does); None in files written
            before they existed.
        support_norms: ``(n_tensors, n_models, n_models)``, ``[t, i, j]`` the squared norm of model i's tensor
            t over the coordinates where both i and j are nonzero (for a dense tensor, all of them: model i's
            squared norm for every j); None when no tensor is masked.
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
    firm_ranks: npt.NDArray[np.int64] | None = None
    support_norms: npt.NDArray[np.float64] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_models(self) -> int:
        return len(self.model_ids)

    @property
    def n_tensors(self) -> int:
        return len(self.tensor_names)

    def distances(self) -> npt.NDArray[np.float64]:
        """``(n_models, n_models)`` the per-tensor RMS distances averaged with weights ``sqrt(numel)``.

        That is the sum over tensors of ``||W_i - W_j||_F``, scaled to read as an RMS. On tensors of one
        size (the paper's 48 attention matrices of ViT-B) it is the paper's plain mean of RMS distances;
        where sizes differ (MobileNetV2: 288-weight depthwise kernels beside 400k-weight pointwise convs)
        the plain mean lets the noisy RMS of a few hundred weights count as much as that of a whole layer.
        Measured on the full-size vision zoo split, placement of 100 edges: 99 right against 95 with the
        plain mean; the same on every other split (docs/RESULTS.md).

        A pair that shares no nonzero coordinate of a masked tensor is averaged over its other tensors; one
        that shares none in any tensor has nothing in common and is put as far as the farthest pair.
        """
        mean = _mean_over_tensors(self.rms_distances, weights=np.sqrt(self.numel.astype(np.float64)))
        unshared = self._unshared_pairs()
        if unshared.any():
            mean[unshared] = mean[~unshared].max()  # the diagonal is always shared
        return mean

    @property
    def has_all_ranks(self) -> bool:
        """Whether the rank of every pair's difference is here (not only each model's nearest)."""
        return self.ranks is not None and bool((self.ranks >= 0).all())

    def rank_distances(self) -> npt.NDArray[np.float64]:
        """``(n_models, n_models)`` sum over tensors of the rank of ``W_i - W_j`` (the LoRA distance)."""
        if self.ranks is None or not self.has_all_ranks:
            raise InvalidFeatureSetError(
                "these features hold no ranks"
                if self.ranks is None
                else "these features hold the ranks of only some pairs "
                f"({self.metadata.get('ranks', 'nearest')}), not of every pair",
                hint="extract them again with ranks (`--distance rank`)",
            )
        return np.asarray(self.ranks.sum(axis=0), dtype=np.float64)

    def rank_shares(self) -> npt.NDArray[np.float64]:
        """``(n_models, n_models)`` summed rank of ``W_i - W_j`` over the summed caps; NaN where not known."""
        if self.ranks is None or self.rank_caps is None:
            raise InvalidFeatureSetError("these features hold no ranks", hint="extract them with ranks")
        known = (self.ranks >= 0).all(axis=0)
        shares = self.ranks.sum(axis=0) / max(int(self.rank_caps.sum()), 1)
        return np.where(known, shares, np.nan)

    def low_rank_pairs(self) -> npt.NDArray[np.bool_]:
        """``(n_models, n_models)`` pairs whose difference is clearly low-rank in every tensor (LoRA-like).

        See ``features.rank.is_clearly_low_rank``; False everywhere when no firm ranks were extracted.
        """
        if self.ranks is None or self.firm_ranks is None or self.rank_caps is None:
            return np.zeros((self.n_models, self.n_models), dtype=bool)
        return is_clearly_low_rank(self.ranks, self.firm_ranks, self.rank_caps, self._equal_tensors())

    def has_low_rank_differences(self) -> bool:
        """Whether any computed difference of any tensor is clearly low-rank and not zero.

        With ranks of only each model's nearest model (which differs between tensors), this is the cheap
        sign that the rank of every pair is worth computing.
        """
        if self.ranks is None or self.firm_ranks is None or self.rank_caps is None:
            return False
        clear = clearly_low_rank(self.ranks, self.firm_ranks, self.rank_caps, self._equal_tensors())
        return bool((clear & (self.ranks > 0)).any())

    def _equal_tensors(self) -> npt.NDArray[np.bool_]:
        """``(n_tensors, n, n)`` pairs whose tensors are equal: RMS difference under 1e-6 of the weights'.

        Not exactly 0: distances come from float64 Gram pieces, exact to about 1e-8 for equal tensors; a
        change as small as one fp32 rounding per weight is 6e-8, a real update 1e-4 or more.
        """
        scale = self._pair_scales()
        return np.asarray(np.nan_to_num(self.rms_distances, nan=np.inf) <= 1e-6 * scale, dtype=bool)

    def relative_distances(self) -> npt.NDArray[np.float64]:
        """``(n_models, n_models)`` mean over tensors of RMS(``W_i - W_j``) / RMS of the two weights.

        Scale-free: about sqrt(2) for unrelated weights of one scale, a few percent for fine-tunes. For a
        masked tensor the RMS is over the pair's common support and the scale stays each whole tensor's
        (zeros included): magnitude pruning cuts the smallest weights, so the scale drops little (to 0.88
        at 70 % for Gaussian weights) and both sides of the 0.5 cut keep their margin.
        """
        scale = self._pair_scales()
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(scale > 0, self.rms_distances / scale, 0.0)
        mean = _mean_over_tensors(ratio)
        # Sharing no nonzero weight anywhere is no sign of relation: the value of unrelated weights.
        mean[self._unshared_pairs()] = np.sqrt(2.0)
        return mean

    def _mean_squares(self) -> npt.NDArray[np.float64]:
        """``(n_tensors, n_models)`` mean of the squared weights of each tensor of each model."""
        return np.asarray(self.moments[..., 1] + self.moments[..., 0] ** 2, dtype=np.float64)

    def _pair_scales(self) -> npt.NDArray[np.float64]:
        """``(n_tensors, n_models, n_models)`` RMS of the two models' weights, per tensor and pair."""
        mean_square = self._mean_squares()
        return np.asarray(
            np.sqrt((mean_square[:, :, None] + mean_square[:, None, :]) / 2.0), dtype=np.float64
        )

    def _unshared_pairs(self) -> npt.NDArray[np.bool_]:
        """``(n_models, n_models)`` pairs that share no nonzero coordinate in any compared tensor."""
        if not self.n_tensors:
            return np.zeros((self.n_models, self.n_models), dtype=bool)
        return np.asarray(np.isnan(self.rms_distances).all(axis=0))

    def kurtosis(self) -> npt.NDArray[np.float64]:
        """``(n_tensors, n_models)`` excess kurtosis of each tensor of each model."""
        return excess_kurtosis(self.moments)

    def summed_kurtosis(self) -> npt.NDArray[np.float64]:
        """``(n_models,)`` excess kurtosis summed over tensors (the paper's direction statistic)."""
        return np.asarray(np.nansum(self.kurtosis(), axis=0), dtype=np.float64)

    def log_norms(self) -> npt.NDArray[np.float64]:
        """``(n_models,)`` log of the squared Frobenius norm of all compared tensors together."""
        squared_norms = self._mean_squares() * self.numel[:, None]
        return np.asarray(np.log(squared_norms.sum(axis=0)), dtype=np.float64)

    def log_norm_pairs(self) -> npt.NDArray[np.float64]:
        """``(n_models, n_models)``: ``[i, j]`` the log squared norm of model i over what it shares with j.

        What the norm direction compares along an edge ``i - j``: ``[j, i] - [i, j]``. Pruning shrinks a
        model's whole-tensor norm whatever its place in the tree; over the coordinates both models kept, a
        fine-tuned child's norm still exceeds its parent's. Without masked tensors every row is constant,
        ``log_norms()`` repeated, and the comparison is the per-model one.
        """
        if self.support_norms is None:
            return np.repeat(self.log_norms()[:, None], self.n_models, axis=1)
        with np.errstate(divide="ignore"):
            return np.asarray(np.log(self.support_norms.sum(axis=0)), dtype=np.float64)

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
            firm_ranks=self.firm_ranks[:, idx][:, :, idx] if self.firm_ranks is not None else None,
            rank_caps=None if self.rank_caps is None else self.rank_caps.copy(),
            support_norms=None if self.support_norms is None else self.support_norms[:, idx][:, :, idx],
            metadata=dict(self.metadata),
        )

    def save(self, path: str | Path) -> None:
        """Write to a ``.npz`` file (arrays plus a JSON header)."""
        header = {
            "format_version": FORMAT_VERSION if self.support_norms is not None else 1,
            "model_ids": self.model_ids,
            "model_paths": self.model_paths,
            "tensor_names": self.tensor_names,
            "metadata": self.metadata,
        }
        optional: dict[str, Any] = {}
        if self.ranks is not None and self.rank_caps is not None:
            optional = {"ranks": self.ranks, "rank_caps": self.rank_caps}
            if self.firm_ranks is not None:
                optional["firm_ranks"] = self.firm_ranks
        if self.support_norms is not None:
            optional["support_norms"] = self.support_norms
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
                firm_ranks = data["firm_ranks"] if "firm_ranks" in data else None
                support_norms = data["support_norms"] if "support_norms" in data else None
        except (OSError, ValueError, KeyError) as exc:
            raise InvalidFeatureSetError(
                f"`{path}` is not a mothertree FeatureSet: {exc}", path=path
            ) from exc
        if header.get("format_version") not in READABLE_FORMATS:
            raise InvalidFeatureSetError(
                f"`{path}` has FeatureSet format {header.get('format_version')}, this mothertree reads "
                f"{', '.join(map(str, READABLE_FORMATS))}",
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
            firm_ranks=None if firm_ranks is None else firm_ranks.astype(np.int64),
            support_norms=None if support_norms is None else support_norms.astype(np.float64),
            metadata=dict(header.get("metadata", {})),
        )


def _mean_over_tensors(
    per_tensor: npt.NDArray[np.float64], weights: npt.NDArray[np.float64] | None = None
) -> npt.NDArray[np.float64]:
    """(Weighted) mean over axis 0 skipping NaN (a pair without common support in a masked tensor); NaN
    where all are.
    """
    w = np.ones(len(per_tensor)) if weights is None else np.asarray(weights, dtype=np.float64)
    present = ~np.isnan(per_tensor)
    totals = np.tensordot(w, present, axes=1)
    sums = np.tensordot(w, np.where(present, per_tensor, 0.0), axes=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.where(totals > 0, sums / totals, np.nan), dtype=np.float64)
