"""The sparse tree step against the dense one on the same numbers.

Synthetic data (pure functions): points along a random tree, each child its parent plus Gaussian noise;
the "norm" of a point its squared length, which the noise makes grow from parent to child. Where the
candidate graph holds every pair, the sparse step must give exactly what ``TreeRecovery`` gives on the
dense matrices; with each point's nearest only, the same edges.
"""

from __future__ import annotations

import numpy as np
import pytest

from mothertree.tree.orient import pairwise_changes
from mothertree.tree.recover import TreeRecovery
from mothertree.tree.sparse import PairLookup, placement_margins, sparse_trees


def _random_tree_points(n: int, seed: int = 0, dims: int = 50) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    parents = np.array([-1] + [int(rng.integers(0, k)) for k in range(1, n)])
    points = np.zeros((n, dims))
    points[0] = rng.normal(0, 1.0, dims)
    for k in range(1, n):
        points[k] = points[parents[k]] + rng.normal(0, 0.05, dims)
    return points, parents


def _lookup(points: np.ndarray) -> PairLookup:
    def compute(i, j):
        sq = ((points[i] - points[j]) ** 2).sum(axis=1)
        norm = np.log((points**2).sum(axis=1))
        return {
            "squared": sq,
            "norm_change": norm[j] - norm[i],
            "kurtosis_change": 0.0 * sq,
            "skew": 0.0 * sq,
        }

    return PairLookup(compute, antisymmetric=("norm_change", "kurtosis_change", "skew"))


def _pairs(points: np.ndarray, k: int | None):
    n = len(points)
    d = np.sqrt(((points[:, None] - points[None]) ** 2).sum(axis=2))
    if k is None:
        first, second = np.triu_indices(n, 1)
    else:
        nearest = np.argsort(d + np.diag(np.full(n, np.inf)), axis=1)[:, :k]
        pairs = {(min(i, int(j)), max(i, int(j))) for i in range(n) for j in nearest[i]}
        first, second = (np.array(sorted(pairs))[:, c] for c in (0, 1))
    return first.astype(np.int64), second.astype(np.int64), d


def test_on_every_pair_the_sparse_step_is_the_dense_one():
    points, _ = _random_tree_points(60)
    first, second, d = _pairs(points, None)
    relative = d / np.sqrt((points**2).sum(axis=1)).mean()
    sparse = sparse_trees(60, first, second, d[first, second], relative[first, second], _lookup(points))
    norms = np.log((points**2).sum(axis=1))
    dense = TreeRecovery(direction="auto").fit_matrices(
        d,
        np.zeros(60),
        [str(k) for k in range(60)],
        log_norms=norms,
        relative_distances=relative,
        squared_distances=d**2,
        kurtosis_pairs=np.zeros((60, 60)),
        norm_change_skew=np.zeros((60, 60)),
    )
    assert np.array_equal(sparse.parents, dense.parents_)
    has_parent = dense.parents_ >= 0
    assert np.allclose(sparse.direction_probability[has_parent], dense.direction_probabilities_[has_parent])
    assert np.allclose(sparse.placement[has_parent], dense.placement_margins_[has_parent])
    assert np.allclose(pairwise_changes(norms)[0, 1], norms[1] - norms[0])


def test_nearest_pairs_are_enough_to_recover_a_random_tree():
    points, parents = _random_tree_points(400, seed=1)
    first, second, d = _pairs(points, 8)
    assert len(first) < 400 * 8  # far from the 79,800 pairs of the dense step
    relative = np.full(len(first), 0.1)
    trees = sparse_trees(400, first, second, d[first, second], relative, _lookup(points))
    assert (trees.parents == parents).mean() >= 0.95
    assert trees.labels.max() == 0


def test_unrelated_pairs_split_trees_and_known_edges_are_kept():
    points, _ = _random_tree_points(30, seed=2)
    first, second, d = _pairs(points, None)
    relative = np.where((first < 15) == (second < 15), 0.1, 1.4)  # two groups, unrelated to each other
    trees = sparse_trees(
        30, first, second, d[first, second], relative, _lookup(points), known={3: 20}
    )  # a known edge joins them
    assert trees.labels.max() == 0 and trees.parents[3] == 20 and trees.confidence[3] == 1.0
    split = sparse_trees(30, first, second, d[first, second], relative, _lookup(points))
    assert split.labels.max() == 1
    assert {tuple(sorted(set(split.labels[:15]))), tuple(sorted(set(split.labels[15:])))} == {(0,), (1,)}


def test_margins_look_only_outside_the_childs_subtree():
    parents = np.array([-1, 0, 1])  # a chain 0 -> 1 -> 2
    first, second = np.array([0, 1, 0]), np.array([1, 2, 2])
    distance = np.array([1.0, 1.0, 4.0])
    margins = placement_margins(parents, np.zeros(3, dtype=np.int64), first, second, distance)
    assert np.isnan(margins[0])
    assert margins[1] == pytest.approx(1.0)  # its only other candidate, 2, is its own child
    assert margins[2] == pytest.approx(1 - 1.0 / 4.0)
