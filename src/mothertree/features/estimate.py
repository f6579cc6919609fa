"""A FeatureSet from fingerprints alone: what ``extract_features`` measures, estimated, no weights read.

Moments (and so every direction cue) are exact; distances come from the fingerprints' coordinate
samples, ranks from their two-sided sketches (``features.fingerprint`` says how, and how large the
error). The tree step then runs on the result as on a FeatureSet read from the weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from ..io.types import TensorInfo
from .blas import one_blas_thread
from .decay import clock_pairs, combined_log_factors, pair_log_factors
from .extract import GroupArrays, coarser_precisions
from .featureset import FeatureSet
from .fingerprint import Fingerprint
from .low_rank import LowRankRule
from .rank import RankEstimate, block_ranks, nearest_pairs
from .reductions import mean_squares, precision_of

RankRequest = bool | Literal["auto"]


def features_from_fingerprints(
    fingerprints: Sequence[Fingerprint],
    model_ids: Sequence[str],
    model_paths: Sequence[str],
    tensors: Sequence[TensorInfo],
    stored_names: Sequence[Mapping[str, str]],
    *,
    ranks: RankRequest = "auto",
    clock: Sequence[TensorInfo] = (),
    metadata: dict[str, object] | None = None,
) -> FeatureSet:
    """The FeatureSet of these models over the compared ``tensors`` (aligned names).

    ``stored_names[i]`` maps each compared name to the name model ``i`` stores it under (``features.align``).
    ``ranks``: ``True`` every pair's, ``"auto"`` as ``--distance auto`` reads them (each model's nearest,
    then each model's nearest neighbours where some difference is clearly low-rank), ``False`` none.
    ``clock``: the tensors (aligned names) whose sampled blocks give the weight-decay clock, as
    ``extract_features`` reads it from the weights (``features/decay.py``).
    """
    n = len(fingerprints)
    arrays = GroupArrays(len(tensors), n, with_ranks=bool(ranks))
    everyone = list(range(n))
    positions = [{name: k for k, name in enumerate(fp.weights)} for fp in fingerprints]
    slots = [[positions[i][stored_names[i][info.name]] for i in everyone] for info in tensors]
    for t, info in enumerate(tensors):
        arrays.moments[t] = [fingerprints[i].moments[slots[t][i]] for i in everyone]
        stack = np.stack([fingerprints[i].samples[slots[t][i]] for i in everyone])
        arrays.add_distances(t, info, everyone, stack)
        stored = np.array(
            [precision_of(fingerprints[i].tensor_map[stored_names[i][info.name]].dtype) for i in everyone],
            dtype=np.int8,
        )
        if arrays.set_precisions(t, everyone, stored):
            for precision in coarser_precisions(stored):
                arrays.rounded_moments[precision - 1, t] = [
                    fingerprints[i].rounded_moments[precision - 1, slots[t][i]] for i in everyone
                ]
    if ranks:
        with one_blas_thread():  # many small SVDs (features/blas.py)
            _add_ranks(arrays, fingerprints, tensors, slots, stored_names, ranks)
    if clock:
        blocks = [
            np.stack(
                [fp.sketches[positions[i][stored_names[i][info.name]]] for i, fp in enumerate(fingerprints)]
            )
            for info in clock
        ]
        pairs = clock_pairs(arrays.mean_distances(everyone))
        arrays.decay_log_factors = combined_log_factors([pair_log_factors(b, pairs) for b in blocks], n)
    kept = everyone
    return arrays.feature_set(
        kept,
        model_ids=list(model_ids),
        model_paths=list(model_paths),
        tensors=tensors,
        metadata={
            **(metadata or {}),
            "masked_tensors": arrays.masked,
            "ranks": None if not ranks else ("all" if ranks is True else "pairs"),
            "fingerprints": fingerprints[0].params.to_json() if fingerprints else None,
        },
    )


def _add_ranks(
    arrays: GroupArrays,
    fingerprints: Sequence[Fingerprint],
    tensors: Sequence[TensorInfo],
    slots: Sequence[Sequence[int]],
    stored_names: Sequence[Mapping[str, str]],
    ranks: RankRequest,
) -> None:
    """Ranks from the sketches: every pair for ``True``; for ``"auto"`` each model's nearest per tensor,
    then, where one of those is clearly low-rank, each model's ``LowRankRule.neighbours`` nearest."""
    n = len(fingerprints)
    everyone = list(range(n))

    def rank_tensor(t: int, pairs: list[tuple[int, int]] | None) -> None:
        info = tensors[t]
        blocks = np.stack([fingerprints[i].sketches[slots[t][i]] for i in everyone])
        rms_weight = float(np.sqrt(np.mean(mean_squares(arrays.moments[t]))))
        dtypes = [fingerprints[i].tensor_map[stored_names[i][info.name]].dtype for i in everyone]
        estimate = block_ranks(blocks, dtypes, rms_weight, pairs)
        assert arrays.ranks is not None and arrays.clear_ranks is not None
        # Keep what an earlier call measured: the second round adds pairs, it does not forget the first.
        known = arrays.ranks[t] >= 0
        new_ranks, new_clear = estimate.ranks, estimate.clear
        arrays.add_ranks(
            t,
            everyone,
            RankEstimate(
                np.where(known, arrays.ranks[t], new_ranks),
                np.where(known, arrays.clear_ranks[t], new_clear),
                estimate.cap,
            ),
        )

    if ranks is True:
        for t in range(len(tensors)):
            rank_tensor(t, None)
        return
    for t in range(len(tensors)):
        rank_tensor(t, nearest_pairs(arrays.rms_distances[t]))
    rule = LowRankRule()
    nearest = arrays.feature_set(
        everyone, model_ids=[""] * n, model_paths=[""] * n, tensors=tensors, metadata={}
    )
    if not rule.needs_pair_ranks(nearest):
        return
    pairs = rule.pairs_to_rank(nearest)
    for t in range(len(tensors)):
        rank_tensor(t, pairs)
