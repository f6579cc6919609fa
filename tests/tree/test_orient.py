"""Spanning trees, evidence and root scores, on hand-made trees and statistics (synthetic: pure functions)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mothertree.tree.orient import (
    evidence_from_changes,
    orient_from_root,
    pairwise_changes,
    root_scores,
    undirected_spanning_tree,
)


def _evidence(values, edges, sign=1.0):
    """Evidence per edge of a per-model (or pairwise) statistic."""
    return evidence_from_changes(pairwise_changes(values), edges, sign)


#     0          a fan under 0, with a chain 1 -> 4 -> 5
#   / | \
#  1  2  3
#  |
#  4
#  |
#  5
EDGES = [(0, 1), (0, 2), (0, 3), (1, 4), (4, 5)]


def test_orient_from_root():
    np.testing.assert_array_equal(orient_from_root(6, EDGES, 0), [-1, 0, 0, 0, 1, 4])
    np.testing.assert_array_equal(orient_from_root(6, EDGES, 5), [1, 4, 0, 0, 5, -1])


def test_statistic_growing_from_the_true_root_picks_it():
    grows = [0.0, 1.0, 1.5, 0.8, 2.0, 2.6]
    scores = root_scores(6, EDGES, _evidence(grows, EDGES))
    # The true root scores highest, ahead of every other.
    assert int(np.argmax(scores)) == 0 and scores[0] > np.sort(scores)[-2]


def test_a_chain_is_rooted_at_its_low_end():
    chain = [(0, 1), (1, 2), (2, 3)]
    values = [3.0, 2.0, 1.0, 0.0]  # grows towards node 0
    assert int(np.argmax(root_scores(4, chain, _evidence(values, chain)))) == 3


def test_sign_flips_the_choice():
    chain = [(0, 1), (1, 2)]
    values = [0.0, 1.0, 2.0]
    assert int(np.argmax(root_scores(3, chain, _evidence(values, chain, sign=+1)))) == 0
    assert int(np.argmax(root_scores(3, chain, _evidence(values, chain, sign=-1)))) == 2


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 12), st.integers(0, 2**31))
def test_rerooted_scores_equal_brute_force(n, seed):
    rng = np.random.default_rng(seed)
    edges = [(int(rng.integers(0, j)), j) for j in range(1, n)]
    evidence = _evidence(rng.normal(size=n), edges)

    def brute(root):
        parents = orient_from_root(n, edges, root)
        return sum(
            evidence[(p, c)] if (p, c) in evidence else -evidence[(c, p)]
            for c, p in enumerate(parents)
            if p >= 0
        )

    np.testing.assert_allclose(root_scores(n, edges, evidence), [brute(r) for r in range(n)], atol=1e-12)


def test_spanning_tree_keeps_identical_models_connected():
    d = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    assert len(undirected_spanning_tree(d)) == 2


def test_spanning_tree_of_a_path_metric():
    x = np.array([0.0, 1.0, 3.0, 6.0])
    d = np.abs(x[:, None] - x[None, :])
    assert undirected_spanning_tree(d) == [(0, 1), (1, 2), (2, 3)]


def test_placement_margin_ignores_the_childs_own_descendants():
    from mothertree.tree.orient import placement_confidence

    # chain 0 -> 1 -> 2 plus a far model 3 hanging from 0; 2 is closer to 1 than 0 is, but 2 descends from 1
    d = np.array(
        [
            [0.0, 1.0, 1.8, 1.0],
            [1.0, 0.0, 0.5, 1.6],
            [1.8, 0.5, 0.0, 2.0],
            [1.0, 1.6, 2.0, 0.0],
        ]
    )
    parents = np.array([-1, 0, 1, 0])
    confidence = placement_confidence(d, parents)
    assert np.isnan(confidence[0])
    assert confidence[1] == 1.0 - 1.0 / 1.6  # runner-up for 1 is model 3, not its child 2
    assert confidence[2] == 1.0 - 0.5 / 1.8  # candidates for 2: models 0 and 3
