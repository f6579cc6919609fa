"""``direction="auto"``: each tree is oriented by the cues (and signs) its forks tell, noise left out.

Worked examples on synthetic statistics (pure functions, no weights), then real tiny families.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mothertree.evaluation.metrics import score_edges
from mothertree.evaluation.truth import load_edges
from mothertree.pipeline import recover
from mothertree.tree.orient import consistency, evidence_from_changes, pairwise_changes
from mothertree.tree.recover import TreeRecovery


def _evidence(values, edges, sign=1.0):
    """Evidence per edge of a per-model (or pairwise) statistic."""
    return evidence_from_changes(pairwise_changes(values), edges, sign)


# A fan: 0 -> 1, 2, 3 and 1 -> 4, 5 (as edges i < j of the undirected tree).
FAN = [(0, 1), (0, 2), (0, 3), (1, 4), (1, 5)]
FAN_PARENTS = [-1, 0, 0, 0, 1, 1]
# A statistic that falls by one unit along every true edge (kurtosis under fine-tuning).
FALLING = np.array([10.0, 9.0, 9.0, 9.0, 8.0, 8.0])
# A statistic without a trend: no root explains it (1 would have three parents, 0 one).
NOISE = np.array([0.0, 0.5, -0.3, 0.2, 0.1, 0.3])


def test_a_monotone_cue_with_its_sign_is_fully_consistent() -> None:
    assert consistency(6, FAN, _evidence(FALLING, FAN, sign=-1.0)) == pytest.approx(1.0)


def test_the_wrong_sign_cannot_be_explained_by_any_root_of_a_fan() -> None:
    # Every edge points at its parent: 0 has three "parents", 1 has two. The best root (a leaf of 1)
    # explains 2 of the 5 edges and contradicts 3: (2 - 3) / 5.
    assert consistency(6, FAN, _evidence(FALLING, FAN, sign=1.0)) == pytest.approx(-0.2)


def _fan_distances() -> np.ndarray:
    # A tree metric: path lengths along the fan, every edge of length 1.
    depth = [0, 1, 1, 1, 2, 2]
    d = np.zeros((6, 6))
    for i in range(6):
        for j in range(6):
            a, b = i, j
            steps = 0
            while a != b:
                if depth[a] >= depth[b]:
                    a = FAN_PARENTS[a]
                else:
                    b = FAN_PARENTS[b]
                steps += 1
            d[i, j] = steps
    return d


@pytest.mark.parametrize(
    ("kurtosis", "log_norms", "cue"),
    [
        (FALLING, NOISE, "kurtosis falls"),
        (-FALLING, NOISE, "kurtosis rises"),
        (NOISE, -FALLING, "norm grows"),
    ],
)
def test_auto_orients_a_fan_by_whichever_cue_holds(
    kurtosis: np.ndarray, log_norms: np.ndarray, cue: str
) -> None:
    recovery = TreeRecovery(n_trees=None, direction="auto").fit_matrices(
        _fan_distances(), kurtosis, [f"m{i}" for i in range(6)], log_norms=log_norms
    )
    assert recovery.parents_.tolist() == FAN_PARENTS
    assert recovery.cues_ == [cue]
    assert set(recovery.cue_consistency_[0]) == {
        "norm grows",
        "kurtosis falls",
        "kurtosis rises",
        "norm shrinks",
    }


@pytest.mark.slow
def test_real_fine_tuning_trees_are_oriented_with_auto(bert_family: Path, second_family: Path) -> None:
    for family in (bert_family, second_family):
        result = recover([family])
        score = score_edges({(e.parent, e.child) for e in result.edges}, load_edges(family / "truth.json"))
        assert score.directed == 1.0, (family, result.trees)
