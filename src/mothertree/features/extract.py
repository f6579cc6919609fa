"""The one heavy loop: read each compared tensor from every model, reduce it, drop it.

Tensor-major, as mergekit gathers one weight from every model before merging it: peak memory is about
``n_models x largest compared tensor`` plus a float64 chunk, never a whole model. A model whose tensor
cannot be read, or holds NaN/inf, is dropped from then on and reported; the others go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from .._progress import progress
from ..errors import MotherTreeError, NonFiniteWeightsError
from ..io.types import BrokenModel, Checkpoint, TensorInfo
from .featureset import FeatureSet
from .reductions import central_moments, pairwise_squared_distances

LOG = logging.getLogger(__name__)


def extract_features(
    checkpoints: Sequence[Checkpoint],
    model_ids: Sequence[str],
    tensors: Sequence[TensorInfo],
    *,
    metadata: dict[str, object] | None = None,
) -> tuple[FeatureSet, list[BrokenModel]]:
    """Per-tensor distances and moments of ``checkpoints``, plus the models that failed on the way.

    The returned FeatureSet holds only the models that were read completely and were finite.
    """
    n_models, n_tensors = len(checkpoints), len(tensors)
    rms_distances = np.full((n_tensors, n_models, n_models), np.nan)
    moments = np.full((n_tensors, n_models, 4), np.nan)
    failed: dict[int, Exception] = {}
    started = time.perf_counter()

    for t, info in enumerate(progress(tensors, desc="reading tensors", total=n_tensors, unit="tensor")):
        read_from = [i for i in range(n_models) if i not in failed]
        # Filled row by row so that each model's array is freed as soon as it is copied in.
        stack = np.empty((len(read_from), info.numel), dtype=np.float32)
        filled: list[int] = []
        for i in read_from:
            try:
                row = checkpoints[i].read(info.name).reshape(-1)
            except (MotherTreeError, OSError, ValueError, KeyError) as exc:
                failed[i] = exc
                LOG.warning("skipping `%s`: %s", checkpoints[i].path, exc)
                continue
            if not np.isfinite(row).all():
                failed[i] = NonFiniteWeightsError(
                    f"`{checkpoints[i].path}` has NaN or infinite values in `{info.name}`",
                    path=checkpoints[i].path,
                )
                LOG.warning("skipping `%s`: non-finite values in `%s`", checkpoints[i].path, info.name)
                continue
            stack[len(filled)] = row
            filled.append(i)
        values = stack[: len(filled)]
        index = np.asarray(filled)
        rms_distances[t][np.ix_(index, index)] = np.sqrt(pairwise_squared_distances(values) / info.numel)
        moments[t, index] = central_moments(values)
        del stack, values

    kept = [i for i in range(n_models) if i not in failed]
    features = FeatureSet(
        model_ids=[model_ids[i] for i in kept],
        model_paths=[str(checkpoints[i].path) for i in kept],
        tensor_names=[info.name for info in tensors],
        numel=np.array([info.numel for info in tensors], dtype=np.int64),
        rms_distances=rms_distances[:, kept][:, :, kept],
        moments=moments[:, kept],
        metadata={**(metadata or {}), "seconds": round(time.perf_counter() - started, 3)},
    )
    broken = [BrokenModel(path=checkpoints[i].path, error=failed[i]) for i in sorted(failed)]
    return features, broken
