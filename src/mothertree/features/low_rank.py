"""``--distance auto``: which pairs of models differ by a low-rank (LoRA) update, and the distance that
joins those pairs first. The whole rule is here; ``features/rank.py`` only measures ranks.

A LoRA child differs from its parent by an update of rank ``r`` (siblings by about ``r1 + r2``), and
rank tells such relations apart far better than l2 does (MoTHer, Sec. 4.2). But a rank below the cap is
not evidence of LoRA by itself: a dense update stored in bf16 loses every singular value under the
rounding noise, and how many survive depends on where the tolerance falls. The singular values of a LoRA
update stored finely enough (fp32, or an adapter) instead drop by orders of magnitude right after the
``r``-th, so its count hardly changes when the tolerance grows. Hence the rule, per pair of models:

    in every compared tensor, the rank of the difference is below the cap (the sketch size), and at
    least ``1 - unclear_share`` of it is *clear*: singular values above ``rank.CLEAR_FACTOR`` times the
    noise tolerance (``FeatureSet.clear_ranks``).

Rank 0 is a clear answer only where the two tensors are equal (a layer the LoRA left alone): a nonzero
difference that is all under the rounding noise says nothing about its rank. The measurements behind the
two numbers are in docs/DESIGN.md.

Clearly low-rank pairs are placed before every other pair, ordered by rank (``rank_first_distances``);
every other pair keeps its l2 distance. A LoRA merge saved in bf16 loses its sharp drop and is placed by
l2, like a full fine-tune: rank cannot tell them apart.

Ranks cost a sketch and a factorisation per pair and tensor, so they are computed in two steps
(``pipeline``): first each model's difference to its nearest model, in its first few tensors where the two
differ (``features/screen.py``); only where one of those differences is clearly low-rank and not zero
(``needs_pair_ranks``) are the ranks of each model's ``neighbours`` nearest models in l2 read, in every
tensor (``pairs_to_rank``), not all n² pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..errors import InvalidFeatureSetError
from .featureset import FeatureSet

BoolMatrix = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class PlacingDistances:
    """The distances that place edges, which kind they are, and how many pairs were judged low-rank."""

    matrix: npt.NDArray[np.float64]
    kind: str  # "l2", "rank" (every pair low-rank), or "rank+l2"
    low_rank_pairs: int


@dataclass(frozen=True)
class LowRankRule:
    """The ``--distance auto`` rule (module docstring).

    Attributes:
        unclear_share: the share of a difference's rank allowed to lie between the noise tolerance and
            ``CLEAR_FACTOR`` times it. On the zoo, LoRA differences keep >= 0.79 of their rank clear,
            dense differences cut by rounding <= 0.32.
        equal_below: tensors whose RMS difference is under this share of the weights' RMS are equal.
            Not 0: distances come from float64 Gram sums, exact to about 1e-8 for equal tensors, while
            one fp32 rounding per weight is 6e-8 and a real update 1e-4 or more.
        neighbours: a model's parent is among its ``neighbours`` nearest models in l2 unless more of its
            own descendants (or their siblings) are nearer: a LoRA child with a large update and many
            close children. The zoo's trees have up to 4 children per model.
    """

    unclear_share: float = 0.25
    equal_below: float = 1e-6
    neighbours: int = 10

    def judge_tensors(
        self,
        ranks: npt.NDArray[np.int64],
        clear_ranks: npt.NDArray[np.int64],
        caps: npt.ArrayLike,
        equal: BoolMatrix | None = None,
    ) -> BoolMatrix:
        """``(n_tensors, n, n)``: where a tensor's difference is clearly low-rank.

        ``ranks``, ``clear_ranks``: ``(n_tensors, n, n)``, -1 where not computed (never clearly low-rank);
        ``caps``: ``(n_tensors,)``; ``equal``: where the tensors are equal (rank 0 is clear only there;
        None trusts every rank 0).
        """
        below_cap = (ranks >= 0) & (ranks < np.asarray(caps)[:, None, None])
        mostly_clear = clear_ranks >= (1.0 - self.unclear_share) * ranks
        if equal is not None:
            mostly_clear &= (ranks > 0) | equal
        return np.asarray(below_cap & mostly_clear, dtype=bool)

    def pairs(self, features: FeatureSet) -> BoolMatrix:
        """``(n, n)`` pairs of ``features`` whose difference is clearly low-rank in every tensor."""
        if not features.has_ranks:
            return np.zeros((features.n_models, features.n_models), dtype=bool)
        return in_every_tensor(self.judge_tensors(*_ranks_of(features), self.equal_tensors(features)))

    def needs_pair_ranks(self, features: FeatureSet) -> bool:
        """Whether any computed difference of any tensor is clearly low-rank and not zero.

        Read on features holding only each model's nearest-model ranks: the cheap sign that the ranks of
        more pairs are worth computing.
        """
        if not features.has_ranks:
            return False
        ranks, clear_ranks, caps = _ranks_of(features)
        clear = self.judge_tensors(ranks, clear_ranks, caps, self.equal_tensors(features))
        return bool((clear & (ranks > 0)).any())

    def pairs_to_rank(self, features: FeatureSet) -> list[tuple[int, int]]:
        """Every model with each of its ``neighbours`` nearest others in l2, as ``(i, j)``, ``i < j``."""
        return neighbour_pairs(features.distances(), self.neighbours)

    def equal_tensors(self, features: FeatureSet) -> BoolMatrix:
        """``(n_tensors, n, n)`` pairs whose tensors are equal (RMS difference under ``equal_below``)."""
        rms = np.nan_to_num(features.rms_distances, nan=np.inf)
        return np.asarray(rms <= self.equal_below * features.pair_scales(), dtype=bool)

    def distances(self, features: FeatureSet) -> PlacingDistances:
        """l2 distances with the clearly low-rank pairs placed first, by rank (``rank_first_distances``)."""
        low = self.pairs(features)
        if not low.any():
            return PlacingDistances(features.distances(), "l2", 0)
        matrix = rank_first_distances(features.distances(), rank_shares(features), low)
        every_pair = not (~low).sum() > len(low)  # only the diagonal is not low-rank
        return PlacingDistances(matrix, "rank" if every_pair else "rank+l2", int(np.triu(low).sum()))


def in_every_tensor(clear: BoolMatrix) -> BoolMatrix:
    """``(n, n)`` pairs clearly low-rank in every tensor of ``clear`` (``judge_tensors``); never the
    diagonal."""
    low = np.asarray(clear.all(axis=0), dtype=bool)
    np.fill_diagonal(low, False)
    return low


def rank_first_distances(
    l2: npt.ArrayLike, rank_shares: npt.ArrayLike, low_rank: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """One distance for a collection of full and LoRA fine-tunes.

    A pair whose difference is clearly low-rank (``low_rank``) is placed before every other pair and,
    among such pairs, by rank (the paper's LoRA distance; ``rank_shares`` is the summed rank over the
    summed cap), with the l2 distance only breaking ties. Every other pair keeps its l2 distance. A
    spanning tree on this distance first joins the LoRA relations (parent-child rank ``r`` before
    siblings' ``r1 + r2``), then links those pieces by weight distance.
    """
    d = np.array(l2, dtype=np.float64)
    low = np.asarray(low_rank, dtype=bool) & ~np.eye(len(d), dtype=bool)
    if not low.any():
        return d
    others = ~low & ~np.eye(len(d), dtype=bool)
    floor = float(d[others].min()) if others.any() else 1.0
    tie_break = 1e-3 * d / max(float(d.max()), np.finfo(float).tiny)
    shares = np.nan_to_num(np.asarray(rank_shares, dtype=np.float64), nan=1.0)
    # Shares lie in [0, 1], so every low-rank pair stays below half of the nearest l2-placed pair.
    d[low] = 0.5 * floor * (np.clip(shares[low], 0.0, 1.0) + tie_break[low]) / (1.0 + 1e-3)
    return d


def rank_shares(features: FeatureSet) -> npt.NDArray[np.float64]:
    """``(n, n)`` summed rank of ``W_i - W_j`` over the summed caps; NaN where not computed."""
    ranks, _, caps = _ranks_of(features)
    known = (ranks >= 0).all(axis=0)
    shares = ranks.sum(axis=0) / max(int(caps.sum()), 1)
    return np.where(known, shares, np.nan)


def neighbour_pairs(distances: npt.NDArray[np.float64], k: int) -> list[tuple[int, int]]:
    """Every model with each of its ``k`` nearest others, as ``(i, j)`` pairs with ``i < j``, no repeats."""
    d = np.array(distances, dtype=np.float64)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1, kind="stable")[:, : min(k, len(d) - 1)]
    return sorted({(min(i, int(j)), max(i, int(j))) for i, row in enumerate(nearest) for j in row})


def _ranks_of(
    features: FeatureSet,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    if features.ranks is None or features.clear_ranks is None or features.rank_caps is None:
        raise InvalidFeatureSetError(
            "these features hold no ranks", hint="extract them with ranks (`--distance auto` or `rank`)"
        )
    return features.ranks, features.clear_ranks, np.asarray(features.rank_caps)
