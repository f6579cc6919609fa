"""Which nearest-model differences the first, cheap pass of ``--distance auto`` ranks.

The pass asks one thing (``LowRankRule.needs_pair_ranks``): does some model differ from its nearest model
by a clearly low-rank update (LoRA)? A LoRA child shows that in every tensor its update touches, so a few
such tensors answer for it; a full fine-tune answers "no" in every one. Each model's difference to its
nearest model is therefore ranked in its first ``budget`` tensors (in the loop's order) where the two
differ, and wherever they are equal (rank 0: a copy, or a layer a LoRA left alone; rows exactly
equal need no sketch, ``rank.sketched_ranks``; it keeps what the rule reads of equal tensors). On ten
MiniLMs that is 4 tensors of 25 a model: the rank sketches were 40 % of the loop's arithmetic.

Tensors are compared on several threads, yet the choice for tensor ``t`` must not depend on which one
finished first: each comparison hands the counts on to the next in tensor order (``features/turns.py``),
so the choice is the one a single thread would make.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .low_rank import LowRankRule
from .rank import nearest_pairs
from .reductions import mean_squares
from .turns import Turns

# Tensors in which each model's difference to its nearest model is ranked while the two differ.
NEAREST_RANKED = 4


class NearestScreen:
    """The nearest pairs to rank in each tensor: each model's first ``budget`` tensors where it differs
    from its nearest model (``LowRankRule.equal_below`` of the weights' RMS), and every tensor where it
    does not. ``n_models`` counts every model of the loop (rows are indexed by model, not by position);
    ``turns`` hands each model's count on from tensor to tensor (``features/turns.py``)."""

    def __init__(
        self, n_models: int, budget: int = NEAREST_RANKED, equal_below: float = LowRankRule().equal_below
    ) -> None:
        self.budget, self.equal_below = budget, equal_below
        self.turns: Turns[npt.NDArray[np.int64]] = Turns(np.zeros(n_models, dtype=np.int64))

    def pairs(
        self,
        t: int,
        filled: list[int],
        rms: npt.NDArray[np.float64],
        moments: npt.NDArray[np.float64],
    ) -> list[tuple[int, int]]:
        """The pairs (positions among ``filled``, the models read for tensor ``t``) to rank, from the
        tensor's ``(k, k)`` RMS distances and its models' moments. Waits until every earlier tensor has
        handed on its counts, and hands on its own.

        Raises:
            TurnsClosedError: the loop stopped meanwhile (``Turns.close``).
        """
        nearest = nearest_pairs(rms)
        mean_square = mean_squares(moments)
        # As LowRankRule.equal_tensors judges them: against the RMS of the two models' weights.
        differs = [
            bool(rms[i, j] > self.equal_below * np.sqrt((mean_square[i] + mean_square[j]) / 2.0))
            for i, j in nearest
        ]
        counts = self.turns.before(t)
        chosen = [
            (i, j)
            for (i, j), differ in zip(nearest, differs, strict=True)
            if not differ or counts[filled[i]] < self.budget
        ]
        after = counts.copy()
        after[[filled[i] for (i, _), differ in zip(nearest, differs, strict=True) if differ]] += 1
        self.turns.hand_on(t, after)
        return chosen
