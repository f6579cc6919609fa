"""Pure reductions of one tensor read from every model: pairwise distances and per-model moments.

All work on a stack ``X`` of shape ``(n_models, numel)`` (one flattened tensor per model, float32) and
accumulate in float64 over column chunks, so the float64 working copy is never larger than one chunk.

Magnitude-pruned copies hold exact zeros where their parent holds weights; compared over every coordinate,
a pruned model sits as far from its parent as the norm of what was cut, far beyond any fine-tuning step.
For a stack where some model is sparse (``is_sparse``) ``common_support_distances`` compares each pair only
where both models kept their weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from . import _linalg, _moments

FloatArray = npt.NDArray[np.float64]

# Columns per float64 chunk: 2**16 columns x 100 models x 8 bytes = 52 MB at most.
CHUNK_COLUMNS = 1 << 16
# Stacks of at most this many float32 rows get their Gram matrix from C (``features/_linalg.c``);
# past a few dozen models BLAS's blocked products beat its plain pairwise sums.
GRAM_KERNEL_ROWS = 48
# The common-support distance holds about four chunk-sized float64 arrays at once: a quarter of the columns.
MASKED_CHUNK_COLUMNS = CHUNK_COLUMNS // 4

# A tensor is compared on the common support when some model has more than this share of exact zeros in it.
# Trained dense float weights are continuous: an exact zero is a ~1e-7 event per entry (a zero-padding row
# of an embedding is ~0.003 %), while magnitude pruning zeroes 10-90 %. One percent sits between the two
# with a wide margin on both sides. Coarsely quantised checkpoints (fp8, int8 read dequantised) may round a
# few percent of their smallest weights to zero and cross it too; leaving those coordinates out loses only
# rounding noise.
SPARSE_ZERO_SHARE = 0.01

# Threads the moments kernel sums a tensor's blocks on (the cores this process may run on). The result is
# the same bits for any count.
KERNEL_THREADS = max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1, 8))
# Tensors smaller than this are summed on one thread: starting threads costs more than they save.
PARALLEL_FROM = 1 << 21


# Which per-tensor relative distance stands for a pair (``relatedness``): the lower quartile over tensors.
RELATEDNESS_QUANTILE = 0.25


def relatedness(relative: npt.NDArray[np.floating]) -> FloatArray:
    """The relative distance of each pair over its tensors (axis 0): their lower quartile, skipping NaN (a
    pair without common support in a masked tensor); NaN where every tensor is.

    Why not the mean: unrelated weights sit near sqrt(2) in *every* tensor, while a fine-tune may move a
    few tensors as far as that and leave the rest near its parent (a rank-64 LoRA at a high learning rate
    moved one attention matrix by 1.07 of its scale and left the pooler untouched: mean 0.56, lower
    quartile 0.36). The quartile keeps both sides of the ``UNRELATED_ABOVE`` cut wide (docs/DESIGN.md).
    """
    values = np.asarray(relative, dtype=np.float64)
    if values.shape[0] == 0:
        return np.full(values.shape[1:], np.nan)
    nan = np.isnan(values)
    gapped = np.asarray(nan.any(axis=0))
    # np.quantile sorts every pair at once; nanquantile calls Python once a pair (35 s for 1,000 models),
    # so it gets only the pairs with a gap, the same numbers as it would give for the others.
    quartile = np.quantile(np.where(gapped[None], 0.0, values), RELATEDNESS_QUANTILE, axis=0)
    missing = np.asarray(nan.all(axis=0))
    partial = gapped & ~missing
    if partial.any():
        quartile[partial] = np.nanquantile(values[:, partial], RELATEDNESS_QUANTILE, axis=0)
    return np.asarray(np.where(missing, np.nan, quartile), dtype=np.float64)


def pairwise_squared_distances(stack: npt.NDArray[np.floating]) -> FloatArray:
    """Squared Euclidean distances between the rows of ``stack``, shape ``(n, n)``.

    Uses the Gram identity ``|x_i - x_j|^2 = G_ii + G_jj - 2 G_ij`` after subtracting the column mean.
    Fine-tunes of one parent are nearly identical: uncentred, ``G_ii`` and ``G_ij`` agree to about seven
    digits and their float32 difference is mostly rounding error (relative errors near 100 %). Centring
    removes the shared part, and float64 accumulation keeps the remainder exact to ~1e-12.
    """
    gram = centred_gram(stack)
    norms = np.diag(gram)
    squared = norms[:, None] + norms[None, :] - 2.0 * gram
    np.fill_diagonal(squared, 0.0)
    # Rounding can leave tiny negatives where two models are identical.
    return np.maximum(squared, 0.0)


def centred_gram(stack: npt.NDArray[np.floating]) -> FloatArray:
    """``(n, n)`` Gram matrix of the rows of ``stack`` less the mean row, in float64: from the C kernel
    for a few float32 rows, from float64 chunks and BLAS otherwise (the same values to ~1e-12)."""
    n_models, numel = stack.shape
    gram = np.zeros((n_models, n_models), dtype=np.float64)
    if 0 < n_models <= GRAM_KERNEL_ROWS and stack.dtype == np.float32:
        _linalg.centred_gram(np.ascontiguousarray(stack), gram, n_models)
        return gram
    for start in range(0, numel, CHUNK_COLUMNS):
        chunk = stack[:, start : start + CHUNK_COLUMNS].astype(np.float64)
        chunk -= chunk.mean(axis=0, keepdims=True)
        gram += chunk @ chunk.T
    return gram


def zero_shares(stack: npt.NDArray[np.floating]) -> FloatArray:
    """``(n,)`` share of exact zeros in each row (counted by chunks, so no full-size mask is made)."""
    n_models, numel = stack.shape
    zeros = np.zeros(n_models, dtype=np.float64)
    for start in range(0, numel, CHUNK_COLUMNS):
        zeros += (stack[:, start : start + CHUNK_COLUMNS] == 0).sum(axis=1)
    return zeros / max(numel, 1)


def is_sparse(stack: npt.NDArray[np.floating], threshold: float = SPARSE_ZERO_SHARE) -> bool:
    """Whether any row has more than ``threshold`` exact zeros: the sign of a pruned copy.

    One model suffices: the whole tensor then switches to the common-support distance, so that all pairs of
    the tensor are measured the same way (dense pairs get the same value either way, up to rounding).
    """
    return bool(stack.size) and float(zero_shares(stack).max()) > threshold


def common_support_distances(stack: npt.NDArray[np.floating]) -> tuple[FloatArray, FloatArray]:
    """Mean squared difference of each pair over the coordinates where both are nonzero, and norms there.

    Returns ``(mean_squares, norms)``, both ``(n, n)``: ``mean_squares[i, j]`` is
    ``sum_k m_ik m_jk (x_ik - x_jk)^2 / sum_k m_ik m_jk`` with ``m = (x != 0)``, NaN where the pair shares
    no nonzero coordinate (nothing to compare; 0 on the diagonal); ``norms[i, j]`` is
    ``sum_k m_ik m_jk x_ik^2``, model i's squared norm over what it shares with j, so that a pruned child and
    its parent compare norms over the same weights.

    The masked Gram identity ``A_ij + A_ji - 2 G_ij`` (``A = (m * x'^2) m^T``, ``G = (m * x')(m * x')^T``)
    holds for any per-column reference subtracted in ``x' = x - ref``; as in ``pairwise_squared_distances``
    the reference is the column mean (here over the models that keep the coordinate), without which the
    terms of near-identical models cancel to rounding error. Everything is float64, by column chunks.
    """
    n_models, numel = stack.shape
    spread = np.zeros((n_models, n_models), dtype=np.float64)  # A: centred squares over the shared support
    cross = np.zeros((n_models, n_models), dtype=np.float64)  # G: centred products over the shared support
    shared = np.zeros((n_models, n_models), dtype=np.float64)  # N: how many coordinates each pair shares
    norms = np.zeros((n_models, n_models), dtype=np.float64)
    for start in range(0, numel, MASKED_CHUNK_COLUMNS):
        chunk = stack[:, start : start + MASKED_CHUNK_COLUMNS].astype(np.float64)
        kept = (chunk != 0).astype(np.float64)
        counts = kept.sum(axis=0)
        reference = np.divide(chunk.sum(axis=0), counts, out=np.zeros_like(counts), where=counts > 0)
        norms += (chunk * chunk) @ kept.T  # the zeros of x are its unkept entries: x already equals m * x
        centred = (chunk - reference) * kept
        spread += (centred * centred) @ kept.T
        cross += centred @ centred.T
        shared += kept @ kept.T
    squared = np.maximum(spread + spread.T - 2.0 * cross, 0.0)  # rounding leaves tiny negatives at 0
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_squares = np.where(shared > 0, squared / shared, np.nan)
    np.fill_diagonal(mean_squares, 0.0)
    return mean_squares, norms


class TensorStats(NamedTuple):
    """What the moments kernel (``_moments.c``) reads off one tensor in its one pass.

    Attributes:
        moments: ``(len(PRECISIONS), 4)``: ``[mean, m2, m3, m4]`` of the values as stored (row 0) and
            rounded to each coarser precision; NaN in the rows not asked for.
        finite: no value is NaN or infinite.
        absmax: the largest absolute value (0 for an empty tensor).
        zeros: how many values are exactly zero (``is_sparse``).
    """

    moments: FloatArray
    finite: bool
    absmax: float
    zeros: int


def tensor_stats(values: npt.NDArray[np.floating], precisions: Sequence[int] = (0,)) -> TensorStats:
    """Central moments of one tensor at each of ``precisions`` (indices into ``PRECISIONS``), whether it
    is finite, its absolute maximum and its exact zeros, in one pass over its values
    (``features/_moments.c``).

    ``m_k`` is the population moment ``mean((x - mean)^k)``, from the powers of ``x - K`` about the first
    block's mean ``K``: as exact as two passes for weights, unlike raw power sums. The same values give
    the same bits, whatever the thread count and whichever precision they were rounded from: a model
    re-saved in bf16 has, as stored, exactly the moments its source has rounded to bf16
    (``fingerprint.is_copy`` relies on it).
    """
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    out = np.full((len(PRECISIONS), 4), np.nan)
    which = sum(1 << p for p in set(precisions))
    threads = KERNEL_THREADS if flat.size >= PARALLEL_FROM else 1
    finite, absmax, zeros = _moments.moments(flat, out, which, threads)
    return TensorStats(out, bool(finite), float(absmax), int(zeros))


def central_moments(stack: npt.NDArray[np.floating]) -> FloatArray:
    """Mean and 2nd-4th central moments of each row, shape ``(n, 4)``: ``[mean, m2, m3, m4]``
    (``tensor_stats`` of each row as stored)."""
    return np.array([tensor_stats(row).moments[0] for row in stack], dtype=np.float64).reshape(-1, 4)


def mean_squares(moments: npt.NDArray[np.floating]) -> FloatArray:
    """Mean of the squared entries from ``[..., 4]`` moments: ``m2 + mean^2``."""
    return np.asarray(moments[..., 1] + moments[..., 0] ** 2, dtype=np.float64)


def excess_kurtosis(moments: npt.NDArray[np.floating]) -> FloatArray:
    """Fisher (excess) kurtosis ``m4 / m2^2 - 3`` from ``[..., 4]`` moments; NaN for a constant tensor.

    Equals ``scipy.stats.kurtosis(x, fisher=True, bias=True)``.
    """
    m2 = moments[..., 1]
    m4 = moments[..., 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m2 > 0, m4 / (m2 * m2) - 3.0, np.nan)


# Storage precisions a comparison may have to round to, coarsest last (by mantissa bits: 23, 10, 7).
PRECISIONS = ("F32", "F16", "BF16")


def precision_of(dtype: str) -> int:
    """Index in ``PRECISIONS`` of a stored dtype: F16 and BF16 as themselves, anything else as F32."""
    return PRECISIONS.index(dtype) if dtype in PRECISIONS[1:] else 0


def rounded(stack: npt.NDArray[np.float32], precision: int) -> npt.NDArray[np.float32]:
    """``stack`` rounded to nearest (ties to even) in ``PRECISIONS[precision]``, back in float32.

    Rounding to fp16 or bf16 moves the statistics the direction cues read: on MiniLM, bf16 rounding lowers
    the summed kurtosis by about 6 and fp16 by about 0.6, while a fine-tuning step moves it by 0.01. A
    pair stored at two precisions is compared at the coarser one (``FeatureSet.kurtosis_pairs``).
    """
    if PRECISIONS[precision] == "F16":
        # As numpy's np.clip(stack, -65504, 65504).astype(np.float16), bit for bit, 15x faster.
        source = np.ascontiguousarray(stack, dtype=np.float32)
        out = np.empty_like(source)
        _moments.round_f16(source, out)
        return out
    if PRECISIONS[precision] == "BF16":
        bits = np.ascontiguousarray(stack, dtype=np.float32).view(np.uint32)
        # Round to nearest even on the upper 16 bits: add 0x7FFF plus the lowest kept bit, then cut.
        bits = (bits + (((bits >> 16) & 1) + 0x7FFF)) & np.uint32(0xFFFF0000)
        return bits.view(np.float32)
    return stack
