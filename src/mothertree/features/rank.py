"""Numerical rank of weight differences: the distance of LoRA fine-tunes (MoTHer, Sec. 4.2).

A LoRA child differs from its parent by ``scale * B @ A``, of rank ``r``; two LoRA siblings differ by about
``r1 + r2``. Counting singular values of ``W_i - W_j`` needs a tolerance: the differences also hold the
rounding error of storing each model in its dtype, a full-rank noise whose size follows from the dtype's
unit roundoff and the weights' scale (not from float64, which would count that noise as rank).

To keep it cheap for many models, every matrix is first sketched on both sides by fixed random sparse
sign sketches (``make_sketch``), ``S W T^T`` of ``sketch_rows x 2 sketch_rows``: ``rank(S (W_i - W_j) T^T)
= rank(W_i - W_j)`` with high probability while the rank is below ``sketch_rows``, and the pairwise SVDs
shrink to that size whatever the model's width. A rank at the cap means "full rank" (a full fine-tune).

Each difference gets two counts: its rank (singular values over the noise tolerance) and its *clear*
rank (over ``CLEAR_FACTOR`` times the tolerance). How ``--distance auto`` judges them is
``features/low_rank.py``; this module only measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import scipy.linalg.lapack
import scipy.sparse

from . import _linalg

# Unit roundoff of each storage dtype: the size of the error of storing one weight, relative to it.
# bitsandbytes int8 (I8_SCB) rounds to steps of absmax/127 per row, not relative to each weight: its error
# std is step/sqrt(12), about 2% of a row's RMS for rows whose absmax is ~8x their RMS; 2**-5 as the
# equivalent relative roundoff keeps that noise out of the rank.
UNIT_ROUNDOFF = {"F64": 2.0**-53, "F32": 2.0**-24, "F16": 2.0**-11, "BF16": 2.0**-8, "I8_SCB": 2.0**-5}
# Singular values below SAFETY x the expected largest singular value of the rounding noise are noise.
SAFETY = 2.0
DEFAULT_SKETCH_ROWS = 128
# The right-hand sketch has this many times the left's rows (``sketched_ranks``), from another seed.
SKETCH_COLUMNS_PER_ROW = 2
RIGHT_SEED = 1 << 20
# A singular value is clear of the rounding noise when it exceeds CLEAR_FACTOR x the tolerance. At 4x, the
# zoo's LoRA differences keep >= 79 % of their count, dense differences cut by bf16 rounding <= 32 %, even
# where merged fp32 checkpoints carry twice the rounding noise of ``sketched_noise_tolerance``'s model
# (docs/DESIGN.md).
CLEAR_FACTOR = 4.0
# Differences whose singular values one LAPACK call computes (a 128 x 256 float64 block each: 260 kB).
SVD_BATCH = 64


def unit_roundoff(dtype: str) -> float:
    """The unit roundoff of a storage dtype (bf16's for dtypes not listed, the coarsest common one)."""
    return UNIT_ROUNDOFF.get(dtype, UNIT_ROUNDOFF["BF16"])


def make_sketch(rows: int, sketch_rows: int, seed: int) -> scipy.sparse.csr_array | npt.NDArray[np.float64]:
    """A ``(min(sketch_rows, rows), rows)`` sparse sign sketch (a balanced CountSketch): each row of the
    matrix is added, with a random sign, into one of ``sketch_rows`` rows, every one of which receives
    ``rows / sketch_rows`` of them (to one).

    Like a Gaussian sketch with entries of variance ``1 / sketch_rows`` it keeps the rank of a difference
    below ``sketch_rows`` and scales i.i.d. noise by ``sqrt(rows / sketch_rows)``
    (``sketched_noise_tolerance``);
    unlike it, applying it is one pass of additions instead of a matrix product (the products were a
    third of the loop's time on MiniLM). Where the matrix has no more rows than the sketch, the identity
    is returned: the exact rank is as cheap. The sketch ``sketched_ranks`` applies, as scipy holds it.
    """
    if rows <= sketch_rows:
        return np.eye(rows)
    indptr, indices, signs = sketch_csr(rows, sketch_rows, seed)
    return scipy.sparse.csr_array((signs, indices, indptr), shape=(sketch_rows, rows))


def sketch_csr(
    rows: int, sketch_rows: int, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """``make_sketch`` as CSR arrays (indptr, indices, signs): the matrix rows each sketch row adds, in
    increasing order; the identity as one 1 a row. Built here, without scipy's constructor, which cost
    more than applying the sketch."""
    if rows <= sketch_rows:
        return np.arange(rows + 1, dtype=np.int64), np.arange(rows, dtype=np.int64), np.ones(rows)
    rng = np.random.default_rng(seed)
    buckets = rng.permutation(np.arange(rows) % sketch_rows)
    signs = rng.choice(np.array([-1.0, 1.0]), size=rows)
    indices = np.argsort(buckets, kind="stable").astype(np.int64)
    indptr = np.zeros(sketch_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(buckets, minlength=sketch_rows), out=indptr[1:])
    return indptr, indices, signs[indices]


def sketched_noise_tolerance(
    shape: tuple[int, int],
    sketched: tuple[int, int],
    rms_weight: float,
    dtype: str,
    kept_rms: float | None = None,
) -> float:
    """``noise_tolerance`` for a matrix of ``shape`` sketched on both sides to ``sketched`` (``S W
    Omega^T``; a side as large as the matrix's is the identity).

    Each sketched side multiplies the noise's standard deviation by ``sqrt(n / sketched)``. ``kept_rms``:
    the RMS of sketch entries that were themselves stored in float32 (a fingerprint's), whose rounding adds
    its own noise.
    """
    (rows, cols), (a, b) = shape, sketched
    entry_std = 0.61 * unit_roundoff(dtype) * rms_weight * np.sqrt(rows / a) * np.sqrt(cols / b)
    if kept_rms is not None:
        entry_std = float(np.hypot(entry_std, 0.61 * UNIT_ROUNDOFF["F32"] * kept_rms))
    return float(SAFETY * entry_std * (np.sqrt(a) + np.sqrt(b)))


def pair_tolerances(
    shape: tuple[int, int], sketched: tuple[int, int], rms_weight: float, dtypes: Sequence[str]
) -> npt.NDArray[np.float64]:
    """``(n, n)`` ``sketched_noise_tolerance`` of each pair of models, at the coarser of their dtypes."""
    per_dtype = {dtype: sketched_noise_tolerance(shape, sketched, rms_weight, dtype) for dtype in set(dtypes)}
    return np.array([[max(per_dtype[a], per_dtype[b]) for b in dtypes] for a in dtypes])


class RankEstimate(NamedTuple):
    """Pairwise ranks of one tensor's differences: ``ranks`` at the noise tolerance, ``clear`` at
    ``CLEAR_FACTOR`` times it (both ``(n, n)``, -1 where not computed), and ``cap``, the largest rank the
    estimate can report."""

    ranks: npt.NDArray[np.int64]
    clear: npt.NDArray[np.int64]
    cap: int


def pairwise_ranks(
    sketched: npt.NDArray[np.floating],
    tolerances: npt.NDArray[np.float64],
    pairs: Sequence[tuple[int, int]] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``(n, n)`` numerical ranks of ``sketched[i] - sketched[j]`` (singular values over ``tolerances``),
    and the clear ranks (over ``CLEAR_FACTOR * tolerances``).

    Only ``pairs`` (default: all) are computed; the others stay -1 (the diagonal is 0).
    """
    n_models = sketched.shape[0]
    ranks = np.full((n_models, n_models), -1, dtype=np.int64)
    np.fill_diagonal(ranks, 0)
    clear = ranks.copy()
    if pairs is None:
        pairs = [(i, j) for i in range(n_models) for j in range(i + 1, n_models)]
    todo = sorted({(min(i, j), max(i, j)) for i, j in pairs if i != j})
    cap = min(sketched.shape[1:])
    for start in range(0, len(todo), SVD_BATCH):
        batch = np.asarray(todo[start : start + SVD_BATCH], dtype=np.int64)
        first, second = batch[:, 0], batch[:, 1]
        differences = sketched[first] - sketched[second]
        limit = tolerances[first, second]
        counted = np.full(len(batch), cap, dtype=np.int64)
        counted_clear = counted.copy()
        grams, margins = gram_matrices(differences)
        # A full fine-tune's differences are clearly full rank, which a Cholesky factor proves at a fifth
        # of the SVD's cost; only the others need their spectra.
        unclear = ~clearly_full_rank(grams, margins, CLEAR_FACTOR * limit)
        if unclear.any():
            counted[unclear], counted_clear[unclear] = counts_above(
                differences[unclear], grams[unclear], margins[unclear], limit[unclear]
            )
        ranks[first, second] = ranks[second, first] = counted
        clear[first, second] = clear[second, first] = counted_clear
    return ranks, clear


def gram_matrices(
    matrices: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The Gram matrix of each of ``matrices`` (``(b, m, n)``) on its shorter side, ``(b, g, g)``, and
    what rounding can have moved its eigenvalues by, forming it (inner length ``k`` times the unit
    roundoff, times the squared Frobenius norm) and factoring or diagonalising it (``g (g + 1)`` of the
    same; Higham, *Accuracy and Stability of Numerical Algorithms*, Thms. 3.5 and 10.3)."""
    grams = (
        matrices @ matrices.swapaxes(1, 2)
        if matrices.shape[1] <= matrices.shape[2]
        else (matrices.swapaxes(1, 2) @ matrices)
    )
    size, inner = grams.shape[1], max(matrices.shape[1:])
    unit = np.finfo(np.float64).eps / 2
    margins = 1.01 * (inner + size * (size + 1)) * unit * np.einsum("bij,bij->b", matrices, matrices)
    return grams, margins


def clearly_full_rank(
    grams: npt.NDArray[np.float64], margins: npt.NDArray[np.float64], floors: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    """Whether each matrix of ``gram_matrices`` certainly has all its singular values above its floor: a
    Cholesky factor of its Gram less ``floor**2 + margin`` exists. So a success is a proof, and a failure
    only sends the matrix to ``counts_above``. The Grams are left as they are."""
    size = grams.shape[1]
    proven = np.zeros(len(grams), dtype=bool)
    for k, (gram, shift) in enumerate(zip(grams, floors**2 + margins, strict=True)):
        shifted = gram - shift * np.eye(size)
        _, info = scipy.linalg.lapack.dpotrf(shifted, lower=True, clean=False, overwrite_a=True)
        proven[k] = info == 0
    return proven


def counts_above(
    matrices: npt.NDArray[np.float64],
    grams: npt.NDArray[np.float64],
    margins: npt.NDArray[np.float64],
    floors: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """How many singular values of each of ``matrices`` exceed its floor, and ``CLEAR_FACTOR`` times it:
    the SVD's counts.

    From the eigenvalues of the Grams (``gram_matrices``) where every one of them is further than the
    margin from both floors squared, so that rounding cannot have moved it across; by the SVD where one
    is not. The symmetric eigenproblem of the ``g x g`` Gram costs a fifth of the SVD of the matrix.
    """
    levels = np.stack([floors, CLEAR_FACTOR * floors], axis=1)[:, :, None]  # (b, 2, 1)
    eigenvalues = np.linalg.eigvalsh(grams)[:, None, :]  # (b, 1, g)
    counts = (eigenvalues > levels**2).sum(axis=2)
    unsure = (np.abs(eigenvalues - levels**2) <= margins[:, None, None]).any(axis=(1, 2))
    if unsure.any():
        singular_values = np.linalg.svd(matrices[unsure], compute_uv=False)[:, None, :]
        counts[unsure] = (singular_values > levels[unsure]).sum(axis=2)
    return counts[:, 0].astype(np.int64), counts[:, 1].astype(np.int64)


def block_ranks(
    blocks: npt.NDArray[np.floating],
    dtypes: Sequence[str],
    rms_weight: float,
    pairs: Sequence[tuple[int, int]] | None = None,
) -> RankEstimate:
    """Pairwise ranks of the differences of sampled blocks (``fingerprint.sampled_block``: the same rows
    and columns of each model's matrix, ``(n, a, b)``), judged against the rounding of the coarser
    dtype of each pair.

    A LoRA difference ``B A`` keeps its rank ``r`` on the block (``B[I] A[:, J]``) while ``r`` is below
    the block's size; a dense one is full rank. The block's entries are stored weights, so their noise is
    the storage rounding, unscaled (``sketched_noise_tolerance`` with the block as its own shape).
    """
    sketch = (int(blocks.shape[1]), int(blocks.shape[2]))
    tolerance = pair_tolerances(sketch, sketch, rms_weight, dtypes)
    ranks, clear = pairwise_ranks(np.asarray(blocks, dtype=np.float64), tolerance, pairs)
    return RankEstimate(ranks, clear, min(sketch))


def nearest_pairs(distances: npt.NDArray[np.float64]) -> list[tuple[int, int]]:
    """Each model with its nearest other model (the likely parent or child), as ``(i, j)`` pairs."""
    d = np.array(distances, dtype=np.float64)
    np.fill_diagonal(d, np.inf)
    return [(i, int(j)) for i, j in enumerate(d.argmin(axis=1))] if len(d) > 1 else []


def sketched_ranks(
    stack: npt.NDArray[np.floating],
    shape: tuple[int, int],
    dtypes: Sequence[str],
    seed: int,
    sketch_rows: int = DEFAULT_SKETCH_ROWS,
    pairs: Sequence[tuple[int, int]] | None = None,
    rms_weight: float | None = None,
) -> RankEstimate:
    """Pairwise ranks of the differences of one 2-D tensor read from every model.

    ``stack`` is ``(n_models, rows * cols)`` as the feature loop holds it; ``dtypes`` are the models'
    storage dtypes: each pair is judged against the rounding of the coarser of its two. ``pairs``: only
    those (``pairwise_ranks``). ``rms_weight``: the RMS of the whole stack, when the caller has it already
    (the feature loop's moments); computed here otherwise.

    Each matrix is sketched on both sides, ``S W T^T`` (``sketch_rows`` rows, ``SKETCH_COLUMNS_PER_ROW``
    times as many columns): the rank is kept below ``sketch_rows``, and each pair's SVD costs the same
    whatever the model's width. Wider than tall, so that a full-rank difference stays well conditioned
    (the smallest singular value of a square random matrix is near 0: it would read as rank ``cap - 1``).
    """
    rows, cols = shape
    equal: list[tuple[int, int]] = []
    if pairs is not None:
        # Equal rows differ by nothing: rank 0, which their sketches would give too. The screen
        # (features/screen.py) asks for those of an untouched layer, often all it asks for.
        equal = [(i, j) for i, j in pairs if i != j and np.array_equal(stack[i], stack[j])]
        pairs = [(i, j) for i, j in pairs if i != j and (i, j) not in equal]
        if not pairs:  # nothing left to rank: no sketch either
            cap = min(rows, sketch_rows, cols, SKETCH_COLUMNS_PER_ROW * sketch_rows)
            unranked = np.full((len(stack), len(stack)), -1, dtype=np.int64)
            np.fill_diagonal(unranked, 0)
            return _with_equal(RankEstimate(unranked, unranked.copy(), cap), equal)
    left = sketch_csr(rows, sketch_rows, seed)
    right = sketch_csr(cols, SKETCH_COLUMNS_PER_ROW * sketch_rows, seed + RIGHT_SEED)
    matrices = stack.reshape(len(stack), rows, cols)
    sketch = (len(left[0]) - 1, len(right[0]) - 1)
    sketched = np.empty((len(stack), *sketch), dtype=np.float64)
    # In C (features/_linalg.c): the same sums as scipy's sparse products, without their dispatch and
    # with the GIL released; one model at a time, so that the float64 copy is one sketched matrix.
    _linalg.count_sketch(
        np.ascontiguousarray(matrices, dtype=np.float32), len(stack), rows, cols, *left, *right, sketched
    )
    if rms_weight is None:
        # Model by model: a float64 square of the whole stack would be the largest array of the loop.
        squares = sum(float(np.square(matrix, dtype=np.float64).sum()) for matrix in matrices)
        rms_weight = float(np.sqrt(squares / max(matrices.size, 1)))
    tolerance = pair_tolerances(shape, sketch, rms_weight, dtypes)
    ranks, clear = pairwise_ranks(sketched, tolerance, pairs)
    return _with_equal(RankEstimate(ranks, clear, min(sketch)), equal)


def _with_equal(estimate: RankEstimate, equal: Sequence[tuple[int, int]]) -> RankEstimate:
    for i, j in equal:
        estimate.ranks[i, j] = estimate.ranks[j, i] = estimate.clear[i, j] = estimate.clear[j, i] = 0
    return estimate
