"""FeatureSet: everything recovery needs from the weights, per tensor, small enough to keep.

Reading the weights is the expensive part; the reductions kept here (per-tensor pairwise distances and
per-model moments) are a few MB. Changing λ, the direction sign or the aggregation reruns on them in
milliseconds, and a saved FeatureSet (``.npz``) reruns without the checkpoints.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import InvalidFeatureSetError
from .decay import decay_evidence
from .reductions import excess_kurtosis, mean_squares, relatedness

# A file with ``common_support_norms`` is format 2, so that a mothertree that reads only format 1 refuses
# it rather than orienting a pruned collection by whole-tensor norms without saying so; a file without
# them is format 1, which every version reads alike.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
# Keys of the optional arrays in the .npz file, which is a format other versions read: they stay as they
# are when an attribute is renamed.
_FILE_KEYS = {
    "ranks": "ranks",
    "rank_caps": "rank_caps",
    "clear_ranks": "firm_ranks",
    "common_support_norms": "support_norms",
    "precisions": "precisions",
    "rounded_moments": "rounded_moments",
    "decay_log_factors": "decay_log_factors",
}


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
            (some model pruned), the RMS over the pair's *common support*, the coordinates where both are
            nonzero; NaN where they share none (``features/reductions.py``).
        moments: ``(n_tensors, n_models, 4)`` per-tensor mean and 2nd-4th central moments of each model.
        ranks: ``(n_tensors, n_models, n_models)`` numerical rank of each pairwise difference, -1 where not
            computed; None when not extracted (``features/rank.py``).
        rank_caps: ``(n_tensors,)`` the largest rank each tensor's estimate can report (its sketch size).
        clear_ranks: like ``ranks``, counting only singular values above ``rank.CLEAR_FACTOR`` times the
            noise tolerance (``features/low_rank.py`` says why); None in files written before they existed.
        common_support_norms: ``(n_tensors, n_models, n_models)``, ``[t, i, j]`` the squared norm of model
            i's tensor t over the common support of i and j (for a dense tensor, all coordinates: model i's
            squared norm for every j); None when no tensor is masked.
        precisions: ``(n_tensors, n_models)``, each tensor's storage precision per model as an index in
            ``reductions.PRECISIONS`` (0 F32, 1 F16, 2 BF16); None when no tensor is stored at more than one.
        rounded_moments: ``(2, n_tensors, n_models, 4)``, the moments of each model's tensor rounded to
            F16 and to BF16, where the tensor is stored at more than one precision (NaN elsewhere, and at
            precisions finer than the coarsest of the tensor); None with ``precisions``.
        decay_log_factors: ``(n_models, n_models)``, ``[i, j]`` the log of the common factor by which model
            j's embedding rows that neither run updated are model i's (``features/decay.py``: negative when
            j's are smaller, j decayed from i); NaN where no such rows were found; None when not read.
        known_parents: child id -> parent id where the relation is known, not inferred (a PEFT adapter and
            the base of the collection it was read on).
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
    clear_ranks: npt.NDArray[np.int64] | None = None
    common_support_norms: npt.NDArray[np.float64] | None = None
    precisions: npt.NDArray[np.int8] | None = None
    rounded_moments: npt.NDArray[np.float64] | None = None
    decay_log_factors: npt.NDArray[np.float64] | None = None
    known_parents: dict[str, str] = field(default_factory=dict)
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
        (Placement on the full-size vision split: 99 of 100 edges right, 95 with the plain mean;
        docs/DESIGN.md.)

        A pair that shares no nonzero coordinate of a masked tensor is averaged over its other tensors; one
        that shares none in any tensor has nothing in common and is put as far as the farthest pair.
        """
        mean = _mean_over_tensors(self.rms_distances, weights=np.sqrt(self.numel.astype(np.float64)))
        unshared = self._unshared_pairs()
        if unshared.any():
            mean[unshared] = mean[~unshared].max()  # the diagonal is always shared
        return mean

    def squared_distances(self) -> npt.NDArray[np.float64]:
        """``(n_models, n_models)`` squared Euclidean distance over all compared tensors together.

        What the angle between two models' differences from a third is computed from (``tree.direction``).
        Masked tensors count over each pair's common support; a tensor a pair shares nothing of, not at all.
        """
        squared = self.rms_distances**2 * self.numel.astype(np.float64)[:, None, None]
        return np.asarray(np.nansum(squared, axis=0), dtype=np.float64)

    @property
    def has_ranks(self) -> bool:
        """Whether ranks were extracted (both counts, and the caps), for some pairs at least."""
        return self.ranks is not None and self.clear_ranks is not None and self.rank_caps is not None

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

    def relative_distances(self) -> npt.NDArray[np.float64]:
        """``(n_models, n_models)`` RMS(``W_i - W_j``) / RMS of the two weights, per tensor, then its lower
        quartile over tensors (``reductions.relatedness``).

        Scale-free: about sqrt(2) for unrelated weights of one scale, a few percent for fine-tunes. For a
        masked tensor the RMS is over the pair's common support and the scale stays each whole tensor's
        (zeros included): magnitude pruning cuts the smallest weights, so the scale drops little (to 0.88
        at 70 % for Gaussian weights) and both sides of the 0.5 cut keep their margin.
        """
        scale = self.pair_scales()
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(scale > 0, self.rms_distances / scale, 0.0)
        over_tensors = relatedness(ratio)
        # Sharing no nonzero weight anywhere is no sign of relation: the value of unrelated weights.
        over_tensors[self._unshared_pairs()] = np.sqrt(2.0)
        return over_tensors

    def pair_scales(self) -> npt.NDArray[np.float64]:
        """``(n_tensors, n_models, n_models)`` RMS of the two models' weights, per tensor and pair."""
        mean_square = mean_squares(self.moments)
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
        squared_norms = mean_squares(self.moments) * self.numel[:, None]
        return np.asarray(np.log(squared_norms.sum(axis=0)), dtype=np.float64)

    def kurtosis_pairs(self) -> npt.NDArray[np.float64]:
        """``(n_models, n_models)``: ``[i, j]`` model i's summed kurtosis at the coarser precision of i, j.

        Rounding to fp16 or bf16 changes kurtosis by far more than fine-tuning does, so a model stored in
        bf16 compared with its fp32 parent is compared after rounding the parent to bf16 too
        (``reductions.rounded``). Without mixed precisions every row is ``summed_kurtosis()``.
        """
        return np.asarray(np.nansum(self._at_coarser(excess_kurtosis), axis=0), dtype=np.float64)

    def _at_coarser(self, statistic: Any) -> npt.NDArray[np.float64]:
        """``(n_tensors, n_models, n_models)``: ``statistic`` of moments, ``[t, i, j]`` for model i's tensor
        t at the coarser storage precision of models i and j (as stored where no rounding was needed)."""
        plain = statistic(self.moments)  # (n_tensors, n_models)
        as_stored = np.repeat(plain[:, :, None], self.n_models, axis=2)
        if self.precisions is None or self.rounded_moments is None:
            return as_stored
        at = np.concatenate([plain[None], statistic(self.rounded_moments)])  # (precisions, tensors, models)
        coarser = np.maximum(self.precisions[:, :, None], self.precisions[:, None, :]).astype(np.int64)
        tensors, models = np.meshgrid(np.arange(self.n_tensors), np.arange(self.n_models), indexing="ij")
        values = at[coarser, tensors[:, :, None], models[:, :, None]]
        return np.asarray(np.where(np.isnan(values), as_stored, values), dtype=np.float64)

    def _pair_squared_norms(self) -> npt.NDArray[np.float64]:
        """``(n_tensors, n_models, n_models)``: ``[t, i, j]`` model i's squared norm of tensor t as compared
        with model j: over their common support where a tensor is masked, else at their coarser precision."""
        if self.common_support_norms is not None:
            return self.common_support_norms
        return self._at_coarser(mean_squares) * self.numel.astype(np.float64)[:, None, None]

    def log_norm_pairs(self) -> npt.NDArray[np.float64]:
        """``(n_models, n_models)``: ``[i, j]`` the log squared norm of model i over what it shares with j.

        What the norm direction compares along an edge ``i - j``: ``[j, i] - [i, j]``. Pruning shrinks a
        model's whole-tensor norm whatever its place in the tree; over the coordinates both models kept, a
        fine-tuned child's norm still exceeds its parent's. A tensor stored at two precisions in a pair is
        compared at the coarser one (``kurtosis_pairs`` says why). Without masked tensors or mixed
        precisions every row is constant, ``log_norms()`` repeated, and the comparison is the per-model one.
        """
        with np.errstate(divide="ignore"):
            return np.asarray(np.log(self._pair_squared_norms().sum(axis=0)), dtype=np.float64)

    def clock_evidence(self) -> npt.NDArray[np.float64] | None:
        """``(n_models, n_models)``: +1 where the weight-decay clock says ``i -> j`` (j's untouched rows
        are i's shrunk), -1 for ``j -> i``, 0 where it says nothing; None when the clock was not read
        (``features/decay.py``)."""
        if self.decay_log_factors is None:
            return None
        return decay_evidence(self.decay_log_factors)

    def norm_change_skew(self) -> npt.NDArray[np.float64]:
        """``(n_models, n_models)``: ``[i, j]`` the skewness, over tensors, of the log change of each
        tensor's squared norm from model i to model j (antisymmetric; 0 with fewer than 3 tensors).

        Why its sign points from parent to child whatever the recipe: training adds update energy to every
        tensor unevenly (a few tensors grow much more than the rest: a long right tail), while weight
        decay shrinks every tensor by the same factor (a shift, which leaves the skew as it is). Read
        backwards the tail points left. On the zoo's fans and the shapes zoo it is positive along 134 of 154
        true edges, among them every edge of the weight-decay chains that reverse the norm cue.
        Norms are over each pair's common support and at its coarser precision, as in ``log_norm_pairs``.
        """
        with np.errstate(divide="ignore"):
            own = np.log(self._pair_squared_norms())
        change = np.transpose(own, (0, 2, 1)) - own  # [t, i, j]: log change from i to j
        change = np.where(np.isfinite(change), change, np.nan)
        counted = np.sum(~np.isnan(change), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # pairs without a finite change: 0 below
            centred = change - np.nanmean(change, axis=0)
            m2 = np.nanmean(centred**2, axis=0)
            skew = np.nanmean(centred**3, axis=0) / m2**1.5
        return np.asarray(np.where((counted >= 3) & (m2 > 0), skew, 0.0), dtype=np.float64)

    def subset(self, indices: npt.ArrayLike) -> FeatureSet:
        """The FeatureSet of some of the models, in the order given."""
        idx = np.asarray(indices, dtype=np.int64)
        ids = [self.model_ids[i] for i in idx]

        def pairs(array: npt.NDArray[Any] | None) -> npt.NDArray[Any] | None:
            return None if array is None else array[:, idx][:, :, idx]

        return FeatureSet(
            model_ids=ids,
            model_paths=[self.model_paths[i] for i in idx],
            tensor_names=list(self.tensor_names),
            numel=self.numel.copy(),
            rms_distances=self.rms_distances[:, idx][:, :, idx],
            moments=self.moments[:, idx],
            ranks=pairs(self.ranks),
            rank_caps=None if self.rank_caps is None else self.rank_caps.copy(),
            clear_ranks=pairs(self.clear_ranks),
            common_support_norms=pairs(self.common_support_norms),
            precisions=None if self.precisions is None else self.precisions[:, idx],
            rounded_moments=None if self.rounded_moments is None else self.rounded_moments[:, :, idx],
            decay_log_factors=None
            if self.decay_log_factors is None
            else self.decay_log_factors[np.ix_(idx, idx)],
            known_parents={c: p for c, p in self.known_parents.items() if c in ids and p in ids},
            metadata=dict(self.metadata),
        )

    def save(self, path: str | Path) -> None:
        """Write to a ``.npz`` file (arrays plus a JSON header)."""
        header = {
            "format_version": FORMAT_VERSION if self.common_support_norms is not None else 1,
            "model_ids": self.model_ids,
            "model_paths": self.model_paths,
            "tensor_names": self.tensor_names,
            "metadata": {**self.metadata, "known_parents": self.known_parents},
        }
        optional = {
            key: getattr(self, name) for name, key in _FILE_KEYS.items() if getattr(self, name) is not None
        }
        if self.ranks is None or self.rank_caps is None:  # ranks are of no use without their caps
            for name in ("ranks", "rank_caps", "clear_ranks"):
                optional.pop(_FILE_KEYS[name], None)
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
        """Read a file written by :meth:`save`.

        Raises:
            InvalidFeatureSetError: the file is not one (not a zip of arrays, keys or header missing,
                arrays whose shapes disagree with the header), or of a format this version cannot read.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data["header"]))
                arrays = {key: data[key] for key in ("numel", "rms_distances", "moments")}
                optional = {name: data[key] if key in data else None for name, key in _FILE_KEYS.items()}
        except FileNotFoundError:
            raise InvalidFeatureSetError(f"`{path}` does not exist", path=path) from None
        # np.load reports a damaged file with whatever its zip and format readers raise.
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, RecursionError) as exc:
            raise InvalidFeatureSetError(
                f"`{path}` is not a mothertree FeatureSet: {exc}", path=path
            ) from None
        if not isinstance(header, dict):
            raise InvalidFeatureSetError(f"`{path}` is not a mothertree FeatureSet: no header", path=path)
        if header.get("format_version") not in READABLE_FORMATS:
            raise InvalidFeatureSetError(
                f"`{path}` has FeatureSet format {header.get('format_version')}, this mothertree reads "
                f"{', '.join(map(str, READABLE_FORMATS))}",
                path=path,
            )
        try:
            features = cls(
                model_ids=_strings(header["model_ids"]),
                model_paths=_strings(header["model_paths"]),
                tensor_names=_strings(header["tensor_names"]),
                numel=arrays["numel"].astype(np.int64),
                rms_distances=arrays["rms_distances"].astype(np.float64),
                moments=arrays["moments"].astype(np.float64),
                ranks=_as(optional["ranks"], np.int64),
                rank_caps=_as(optional["rank_caps"], np.int64),
                clear_ranks=_as(optional["clear_ranks"], np.int64),
                common_support_norms=_as(optional["common_support_norms"], np.float64),
                precisions=_as(optional["precisions"], np.int8),
                rounded_moments=_as(optional["rounded_moments"], np.float64),
                decay_log_factors=_as(optional["decay_log_factors"], np.float64),
                known_parents=dict(header.get("metadata", {}).pop("known_parents", {})),
                metadata=dict(header.get("metadata", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidFeatureSetError(
                f"`{path}` is not a mothertree FeatureSet: its header lacks or garbles {exc}", path=path
            ) from None
        wrong = features.shape_errors()
        if wrong:
            raise InvalidFeatureSetError(f"`{path}` is not a mothertree FeatureSet: {wrong[0]}", path=path)
        return features

    def shape_errors(self) -> list[str]:
        """What disagrees between the arrays' shapes and the numbers of models and tensors (none: [])."""
        n, t = self.n_models, self.n_tensors
        expected: dict[str, tuple[int, ...]] = {
            "model_paths": (n,),
            "numel": (t,),
            "rms_distances": (t, n, n),
            "moments": (t, n, 4),
            "ranks": (t, n, n),
            "rank_caps": (t,),
            "clear_ranks": (t, n, n),
            "common_support_norms": (t, n, n),
            "precisions": (t, n),
            "rounded_moments": (2, t, n, 4),
            "decay_log_factors": (n, n),
        }
        errors = []
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is None:
                continue
            actual = (len(value),) if isinstance(value, list) else tuple(value.shape)
            if actual != shape:
                errors.append(
                    f"`{name}` has shape {list(actual)}, but {n} models and {t} tensors need {list(shape)}"
                )
        return errors


def _strings(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TypeError("a list of names")
    return value


def _as(array: npt.NDArray[Any] | None, dtype: type[np.generic]) -> Any:
    return None if array is None else array.astype(dtype)


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
