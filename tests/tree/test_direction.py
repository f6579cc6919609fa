"""The direction posterior on hand-made trees (synthetic statistics and points: the mechanics, by hand)."""

import numpy as np
import pytest

from mothertree.tree.direction import (
    DETERMINED_ABOVE,
    direction_probabilities,
    fork_scores,
    posterior_parents,
    root_log_posterior,
)
from mothertree.tree.orient import pairwise_changes

CHAIN = [(0, 1), (1, 2), (2, 3)]
#   0          a fan: 0 has three children
#  /|\
# 1 2 3
FAN = [(0, 1), (0, 2), (0, 3)]
EVEN = {"kurtosis": {1.0: 0.5, -1.0: 0.5}}


def test_a_bare_chain_is_a_coin_flip_whichever_way_its_cue_moves():
    # The statistic grows by one per step: both signs explain the chain, one root at each end.
    changes = pairwise_changes([0.0, 1.0, 2.0, 3.0])
    log_posterior, _ = root_log_posterior(4, CHAIN, {"kurtosis": changes}, signs=EVEN, beta=1.0)
    posterior = np.exp(log_posterior)
    # By hand: each edge's evidence is t = tanh(1) = 0.7616 (the median step); root 0 agrees with 3 of them
    # under the rising sign (E = 3t), root 1 with 2 and against 1 (E = t), ... Relative to chance
    # (cosh(t)^3 = 2.218), the cue explains root r with 0.5 (e^E + e^-E) / 2.218: 2.237 at either end and
    # 0.588 inside; half-weighted against telling nothing (1): 1.619 and 0.794, so P = 0.3354 and 0.1646.
    assert posterior == pytest.approx([0.3354, 0.1646, 0.1646, 0.3354], abs=1e-4)
    parents = posterior_parents(4, CHAIN, log_posterior)
    probability = direction_probabilities(log_posterior, parents)
    assert np.isnan(probability[parents < 0]).all()
    # Hung from 0, edge k -> k+1 is right when the root is at k or before it: 0.335, 0.5, 0.665.
    assert probability[1:] == pytest.approx([0.3354, 0.5, 0.6646], abs=1e-4)
    assert (probability[1:] < DETERMINED_ABOVE).all()


def test_a_fan_decides_its_sign_and_its_root():
    # The statistic grows from the centre to every leaf: only the rising sign with the centre as root
    # explains all three edges; the falling sign explains at most one edge from any root.
    changes = pairwise_changes([0.0, 1.0, 1.0, 1.0])
    log_posterior, signs = root_log_posterior(4, FAN, {"kurtosis": changes}, signs=EVEN, beta=2.0)
    assert signs == {"kurtosis": 1.0}
    parents = posterior_parents(4, FAN, log_posterior)
    assert parents.tolist() == [-1, 0, 0, 0]
    # By hand: E(0) = 3t, E(leaf) = -t (t = tanh 1). With beta = 2, relative to chance (cosh(2t)^3 =
    # 13.83), the cue explains the centre with cosh(6t) / 13.83 = 3.49 and a leaf with cosh(2t) / 13.83 =
    # 0.174; half-weighted against telling nothing: 2.245 and 0.587, so each edge is right with
    # 1 - 0.587 / (2.245 + 3 * 0.587) = 0.8533 (three edges are little to rule out a noisy cue).
    probability = direction_probabilities(log_posterior, parents)
    assert probability[1:] == pytest.approx([0.8533] * 3, abs=1e-4)
    assert (probability[1:] > DETERMINED_ABOVE).all()


def test_a_fixed_sign_orients_a_chain():
    # direction="norm": the norm grows, so the low end is the root.
    changes = pairwise_changes([0.0, 1.0, 2.0, 3.0])
    log_posterior, _ = root_log_posterior(4, CHAIN, {"norm": changes}, signs={"norm": {1.0: 1.0}}, beta=2.0)
    assert posterior_parents(4, CHAIN, log_posterior).tolist() == [-1, 0, 1, 2]


def test_a_known_edge_rules_out_the_roots_that_would_reverse_it():
    changes = pairwise_changes([0.0, 1.0, 2.0, 3.0])
    # 3 is known to be 2's parent: no root in 2's side (0, 1, 2) is possible.
    log_posterior, _ = root_log_posterior(
        4, CHAIN, {"kurtosis": changes}, signs=EVEN, beta=1.0, known_parents={2: 3}
    )
    assert np.isneginf(log_posterior[:3]).all() and log_posterior[3] == pytest.approx(0.0)


def points_to_squared_distances(points: np.ndarray) -> np.ndarray:
    return ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)


def test_at_a_fork_the_neighbour_anti_aligned_with_the_others_is_the_parent():
    # 0 -> 1 -> 2 is one trajectory that keeps its heading (the second step repeats the first, plus a
    # sideways part); 3 is a sibling of 2, fine-tuned from 1 with the same drift. The parent's difference
    # from 1 points back, against both children's: cos(0, 2) = -0.71, cos(0, 3) = -0.71, cos(2, 3) = +0.5.
    points = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 1.0, 0.0], [2.0, 0.0, 1.0]])
    edges = [(0, 1), (1, 2), (1, 3)]
    scores = fork_scores(4, edges, points_to_squared_distances(points), strength=1.0)
    # By hand, at node 1: L(0) = -(c02 + c03) = 1.414, L(2) = -(c02 + c23) = 0.207, L(3) = 0.207; centred
    # on their mean 0.609: +0.805, -0.402, -0.402. A root on 0's side makes 0 the parent of 1.
    assert scores[0] == pytest.approx(0.8047, abs=1e-4)
    assert scores[2] == pytest.approx(-0.4024, abs=1e-4) and scores[3] == pytest.approx(-0.4024, abs=1e-4)
    # Node 1 as the root itself: the centring leaves it at zero.
    assert scores[1] == pytest.approx(0.0, abs=1e-12)


def test_a_bare_chain_gets_nothing_from_its_angles():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.5], [3.0, 0.0]])
    assert fork_scores(4, CHAIN, points_to_squared_distances(points)) == pytest.approx(np.zeros(4))
