"""Pair statistics of a large group straight from its fingerprints, for the pairs asked only.

``features_from_fingerprints`` builds ``(tensors, n, n)`` arrays: right for hundreds of models, not for
10,000 (800 MB per array). Here the group's fingerprints are stacked once (``GroupFingerprints``) and
any batch of pairs ``(I, J)`` gets what recovery reads of a pair, as ``FeatureSet`` computes it:
distance, relative distance, squared distance, and the changes of the direction cues from ``I`` to ``J``
(norm, kurtosis at the pair's coarser precision, the skew of per-tensor norm changes). Which pairs are
asked is the candidate graph's business (``nearest_pairs``: each model's nearest by a maintained
nearest-neighbour index).

Not here (the dense path keeps them): common-support distances of pruned models and LoRA ranks; a group
this large is placed by l2 on whole tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..io.types import TensorInfo
from .fingerprint import Fingerprint
from .reductions import excess_kurtosis, mean_squares, precision_of, relatedness

# Pairs per batch: the per-tensor differences of one batch are ``PAIR_BATCH x samples`` float32.
PAIR_BATCH = 4096
# Coordinates per tensor in the nearest-neighbour vectors, and the most in all.
VECTOR_PER_TENSOR = 256
VECTOR_DIMENSIONS = 4096


@dataclass(frozen=True)
class PairStats:
    """Statistics of pairs ``(I[k], J[k])``; changes are from ``I`` to ``J`` (antisymmetric)."""

    distance: npt.NDArray[np.float64]
    relative: npt.NDArray[np.float64]
    squared: npt.NDArray[np.float64]
    norm_change: npt.NDArray[np.float64]
    kurtosis_change: npt.NDArray[np.float64]
    skew: npt.NDArray[np.float64]


class GroupFingerprints:
    """The fingerprints of one architecture group, stacked tensor by tensor over ``tensors``.

    ``stored_names[i]`` maps each compared (aligned) name to model ``i``'s own (``features.align``).
    Holds the samples (``n x samples`` float32 per tensor) and moments; not the blocks.
    """

    def __init__(
        self,
        numel: npt.ArrayLike,
        samples: list[npt.NDArray[np.float32]],
        moments: npt.NDArray[np.float64],
        precisions: npt.NDArray[np.int64],
    ) -> None:
        """``samples``: per tensor ``(n, samples)``; ``moments``: ``(3, tensors, n, 4)``, as stored and at
        F16 and BF16; ``precisions``: ``(tensors, n)`` each tensor's storage precision per model."""
        self.numel = np.asarray(numel, dtype=np.float64)
        self.samples = samples
        self.moments = moments
        self.precisions = precisions
        self.n_models = int(moments.shape[2])

    @classmethod
    def from_fingerprints(
        cls,
        fingerprints: Sequence[Fingerprint],
        tensors: Sequence[TensorInfo],
        stored_names: Sequence[dict[str, str]],
    ) -> GroupFingerprints:
        n = len(fingerprints)
        samples: list[npt.NDArray[np.float32]] = []
        moments = np.zeros((3, len(tensors), n, 4))
        precisions = np.zeros((len(tensors), n), dtype=np.int64)
        positions = [{name: k for k, name in enumerate(fp.weights)} for fp in fingerprints]
        for t, info in enumerate(tensors):
            slots = [positions[i][stored_names[i][info.name]] for i in range(n)]
            samples.append(np.stack([fingerprints[i].samples[slots[i]] for i in range(n)]))
            moments[0, t] = [fingerprints[i].moments[slots[i]] for i in range(n)]
            moments[1:, t] = np.stack(
                [fingerprints[i].rounded_moments[:, slots[i]] for i in range(n)], axis=1
            )
            precisions[t] = [
                precision_of(fingerprints[i].tensor_map[stored_names[i][info.name]].dtype) for i in range(n)
            ]
        return cls([info.numel for info in tensors], samples, moments, precisions)

    def vectors(self) -> npt.NDArray[np.float32]:
        """``(n, dims)`` vectors whose squared distances estimate the pairs' squared distances (a strided
        subset of each tensor's samples, scaled by ``sqrt(numel / kept)``), centred on their mean."""
        per_tensor = max(1, min(VECTOR_PER_TENSOR, VECTOR_DIMENSIONS // max(len(self.samples), 1)))
        parts = []
        for t, samples in enumerate(self.samples):
            step = max(1, samples.shape[1] // per_tensor)
            kept = samples[:, ::step][:, :per_tensor].astype(np.float64)
            parts.append(kept * np.sqrt(self.numel[t] / max(kept.shape[1], 1)))
        vectors = np.concatenate(parts, axis=1)
        # Near-identical models: without centring, float32 differences of large vectors are mostly rounding.
        vectors -= vectors.mean(axis=0, keepdims=True)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def pair_stats(self, first: npt.ArrayLike, second: npt.ArrayLike) -> PairStats:
        """``PairStats`` of the pairs ``(first[k], second[k])``, in batches of ``PAIR_BATCH``."""
        i_all = np.asarray(first, dtype=np.int64)
        j_all = np.asarray(second, dtype=np.int64)
        chunks = [
            self._batch(i_all[s : s + PAIR_BATCH], j_all[s : s + PAIR_BATCH])
            for s in range(0, len(i_all), PAIR_BATCH)
        ]
        if not chunks:
            empty = np.zeros(0)
            return PairStats(empty, empty, empty, empty, empty, empty)
        return PairStats(
            *(np.concatenate([getattr(c, f) for c in chunks]) for f in PairStats.__dataclass_fields__)
        )

    def _batch(self, i: npt.NDArray[np.int64], j: npt.NDArray[np.int64]) -> PairStats:
        n_tensors = len(self.samples)
        rms = np.zeros((n_tensors, len(i)))
        for t, samples in enumerate(self.samples):
            difference = samples[i].astype(np.float64) - samples[j]
            rms[t] = np.sqrt(np.mean(difference * difference, axis=1))
        weights = np.sqrt(self.numel)
        distance = weights @ rms / weights.sum()
        plain_ms = mean_squares(self.moments[0])  # (t, n)
        scale = np.sqrt((plain_ms[:, i] + plain_ms[:, j]) / 2.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = relatedness(np.where(scale > 0, rms / scale, 0.0))
        squared = (rms**2 * self.numel[:, None]).sum(axis=0)
        # Each side's moments at the pair's coarser storage precision (``FeatureSet._at_coarser``).
        coarser = np.maximum(self.precisions[:, i], self.precisions[:, j])  # (t, pairs)
        tensors = np.arange(n_tensors)[:, None]
        at_i = self.moments[coarser, tensors, i[None, :]]  # (t, pairs, 4)
        at_j = self.moments[coarser, tensors, j[None, :]]
        norm_i = mean_squares(at_i) * self.numel[:, None]
        norm_j = mean_squares(at_j) * self.numel[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            norm_change = np.log(norm_j.sum(axis=0)) - np.log(norm_i.sum(axis=0))
            log_change = np.log(norm_j) - np.log(norm_i)  # (t, pairs)
        kurtosis_change = np.nansum(excess_kurtosis(at_j), axis=0) - np.nansum(excess_kurtosis(at_i), axis=0)
        return PairStats(distance, relative, squared, norm_change, kurtosis_change, _skew(log_change))


def _skew(change: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Skewness over tensors (axis 0) of each pair's log norm changes; 0 with fewer than 3 tensors or
    none spread (``FeatureSet.norm_change_skew``)."""
    change = np.where(np.isfinite(change), change, np.nan)
    counted = np.sum(~np.isnan(change), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        centred = change - np.nanmean(change, axis=0) if change.size else change
        m2 = np.nanmean(centred**2, axis=0)
        skew = np.nanmean(centred**3, axis=0) / m2**1.5
    return np.asarray(np.where((counted >= 3) & (m2 > 0), skew, 0.0), dtype=np.float64)


def nearest_pairs(
    vectors: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Each model with its ``k`` nearest others by ``vectors`` (faiss HNSW), as pairs ``i < j``, no
    repeats: the candidate graph."""
    import faiss  # only large groups need it

    n, dims = vectors.shape
    k = min(k, n - 1)
    if k < 1:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    index = faiss.IndexHNSWFlat(dims, 32)
    index.hnsw.efConstruction = 80
    index.add(vectors)
    index.hnsw.efSearch = max(64, 2 * k)
    _, neighbours = index.search(vectors, k + 1)
    rows = np.repeat(np.arange(n, dtype=np.int64), neighbours.shape[1])
    cols = neighbours.reshape(-1).astype(np.int64)
    keep = (cols >= 0) & (cols != rows)
    low, high = np.minimum(rows[keep], cols[keep]), np.maximum(rows[keep], cols[keep])
    pairs = np.unique(low * n + high)
    return pairs // n, pairs % n
