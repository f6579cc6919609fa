"""Numerical rank of weight differences: the distance of LoRA fine-tunes (MoTHer, Sec. 4.2).

A LoRA child differs from its parent by ``scale * B @ A``, of rank ``r``; two LoRA siblings differ by about
``r1 + r2``. Counting singular values of ``W_i - W_j`` needs a tolerance: the differences also hold the
rounding error of storing each model in its dtype, a full-rank noise whose size follows from the dtype's
unit roundoff and the weights' scale (not from float64, which would count that noise as rank).

To keep it cheap for many models, every matrix is first multiplied by one fixed random sketch ``S``
(``sketch_rows x rows``, Gaussian, scaled to keep norms): ``rank(S (W_i - W_j)) = rank(W_i - W_j)`` with
high probability while the rank is below ``sketch_rows``, and the pairwise SVDs shrink to
``sketch_rows x cols``. A rank at the cap means "full rank" (a full fine-tune).

A count below the cap is not yet evidence of a low-rank update: a dense update stored in bf16 loses every
singular value under the rounding noise, and its count (20-40 of 128 on our MiniLM fine-tunes) depends on
where the tolerance falls. A LoRA update stored finely enough drops off a cliff instead, so its count
barely moves when the tolerance grows. ``firm`` ranks are counted at ``CLIFF`` times the tolerance, and
``is_clearly_low_rank`` asks for both: below the cap, and firm.
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
# Counts at the tolerance and at CLIFF x the tolerance, measured on the zoo (value and attention-output
# projections): LoRA merges in fp32 8/8, 16/16 and, where merged checkpoints' rounding noise reaches twice
# the model (rows 20x their RMS), 58/48 and 61/48 for a rank-48 update (its 48th singular value sits 10^4
# above the noise); full fine-tunes stored in bf16 36/8, 23/4; LoRA merges stored in bf16 28/9, 22/6.
# The first CLIFF (x2, share 0.9) was set on the small text-mixed split and failed on the held-out
# LoRA-V split (the 58/48 case); x4 with a 0.25 share separates every pair measured (>= 0.79 / <= 0.32).
CLIFF = 4.0
# Share of a difference's rank allowed to sit between the tolerance and CLIFF x the tolerance.
CLIFF_SLACK = 0.25


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
    entry_std = 0.61 * unit_roundoff(dtype) * rms_weight
    if sketch_rows < rows:
        entry_std *= np.sqrt(rows / sketch_rows)
    return float(SAFETY * entry_std * (np.sqrt(sketch_rows) + np.sqrt(cols)))


class RankEstimate(NamedTuple):
    """Pairwise ranks of one tensor's differences: ``ranks`` at the noise tolerance, ``firm`` at ``CLIFF``
    times it (both ``(n, n)``, -1 where not computed), and ``cap``, the largest rank the estimate can
    report."""

    ranks: npt.NDArray[np.int64]
    firm: npt.NDArray[np.int64]
    cap: int


def pairwise_ranks(
    sketched: npt.NDArray[np.floating],
    tolerances: npt.NDArray[np.float64],
    pairs: Sequence[tuple[int, int]] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``(n, n)`` numerical ranks of ``sketched[i] - sketched[j]`` (singular values over ``tolerances``),
    and the firm ranks (over ``CLIFF * tolerances``).

    Only ``pairs`` (default: all) are computed; the others stay -1 (the diagonal is 0).
    """
    n_models = sketched.shape[0]
    ranks = np.full((n_models, n_models), -1, dtype=np.int64)
    np.fill_diagonal(ranks, 0)
    firm = ranks.copy()
    if pairs is None:
        pairs = [(i, j) for i in range(n_models) for j in range(i + 1, n_models)]
    for i, j in pairs:
        if ranks[i, j] < 0:
            singular_values = np.linalg.svd(sketched[i] - sketched[j], compute_uv=False)
            ranks[i, j] = ranks[j, i] = int((singular_values > tolerances[i, j]).sum())
            firm[i, j] = firm[j, i] = int((singular_values > CLIFF * tolerances[i, j]).sum())
    return ranks, firm


def clearly_low_rank(
    ranks: npt.NDArray[np.int64],
    firm: npt.NDArray[np.int64],
    caps: npt.NDArray[np.int64],
    equal: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.bool_]:
    """``(n_tensors, n, n)``: where a tensor's difference is clearly low-rank (below the cap, and firm).

    ``ranks``, ``firm``: ``(n_tensors, n, n)``, -1 where not computed (never clearly low-rank); ``caps``:
    ``(n_tensors,)``. Rank 0 is a clear answer only where the tensors are ``equal`` (e.g. a layer LoRA
    left alone): a nonzero difference that is all under the rounding noise (a small update stored in
    bf16) says nothing about its rank.
    """
    below_cap = (ranks >= 0) & (ranks < np.asarray(caps)[:, None, None])
    firm_enough = firm >= (1.0 - CLIFF_SLACK) * ranks
    if equal is not None:
        firm_enough &= (ranks > 0) | equal
    return np.asarray(below_cap & firm_enough, dtype=bool)


def is_clearly_low_rank(
    ranks: npt.NDArray[np.int64],
    firm: npt.NDArray[np.int64],
    caps: npt.NDArray[np.int64],
    equal: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.bool_]:
    """``(n, n)`` pairs whose difference is clearly low-rank in every tensor; the diagonal is False."""
    clear = np.asarray(clearly_low_rank(ranks, firm, caps, equal).all(axis=0), dtype=bool)
    np.fill_diagonal(clear, False)
    return clear


# A model's parent is among its NEIGHBOURS nearest models in l2 unless more of its own descendants (or
# their siblings) are nearer than its parent: a LoRA child with a large update and many close
# children. The zoo's trees have up to 4 children per model.
NEIGHBOURS = 10


def neighbour_pairs(distances: npt.NDArray[np.float64], k: int = NEIGHBOURS) -> list[tuple[int, int]]:
    """Every model with each of its ``k`` nearest others, as ``(i, j)`` pairs with ``i < j``, no repeats."""
    d = np.array(distances, dtype=np.float64)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1, kind="stable")[:, : min(k, len(d) - 1)]
    return sorted({(min(i, int(j)), max(i, int(j))) for i, row in enumerate(nearest) for j in row})


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
    ranks, firm = pairwise_ranks(sketched, tolerance, pairs)
    return RankEstimate(ranks, firm, min(sketch.shape[0], cols))
