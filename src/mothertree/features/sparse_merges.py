"""Sparse merges (TIES, DARE): a model each of whose weights is its base's, one parent's, or a blend.

TIES trims each parent's task vector ``tau_i = W_i - W_base`` to its largest entries, elects a sign per
weight and averages the agreeing survivors onto the base; DARE drops entries at random and rescales the
rest by ``1 / density``. Such a merge lies as far off the segment between its parents as a chain's middle
model lies off its neighbours' (``tree.merges``: 0.73 against 0.71), so distances cannot tell it. Its
weights can:

- where every parent's entry was dropped, the merge *is* its base, exactly (``MIN_UNCHANGED`` of the
  weights of the tensors it changed; a fine-tune changes every weight it trains);
- where one parent's entry alone survived, ``W - W_base`` is that parent's ``tau`` times one scale per
  tensor (1 for TIES; for DARE its weight times the factor that keeps the tensor's L1 norm): the mode of
  the ratio ``(W - W_base) / tau_a`` over the tensor's changed weights; each parent must explain
  ``MIN_SHARE`` of the changed weights so;
- where several survived, ``W - W_base`` is one blend ``alpha tau_a + beta tau_b`` per tensor (least
  squares over those weights): the median ``alpha / (alpha + beta)`` is the parents' weight in the merge.

``MIN_EXPLAINED`` of the changed weights must be one of these, to ``TOLERANCE`` relative. A fine-tune of
the base matches no other model's ``tau`` at one scale anywhere.

``sparse_merges(checkpoints, tensors, rms_distances)`` screens each model against each base candidate
among its nearest on one tensor, the one the two differ most in (the unchanged share), and reads the few
that pass in full, one tensor at a time, against its other near models.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import MotherTreeError
from .fingerprint import Fingerprint


class Readable(Protocol):
    """What the test reads of a model: a tensor's values (a ``Checkpoint``, or a ``SampledModel``)."""

    def read(self, name: str) -> np.ndarray: ...


class SampledModel:
    """A fingerprint read as a model of its samples: each compared tensor's values at the positions every
    fingerprint of that shape samples (``fingerprint.sample_positions``), so the weight-by-weight test runs
    on the same weights of every model, from the store (a statistical test on fewer weights)."""

    def __init__(self, print_: Fingerprint, stored_names: Mapping[str, str]) -> None:
        self._slot = {name: k for k, name in enumerate(print_.weights)}
        self._print, self._stored = print_, stored_names

    def read(self, name: str) -> np.ndarray:
        return self._print.samples[self._slot[self._stored.get(name, name)]]


class _KeptReads:
    """Reads of a few models through one cache of tensors, least recently used dropped first beyond
    ``budget`` bytes: the screen reads one tensor of a model for each of its near models and again for
    each model it is near (160 reads of 25 tensors on ten MiniLMs)."""

    def __init__(self, models: Sequence[Readable], budget: int) -> None:
        self._models, self._budget, self._held = models, budget, 0
        self._kept: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()

    def reader(self, model: int) -> Readable:
        return _KeptModel(self, model)

    def read(self, model: int, name: str) -> np.ndarray:
        key = (model, name)
        if key in self._kept:
            self._kept.move_to_end(key)
            return self._kept[key]
        values = self._models[model].read(name)
        values.flags.writeable = False  # shared by every caller
        self._kept[key] = values
        self._held += values.nbytes
        while self._held > self._budget and len(self._kept) > 1:
            _, dropped = self._kept.popitem(last=False)
            self._held -= dropped.nbytes
        return values


class _KeptModel:
    def __init__(self, reads: _KeptReads, model: int) -> None:
        self._reads, self._model = reads, model

    def read(self, name: str) -> np.ndarray:
        return self._reads.read(self._model, name)


# A TIES merge at density d of k parents keeps the base where all k were trimmed: (1 - d)^k of the
# weights (25 % for two at 0.5); a fine-tune keeps none it trains.
MIN_UNCHANGED = 0.05
# The share of changed weights each parent must explain alone (only-a survivors: d (1 - d) for two).
MIN_SHARE = 0.05
MIN_EXPLAINED = 0.9
# Relative agreement of a weight with its explanation: float32 arithmetic on ``base + s * tau``; and with
# a blend whose two coefficients are fitted.
TOLERANCE = 1e-3
BLEND_TOLERANCE = 1e-2
# A blend's smallest parent share; below it the "blend" is one parent and the base.
MIN_WEIGHT = 0.1
BASES = 8
PARENTS = 8
# Changed weights sampled per tensor: the test is statistical, and holds a few candidates side by side.
SAMPLE_PER_TENSOR = 20_000
# Tensors read and kept for the next pair that reads them (``_KeptReads``).
KEPT_BYTES = 64 << 20


@dataclass(frozen=True)
class SparseMerge:
    """``child`` merges ``parents`` (index, weight) onto ``base`` (indices into the checkpoints)."""

    child: int
    base: int
    parents: tuple[tuple[int, float], ...]
    unchanged: float  # the share of the weights of the tensors it changed that are its base's
    explained: float  # the share of its changed weights one parent or the blend explains


def sparse_merges(
    checkpoints: Sequence[Readable], tensors: Sequence[str], rms_distances: np.ndarray
) -> list[SparseMerge]:
    """The sparse merges among ``checkpoints`` (see the module docstring: Checkpoints, or ``SampledModel``
    views of fingerprints); ``tensors`` are the compared
    weight tensors and ``rms_distances`` their ``(tensors, models, models)`` RMS distances (a FeatureSet's),
    which say which models are near and which tensor a pair differs most in."""
    distances = np.nansum(rms_distances, axis=0)
    kept = _KeptReads(checkpoints, KEPT_BYTES)
    checkpoints = [kept.reader(k) for k in range(len(checkpoints))]
    found = []
    for child in range(len(checkpoints)):
        near = [int(j) for j in np.argsort(distances[child], kind="stable") if j != child][:PARENTS]
        fits = []
        for base in near[:BASES]:
            # The screen: on the tensor the two differ most in, a merge keeps its base's weights where
            # every parent was trimmed; a fine-tune (full or LoRA) changes all of that tensor's weights.
            screen = tensors[int(np.nanargmax(rms_distances[:, child, base]))]
            try:
                same = checkpoints[child].read(screen) == checkpoints[base].read(screen)
                if same.size and np.count_nonzero(same) / same.size < MIN_UNCHANGED:  # np.mean, counted
                    continue
                fit = _merge_onto(checkpoints, tensors, child, base, near)
            except MotherTreeError:  # a tensor that cannot be read is no proof of a merge
                fit = None
            if fit is not None:
                fits.append(fit)
        if fits:
            found.append(max(fits, key=lambda merge: (merge.explained, merge.unchanged)))
    children = {merge.child for merge in found}
    # A model some merge was made from is no merge itself (its parents could look sparse against it).
    return [merge for merge in found if not ({p for p, _ in merge.parents} | {merge.base}) & children]


def _merge_onto(
    checkpoints: Sequence[Readable], tensors: Sequence[str], child: int, base: int, near: list[int]
) -> SparseMerge | None:
    candidates = [j for j in near if j not in (child, base)]
    if len(candidates) < 2:
        return None
    chunks, unchanged = _changed_weights(checkpoints, tensors, child, base, candidates)
    if not chunks or unchanged < MIN_UNCHANGED:
        return None
    # Which weights each candidate explains alone, tensor by tensor: DARE rescales each tensor's survivors
    # by its own factor (mergekit keeps their L1 norm), TIES by 1.
    # The scale is NaN where a candidate's ratio has no mode: it then explains nothing there.
    scales = [np.array([_mode_ratio(delta, part) or np.nan for part in tau]) for delta, tau in chunks]
    alone = [_close(delta[None, :], s[:, None] * tau) for (delta, tau), s in zip(chunks, scales, strict=True)]
    changed = sum(delta.size for delta, _ in chunks)
    shares = sum(a.sum(axis=1) for a in alone) / changed
    order = [int(k) for k in np.argsort(-shares, kind="stable") if shares[k] >= MIN_SHARE]
    if len(order) < 2:
        return None
    a, b = order[0], order[1]
    explained = 0
    weights = []
    for (delta, tau), found, scale in zip(chunks, alone, scales, strict=True):
        single = found[a] | found[b]
        blend = ~single
        explained += int(single.sum())
        if blend.sum() < 2:
            continue
        # Blends are of the two parents, never of a parent and the base: a parent taken for the base fits
        # them with one coefficient near 0.
        pair = np.stack([tau[a][blend], tau[b][blend]], axis=1)
        coefficients, *_ = np.linalg.lstsq(pair, delta[blend], rcond=None)
        if coefficients.min() <= MIN_WEIGHT * coefficients.sum():
            continue
        # DARE blends its survivors at the scales they have alone; TIES at the weights' shares, which
        # least squares finds to a fraction of a percent (hence the looser tolerance of a fit).
        at_scales = _close(delta[blend], pair @ scale[[a, b]])
        fitted = _close(delta[blend], pair @ coefficients, BLEND_TOLERANCE)
        explained += int((at_scales | fitted).sum())
        weights.append(coefficients[0] / coefficients.sum())
    if explained / changed < MIN_EXPLAINED:
        return None
    weight = float(np.median(weights)) if weights else float(shares[a] / (shares[a] + shares[b]))
    return SparseMerge(
        child, base, ((candidates[a], weight), (candidates[b], 1.0 - weight)), unchanged, explained / changed
    )


def _changed_weights(
    checkpoints: Sequence[Readable], tensors: Sequence[str], child: int, base: int, candidates: list[int]
) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    """Per tensor the child changed, ``W_child - W_base`` on (a sample of) its changed weights with each
    candidate's ``W - W_base`` there (``(candidates, weights)``); and the share of those tensors' weights
    that are the base's."""
    rng = np.random.default_rng(0)  # the same sample for every candidate of one pair
    chunks = []
    unchanged = total = 0
    for name in tensors:
        m, b = checkpoints[child].read(name).ravel(), checkpoints[base].read(name).ravel()
        moved = np.flatnonzero(m != b)
        if moved.size == 0:
            continue  # frozen, or untouched by every parent: no evidence either way
        total += m.size
        unchanged += m.size - moved.size
        if moved.size > SAMPLE_PER_TENSOR:
            moved = np.sort(rng.choice(moved, SAMPLE_PER_TENSOR, replace=False))
        tau = np.stack([checkpoints[j].read(name).ravel()[moved] - b[moved] for j in candidates])
        chunks.append((m[moved] - b[moved], tau))
    return chunks, (unchanged / total if total else 0.0)


def _mode_ratio(delta: np.ndarray, tau: np.ndarray) -> float | None:
    """The most common ratio ``delta / tau`` (to ``TOLERANCE``, positive), or None when none repeats."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = delta / tau
    ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
    if ratio.size == 0:
        return None
    keys, counts = np.unique(np.round(np.log(ratio) / TOLERANCE), return_counts=True)
    best = int(np.argmax(counts))
    if counts[best] < 2:
        return None
    return float(np.exp(keys[best] * TOLERANCE))


def _close(a: np.ndarray, b: np.ndarray, tolerance: float = TOLERANCE) -> np.ndarray:
    return np.abs(a - b) <= tolerance * np.maximum(np.abs(a), np.abs(b))
