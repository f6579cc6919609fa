"""Pure reductions of one tensor read from every model: pairwise distances and per-model moments.

Both work on a stack ``X`` of shape ``(n_models, numel)`` (one flattened tensor per model, float32) and
accumulate in float64 over column chunks, so the float64 working copy is never larger than one chunk.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Columns per float64 chunk: 2**16 columns x 100 models x 8 bytes = 52 MB at most.
CHUNK_COLUMNS = 1 << 16


def pairwise_squared_distances(stack: npt.NDArray[np.floating]) -> FloatArray:
    """Squared Euclidean distances between the rows of ``stack``, shape ``(n, n)``.

    Uses the Gram identity ``|x_i - x_j|^2 = G_ii + G_jj - 2 G_ij`` after subtracting the column mean.
    Fine-tunes of one parent are nearly identical: uncentred, ``G_ii`` and ``G_ij`` agree to about seven
    digits and their float32 difference is mostly rounding error (relative errors near 100 %). Centring
    removes the shared part, and float64 accumulation keeps the remainder exact to ~1e-12.
    """
    n_models, numel = stack.shape
    gram = np.zeros((n_models, n_models), dtype=np.float64)
    for start in range(0, numel, CHUNK_COLUMNS):
        chunk = stack[:, start : start + CHUNK_COLUMNS].astype(np.float64)
        chunk -= chunk.mean(axis=0, keepdims=True)
        gram += chunk @ chunk.T
    norms = np.diag(gram)
    squared = norms[:, None] + norms[None, :] - 2.0 * gram
    np.fill_diagonal(squared, 0.0)
    # Rounding can leave tiny negatives where two models are identical.
    return np.maximum(squared, 0.0)


def central_moments(stack: npt.NDArray[np.floating]) -> FloatArray:
    """Mean and 2nd-4th central moments of each row, shape ``(n, 4)``: ``[mean, m2, m3, m4]``.

    ``m_k`` is the population moment ``mean((x - mean)^k)``. Two passes over the row (the whole tensor is
    in memory anyway), so the result is exact up to float64 rounding, unlike one-pass raw power sums.
    """
    n_models, numel = stack.shape
    means = np.zeros(n_models, dtype=np.float64)
    for start in range(0, numel, CHUNK_COLUMNS):
        means += stack[:, start : start + CHUNK_COLUMNS].sum(axis=1, dtype=np.float64)
    means /= numel
    sums = np.zeros((n_models, 3), dtype=np.float64)
    for start in range(0, numel, CHUNK_COLUMNS):
        centred = stack[:, start : start + CHUNK_COLUMNS].astype(np.float64) - means[:, None]
        squared = centred * centred
        sums[:, 0] += squared.sum(axis=1)
        sums[:, 1] += (squared * centred).sum(axis=1)
        sums[:, 2] += (squared * squared).sum(axis=1)
    return np.column_stack([means, sums / numel])


def excess_kurtosis(moments: npt.NDArray[np.floating]) -> FloatArray:
    """Fisher (excess) kurtosis ``m4 / m2^2 - 3`` from ``[..., 4]`` moments; NaN for a constant tensor.

    Equals ``scipy.stats.kurtosis(x, fisher=True, bias=True)``.
    """
    m2 = moments[..., 1]
    m4 = moments[..., 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m2 > 0, m4 / (m2 * m2) - 3.0, np.nan)


def pool_moments(moments: npt.NDArray[np.floating], counts: npt.NDArray[np.integer]) -> FloatArray:
    """Moments of the concatenation of several tensors, from each one's moments.

    ``moments`` has shape ``(n_tensors, ..., 4)`` and ``counts`` ``(n_tensors,)``. Shifts every tensor's
    central moments to the pooled mean (binomial expansion), which is exact, unlike averaging kurtoses.
    """
    weights = counts.astype(np.float64) / counts.sum()
    shape = (-1,) + (1,) * (moments.ndim - 2)
    w = weights.reshape(shape)
    mean = (w * moments[..., 0]).sum(axis=0)
    delta = moments[..., 0] - mean
    m2, m3, m4 = moments[..., 1], moments[..., 2], moments[..., 3]
    pooled_m2 = (w * (m2 + delta**2)).sum(axis=0)
    pooled_m3 = (w * (m3 + 3 * delta * m2 + delta**3)).sum(axis=0)
    pooled_m4 = (w * (m4 + 4 * delta * m3 + 6 * delta**2 * m2 + delta**4)).sum(axis=0)
    return np.stack([mean, pooled_m2, pooled_m3, pooled_m4], axis=-1)
