"""The norm direction on pairwise (common-support) norms, on hand-made numbers (synthetic: mechanics only)."""

import numpy as np
import pytest

from mothertree.errors import InvalidParameterError
from mothertree.tree.orient import (
    evidence_from_changes,
    pairwise_changes,
    root_scores,
)
from mothertree.tree.recover import TreeRecovery


def _evidence(values, edges, sign=1.0):
    """Evidence per edge of a per-model (or pairwise) statistic."""
    return evidence_from_changes(pairwise_changes(values), edges, sign)


CHAIN = [(0, 1), (1, 2)]


def test_changes_of_a_per_model_statistic():
    v = np.array([1.0, 3.0, 2.5])  # [i, j] is the change from model i to model j: v[j] - v[i]
    np.testing.assert_array_equal(pairwise_changes(v), [[0.0, 2.0, 1.5], [-2.0, 0.0, -0.5], [-1.5, 0.5, 0.0]])


def test_a_row_constant_pairwise_statistic_is_the_per_model_one_bit_for_bit():
    rng = np.random.default_rng(0)
    v = rng.normal(size=6)
    pairs = np.repeat(v[:, None], 6, axis=1)
    np.testing.assert_array_equal(pairwise_changes(pairs), pairwise_changes(v))
    edges = [(0, 1), (0, 2), (2, 3), (2, 4), (4, 5)]
    assert _evidence(pairs, edges) == evidence_from_changes(pairwise_changes(v), edges)


# A chain 0 -> 1 -> 2 where 2 is a pruned copy of a fine-tune of 1. ``PAIRS[i, j]``: log squared norm of i
# over the weights it shares with j. 2 kept few weights, so its whole norm (4.1) is the smallest; over those
# weights it is larger (4.1) than 1 is there (4.05), as a child should be.
PAIRS = np.array(
    [
        [5.0, 5.0, 4.0],
        [5.1, 5.1, 4.05],
        [4.1, 4.1, 4.1],
    ]
)


def test_pairwise_changes_compare_each_pair_on_its_own_footing():
    changes = pairwise_changes(PAIRS)
    assert changes[1, 2] == pytest.approx(0.05) and changes[2, 1] == pytest.approx(-0.05)
    assert int(np.argmax(root_scores(3, CHAIN, evidence_from_changes(changes, CHAIN)))) == 0


def test_whole_norms_make_the_pruned_child_look_like_the_root():
    whole = np.diag(PAIRS)
    assert int(np.argmax(root_scores(3, CHAIN, _evidence(whole, CHAIN)))) == 2


def test_a_non_finite_change_is_no_evidence():
    changes = np.array([[0.0, np.nan, 1.0], [np.nan, 0.0, 1.0], [-1.0, -1.0, 0.0]])
    evidence = evidence_from_changes(changes, [(0, 1), (0, 2)])
    assert evidence[(0, 1)] == 0.0 and evidence[(0, 2)] > 0


def test_pairwise_statistic_shape_is_checked():
    with pytest.raises(ValueError, match=r"\(n,\) or \(n, n\)"):
        pairwise_changes(np.zeros((2, 3)))


def path_distances() -> np.ndarray:
    x = np.array([0.0, 1.0, 2.0])
    return np.abs(x[:, None] - x[None, :])


def test_fit_matrices_takes_pairwise_log_norms():
    recovery = TreeRecovery(n_trees=None, direction="norm").fit_matrices(
        path_distances(), np.zeros(3), ["a", "b", "c"], log_norms=PAIRS
    )
    assert {(e.parent, e.child) for e in recovery.edges_} == {("a", "b"), ("b", "c")}
    whole = TreeRecovery(n_trees=None, direction="norm").fit_matrices(
        path_distances(), np.zeros(3), ["a", "b", "c"], log_norms=np.diag(PAIRS)
    )
    assert whole.roots_ == ["c"]


def test_fit_matrices_rejects_log_norms_of_another_shape():
    with pytest.raises(InvalidParameterError, match="`log_norms`"):
        TreeRecovery(n_trees=None, direction="norm").fit_matrices(
            path_distances(), np.zeros(3), ["a", "b", "c"], log_norms=np.zeros((2, 2))
        )


def test_per_model_and_row_constant_log_norms_recover_identically():
    rng = np.random.default_rng(1)
    v = rng.normal(size=3)
    per_model = TreeRecovery(n_trees=None).fit_matrices(path_distances(), np.zeros(3), "abc", log_norms=v)
    pairs = np.repeat(v[:, None], 3, axis=1)
    pairwise = TreeRecovery(n_trees=None).fit_matrices(path_distances(), np.zeros(3), "abc", log_norms=pairs)
    assert pairwise.edges_ == per_model.edges_
    np.testing.assert_array_equal(pairwise.confidences_, per_model.confidences_)
