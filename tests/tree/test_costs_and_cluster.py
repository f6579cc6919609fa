"""Cost matrix and clustering on small hand-made matrices (pure functions; no weights involved)."""

import numpy as np
import pytest

from mothertree.errors import InvalidParameterError
from mothertree.features.low_rank import rank_first_distances
from mothertree.tree.cluster import cluster_trees, split_counts, tree_linkage
from mothertree.tree.costs import directed_costs, direction_penalty


def test_falls_penalises_edges_towards_higher_kurtosis():
    penalty = direction_penalty([3.0, 1.0, 2.0], "falls")
    # edge i -> j is against the trend when kurtosis[j] > kurtosis[i]
    np.testing.assert_array_equal(penalty, [[0, 0, 0], [1, 0, 1], [1, 0, 0]])


def test_rises_is_the_transpose_of_falls():
    k = [0.5, -1.0, 2.0, 2.0]
    np.testing.assert_array_equal(direction_penalty(k, "rises"), direction_penalty(k, "falls").T)


def test_equal_kurtosis_is_never_penalised():
    assert direction_penalty([1.0, 1.0], "falls").sum() == 0


def test_directed_costs_follow_the_paper_formula():
    d = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]])
    costs = directed_costs(d, [3.0, 1.0, 2.0], lam=0.5, direction="falls")
    # M = D + lam * mean(D) * T, worked by hand: mean of the off-diagonal entries 2.0, so each edge against
    # the falling trend (1 -> 0, 1 -> 2, 2 -> 0: towards higher kurtosis) costs 0.5 * 2.0 = 1 more.
    expected = np.array([[np.inf, 1.0, 2.0], [1.0 + 1, np.inf, 3.0 + 1], [2.0 + 1, 3.0, np.inf]])
    np.testing.assert_array_equal(costs, expected)


def test_unknown_direction():
    with pytest.raises(InvalidParameterError, match="unknown direction `sideways`"):
        direction_penalty([1.0, 2.0], "sideways")  # type: ignore[arg-type]


def two_blobs():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(0, 0.1, (5, 3)), rng.normal(5, 0.1, (4, 3))])
    points = points[[0, 5, 1, 6, 2, 7, 3, 8, 4]]
    return np.linalg.norm(points[:, None] - points[None], axis=-1)


def test_clusters_two_separated_groups_numbered_by_first_appearance():
    labels = cluster_trees(two_blobs(), 2)
    np.testing.assert_array_equal(labels, [0, 1, 0, 1, 0, 1, 0, 1, 0])


def test_one_tree_is_one_cluster():
    np.testing.assert_array_equal(cluster_trees(two_blobs(), 1), np.zeros(9))


def test_too_many_trees():
    with pytest.raises(InvalidParameterError, match="cannot split 9 models into 10 trees"):
        cluster_trees(two_blobs(), 10)


def test_split_counts_give_extra_trees_to_the_group_with_the_clearest_gap():
    blobs = two_blobs()
    uniform = np.ones((4, 4)) - np.eye(4)
    linkages = [tree_linkage(uniform), tree_linkage(blobs)]
    assert split_counts(linkages, [1.0, float(np.median(blobs))], 3) == [1, 2]


def test_split_counts_need_one_tree_per_group():
    z = tree_linkage(two_blobs())
    with pytest.raises(
        InvalidParameterError, match="cannot split 18 models in 2 architecture groups into 1 trees"
    ):
        split_counts([z, z], [1.0, 1.0], 1)


def test_rank_first_distances_join_low_rank_pairs_first_by_rank():
    # Worked example (hand-made matrices): a root r, a full fine-tune f (l2 0.10 from r) and a LoRA child
    # l of r that moved further in l2 (0.30) but by a rank-8 update; f-l is dense.
    l2 = np.array([[0.0, 0.10, 0.30], [0.10, 0.0, 0.32], [0.30, 0.32, 0.0]])
    shares = np.array([[0.0, np.nan, 0.06], [np.nan, 0.0, np.nan], [0.06, np.nan, 0.0]])
    low = np.array([[False, False, True], [False, False, False], [True, False, False]])
    d = rank_first_distances(l2, shares, low)
    assert d[0, 2] == d[2, 0] < 0.5 * 0.10  # below half of the nearest l2-placed pair
    assert d[0, 1] == 0.10 and d[1, 2] == 0.32  # other pairs keep their l2 distance
    np.testing.assert_array_equal(rank_first_distances(l2, shares, np.zeros_like(low)), l2)


def test_rank_first_distances_order_low_rank_pairs_by_rank_then_l2():
    # Parent-child rank 16 before siblings' 32, whatever their l2 (hand-made numbers).
    l2 = np.array([[0.0, 0.4, 0.4, 0.9], [0.4, 0.0, 0.2, 0.9], [0.4, 0.2, 0.0, 0.9], [0.9, 0.9, 0.9, 0.0]])
    shares = np.array([[0, 0.1, 0.1, 1], [0.1, 0, 0.2, 1], [0.1, 0.2, 0, 1], [1, 1, 1, 0]], dtype=float)
    low = (shares < 0.5) & ~np.eye(4, dtype=bool)
    d = rank_first_distances(l2, shares, low)
    assert d[0, 1] < d[1, 2] and d[0, 2] < d[1, 2]
    assert d[1, 2] < d[0, 3]
