"""Merges found from squared distances alone (tree/merges.py): worked examples on synthetic vectors.

The vectors stand in for models' weights (synthetic, said so): a root, fine-tunes that each add an update
of their own (random directions in 4,000 dimensions, nearly orthogonal as real updates are), and merges
made from them by the formulas mergekit's linear method uses.
"""

from __future__ import annotations

import numpy as np

from mothertree.tree.merges import MAX_RESIDUAL, find_merges, segment_fit, triangle_fit


def _squared(points: np.ndarray) -> np.ndarray:
    diff = points[:, None, :] - points[None, :, :]
    return np.einsum("ijk,ijk->ij", diff, diff)


def _fan(rng: np.random.Generator, n_children: int) -> np.ndarray:
    root = rng.normal(size=4000)
    return np.stack([root] + [root + 0.05 * rng.normal(size=4000) for _ in range(n_children)])


def test_a_point_on_the_segment_has_its_weight_and_no_residual() -> None:
    points = np.array([[0.0, 0.0], [4.0, 0.0], [1.0, 0.0], [1.0, 3.0]])
    squared = _squared(points)
    assert segment_fit(squared, 2, 0, 1) == (0.25, 0.0)
    t, residual = segment_fit(squared, 3, 0, 1)
    assert t == 0.25 and np.isclose(residual, 3.0 / np.sqrt(10.0))  # 3 off, sqrt(10) from the nearer end


def test_a_linear_merge_of_two_fine_tunes_is_found_with_its_weights() -> None:
    rng = np.random.default_rng(0)
    fan = _fan(rng, 3)
    merge = 0.7 * fan[1] + 0.3 * fan[3]
    (found,) = find_merges(_squared(np.vstack([fan, merge])))
    assert found.child == 4
    weights = dict(found.parents)
    assert set(weights) == {1, 3} and np.isclose(weights[1], 0.7) and np.isclose(weights[3], 0.3)
    assert found.residual < 1e-6


def test_no_merge_in_a_fan_or_a_chain() -> None:
    rng = np.random.default_rng(1)
    fan = _fan(rng, 4)
    grandchildren = np.stack([fan[1] + 0.05 * rng.normal(size=4000), fan[2] + 0.05 * rng.normal(size=4000)])
    assert find_merges(_squared(np.vstack([fan, grandchildren]))) == []
    chain = [rng.normal(size=4000)]
    for _ in range(6):
        chain.append(chain[-1] + 0.05 * rng.normal(size=4000))
    squared = _squared(np.stack(chain))
    assert find_merges(squared) == []
    # The middle of a chain sits 1/sqrt(2) of its distance off its neighbours' segment: kept well apart.
    _, residual = segment_fit(squared, 3, 2, 4)
    assert abs(residual - 2**-0.5) < 0.05 and residual > 2 * MAX_RESIDUAL


def test_a_parent_of_a_merge_is_not_taken_for_one() -> None:
    rng = np.random.default_rng(2)
    fan = _fan(rng, 2)
    merge = 0.5 * fan[1] + 0.5 * fan[2]
    # fan[1] = 2 * merge - fan[2]: affine, but outside the segment; only the merge lies between the others.
    found = find_merges(_squared(np.vstack([fan, merge])))
    assert [m.child for m in found] == [3]


def test_a_merge_of_three_fine_tunes_is_found_with_its_three_weights() -> None:
    rng = np.random.default_rng(3)
    fan = _fan(rng, 4)
    soup = 0.5 * fan[1] + 0.3 * fan[2] + 0.2 * fan[4]
    # Off every segment between two of its parents: no pair explains it.
    squared = _squared(np.vstack([fan, soup]))
    assert min(segment_fit(squared, 5, a, b)[1] for a, b in ((1, 2), (1, 4), (2, 4))) > MAX_RESIDUAL
    (found,) = find_merges(squared)
    assert found.child == 5 and found.residual < 1e-6
    weights = dict(found.parents)
    assert set(weights) == {1, 2, 4}
    assert np.allclose([weights[1], weights[2], weights[4]], [0.5, 0.3, 0.2])


def test_task_arithmetic_onto_the_root_is_a_merge_with_the_root_as_a_parent() -> None:
    rng = np.random.default_rng(4)
    fan = _fan(rng, 3)
    # root + 0.4 * (tau_1 + tau_2) = 0.2 root + 0.4 ft_1 + 0.4 ft_2: a combination of three models.
    arithmetic = fan[0] + 0.4 * ((fan[1] - fan[0]) + (fan[2] - fan[0]))
    (found,) = find_merges(_squared(np.vstack([fan, arithmetic])))
    weights = dict(found.parents)
    assert set(weights) == {0, 1, 2} and np.allclose([weights[0], weights[1], weights[2]], [0.2, 0.4, 0.4])


def test_a_merge_of_two_stays_a_merge_of_two_and_a_root_is_no_merge_of_its_children() -> None:
    rng = np.random.default_rng(5)
    fan = _fan(rng, 5)
    merge = 0.6 * fan[2] + 0.4 * fan[3]
    (found,) = find_merges(_squared(np.vstack([fan, merge])))
    assert dict(found.parents).keys() == {2, 3}
    # The root lies 1/sqrt(3) of its distance to them off its children's triangle, never inside it.
    squared = _squared(fan)
    weights, residual = triangle_fit(squared, 0, 1, 2, 3)
    assert np.allclose(weights, 1 / 3, atol=0.05) and abs(residual - 3**-0.5) < 0.05
    assert find_merges(squared) == []
