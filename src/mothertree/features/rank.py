"""Numerical rank of weight differences: the distance of LoRA fine-tunes (MoTHer, Sec. 4.2).

A LoRA child differs from its parent by ``scale * B @ A``, of rank ``r``; two LoRA siblings differ by about
``r1 + r2``. Counting singular values of ``W_i - W_j`` needs a tolerance: the differences also hold the
rounding error of storing each model in its dtype, a full-rank noise whose size follows from the dtype's
unit roundoff and the weights' scale (not from float64, which would count that noise as rank).

To keep it cheap for many models, every matrix is first multiplied by one fixed random sketch ``S``
(``sketch_rows x rows``, Gaussian, scaled to keep norms): ``rank(S (W_i - W_j)) = rank(W_i - W_j)`` with
high probability while the rank is below ``sketch_rows``, and the pairwise SVDs shrink to
``sketch_rows x cols``. A rank at the cap means "full rank" (a full fine-tune).

Each difference gets two counts: its rank (singular values over the noise tolerance) and its *clear*
rank (over ``CLEAR_FACTOR`` times the tolerance). How ``--distance auto`` judges them is
``features/low_rank.py``; this module only measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

# Unit roundoff of each storage dtype: the size of the error of storing one weight, relative to it.
# bitsandbytes int8 (I8_SCB) rounds to steps of absmax/127 per row, not relative to each weight: its error
# std is step/sqrt(12), about 2% of a row's RMS for rows whose absmax is ~8x their RMS; 2**-5 as the
# equivalent relative roundoff keeps that noise out of the rank.
UNIT_ROUNDOFF = {"F64": 2.0**-53, "F32": 2.0**-24, "F16": 2.0**-11, "BF16": 2.0**-8, "I8_SCB": 2.0**-5}
# Singular values below SAFETY x the expected largest singular value of the rounding noise are noise.
SAFETY = 2.0
DEFAULT_SKETCH_ROWS = 128
# A singular value is clear of the rounding noise when it exceeds CLEAR_FACTOR x the tolerance. At 4x, the
# zoo's LoRA differences keep >= 79 % of their count, dense differences cut by bf16 rounding <= 32 %, even
# where merged fp32 checkpoints carry twice the rounding noise of ``noise_tolerance``'s model
# (docs/DESIGN.md).
CLEAR_FACTOR = 4.0


def unit_roundoff(dtype: str) -> float:
    """The unit roundoff of a storage dtype (bf16's for dtypes not listed, the coarsest common one)."""
    return UNIT_ROUNDOFF.get(dtype, UNIT_ROUNDOFF["BF16"])


def make_sketch(rows: int, sketch_rows: int, seed: int) -> npt.NDArray[np.float64]:
    """A ``(min(sketch_rows, rows), rows)`` Gaussian sketch with entries of variance ``1 / sketch_rows``.

    Where the matrix has no more rows than the sketch, the identity is returned: the exact rank is as
    cheap.
    """
    if rows <= sketch_rows:
        return np.eye(rows)
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0 / np.sqrt(sketch_rows), size=(sketch_rows, rows))


def noise_tolerance(sketch: npt.NDArray[np.float64], cols: int, rms_weight: float, dtype: str) -> float:
    """Singular-value threshold separating real rank from storage rounding in ``S (W_i - W_j)``.

    Rounding an entry ``w`` errs by up to half an ulp, uniformly; an ulp is between ``u |w|`` and
    ``2 u |w|`` (``u`` the unit roundoff), so one model's error has a standard deviation of about
    ``0.43 u rms(W)`` and the difference of two independently rounded models about ``0.61 u rms(W)``.
    Sketched, the entries' standard deviation grows by ``sqrt(rows / sketch_rows)`` (1 for the identity),
    and the largest singular value of such an i.i.d. matrix is about ``std * (sqrt(sketch_rows) +
    sqrt(cols))``.
    """
    sketch_rows, rows = sketch.shape
    return sketched_noise_tolerance((rows, cols), (sketch_rows, cols), rms_weight, dtype)


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
    for i, j in pairs:
        if ranks[i, j] < 0:
            singular_values = np.linalg.svd(sketched[i] - sketched[j], compute_uv=False)
            ranks[i, j] = ranks[j, i] = int((singular_values > tolerances[i, j]).sum())
            clear[i, j] = clear[j, i] = int((singular_values > CLEAR_FACTOR * tolerances[i, j]).sum())
    return ranks, clear


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
    """
    rows, cols = shape
    sketch = make_sketch(rows, sketch_rows, seed)
    matrices = stack.reshape(len(stack), rows, cols)
    # One model at a time, so that the float64 copy is one sketched matrix, not the whole stack.
    sketched = np.stack([sketch @ matrix.astype(np.float64) for matrix in matrices])
    if rms_weight is None:
        # Model by model: a float64 square of the whole stack would be the largest array of the loop.
        squares = sum(float(np.square(matrix, dtype=np.float64).sum()) for matrix in matrices)
        rms_weight = float(np.sqrt(squares / max(matrices.size, 1)))
    per_dtype = {dtype: noise_tolerance(sketch, cols, rms_weight, dtype) for dtype in set(dtypes)}
    tolerance = np.array([[max(per_dtype[a], per_dtype[b]) for b in dtypes] for a in dtypes])
    ranks, clear = pairwise_ranks(sketched, tolerance, pairs)
    return RankEstimate(ranks, clear, min(sketch.shape[0], cols))
