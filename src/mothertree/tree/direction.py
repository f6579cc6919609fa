"""Direction as a posterior over roots and cue signs, so that an undecidable direction says so.

Once a tree's undirected edges are placed, its directions follow from its root. A cue (a per-model
statistic: the weight norm, the paper's kurtosis) says, per edge, which end moved which way; but the sign of
that move depends on the recipe (weight decay shrinks the norm, continued pre-training raises the kurtosis),
so the sign is unknown too. Every hypothesis is a root ``r`` and one sign ``s_c`` per cue, scored::

    log P(r, s) = log prior(s) + BETA * sum_c s_c * E_c(r) + known(r)

``E_c(r)`` is the evidence of cue ``c`` agreeing with the orientation from ``r`` (``tree.orient.root_scores``
of per-edge evidence in [-1, 1], sign +: the statistic grows from parent to child). ``BETA`` is how much one
edge's full evidence counts: an edge whose cue moves clearly one way agrees with the recipe's sign with
probability ``sigmoid(2 * BETA)``. ``known(r)`` rules out roots that would reverse a known edge.

What decides a sign is a fork: a parent with two children, which the wrong sign can only explain by hanging
the tree from a child. A bare chain is explained equally by both signs (one root at each end); there the
posterior falls back on the prior, which favours the fine-tuning signature (norm grows, kurtosis falls)
only mildly: a chain comes out at about 0.67, below ``DETERMINED_ABOVE``, and is reported undetermined.

Each edge's *direction probability* is the posterior mass of the roots that keep it as it is (outside its
child's subtree); ``tree.calibration`` turns it and the placement margin into the edge's confidence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from scipy.special import logsumexp

from .orient import Edges, evidence_from_changes, orient_from_root, preorder, root_scores

# sigmoid(2 * 0.5) = 0.73: an edge whose cue moves clearly agrees with its tree's sign about 3 times in 4
# (on the zoo and the shapes zoo, the norm's sign holds on 70-100 % of a tree's edges; docs/RESULTS.md).
BETA = 0.5
# Prior of a cue's sign, +1: the statistic grows from parent to child. The fine-tuning signature (an update
# nearly orthogonal to the weights makes the norm grow; the paper's kurtosis falls) is favoured 2 to 1 over
# its mirror image, which is not enough to decide a chain alone.
SIGN_PRIOR: dict[str, dict[float, float]] = {
    "norm": {1.0: 2.0 / 3.0, -1.0: 1.0 / 3.0},
    "kurtosis": {-1.0: 0.5, 1.0: 0.5},
}
# How often an edge to a leaf moves a cue the way the tree's inner edges do (``root_log_posterior``).
LEAF_SIGN_KEPT = 1.0
# How many nats a cosine of 1 between a neighbour's difference and the others' counts at a fork
# (``fork_scores``): on the shapes zoo's masked-token chains parent-child pairs sit near -0.1 and sibling
# pairs near +0.03, so one fork gives the upstream side about 2 to 1.
FORK_STRENGTH = 10.0
# Above this direction probability an edge's direction is reported as determined.
DETERMINED_ABOVE = 0.75


def root_log_posterior(
    n_nodes: int,
    edges: Edges,
    cues: Mapping[str, npt.NDArray[np.float64]],
    *,
    signs: Mapping[str, Mapping[float, float]] | None = None,
    beta: float = BETA,
    leaf_sign_kept: float = LEAF_SIGN_KEPT,
    known_parents: Mapping[int, int] | None = None,
    fork: npt.ArrayLike | None = None,
) -> tuple[npt.NDArray[np.float64], dict[str, float]]:
    """``(n_nodes,)`` log posterior of each node being the root, and the most probable sign per cue.

    ``cues`` maps a cue's name to its ``(n, n)`` pairwise changes (``tree.orient.pairwise_changes``);
    ``signs`` gives each cue's sign prior (default ``SIGN_PRIOR``; a single sign with probability 1 fixes
    it, as ``direction="norm"`` does). Edges to a leaf have a sign of their own, equal to the inner
    edges' with probability ``leaf_sign_kept`` (a task fine-tune at the end of a lineage of continued
    pre-training). ``fork``: ``fork_scores`` of the tree, added to every hypothesis.
    """
    signs = signs if signs is not None else {name: SIGN_PRIOR[name] for name in cues}
    names = list(cues)
    at_leaf = _leaf_edges(n_nodes, edges)
    joint = np.zeros((1, n_nodes))
    for name in names:
        evidence = evidence_from_changes(cues[name], edges, 1.0)
        inner = root_scores(n_nodes, edges, {e: 0.0 if e in at_leaf else v for e, v in evidence.items()})
        outer = root_scores(n_nodes, edges, {e: v if e in at_leaf else 0.0 for e, v in evidence.items()})
        options = []
        for sign, prior in signs[name].items():
            for leaf_sign in signs[name]:
                kept = leaf_sign == sign
                weight = (
                    prior * (leaf_sign_kept if kept else 1.0 - leaf_sign_kept)
                    if len(signs[name]) > 1
                    else prior
                )
                if weight > 0:
                    options.append(np.log(weight) + beta * (sign * inner + leaf_sign * outer))
        joint = (joint[:, None, :] + np.array(options)[None, :, :]).reshape(-1, n_nodes)
    if fork is not None:
        joint = joint + np.asarray(fork, dtype=np.float64)[None, :]
    excluded = _roots_reversing(n_nodes, edges, known_parents or {})
    joint[:, excluded] = -np.inf
    log_posterior = logsumexp(joint, axis=0)
    log_posterior = log_posterior - logsumexp(log_posterior)
    return log_posterior, _likely_signs(n_nodes, edges, cues, signs, int(np.argmax(log_posterior)), beta)


def _likely_signs(
    n_nodes: int,
    edges: Edges,
    cues: Mapping[str, npt.NDArray[np.float64]],
    signs: Mapping[str, Mapping[float, float]],
    root: int,
    beta: float,
) -> dict[str, float]:
    """Each cue's more probable sign over all edges, given the root."""
    likely = {}
    for name, changes in cues.items():
        agreement = root_scores(n_nodes, edges, evidence_from_changes(changes, edges, 1.0))[root]
        likely[name] = max(signs[name], key=lambda s: np.log(signs[name][s]) + beta * s * agreement)
    return likely


def _leaf_edges(n_nodes: int, edges: Edges) -> set[tuple[int, int]]:
    degree = np.zeros(n_nodes, dtype=np.int64)
    for i, j in edges:
        degree[i] += 1
        degree[j] += 1
    return {(i, j) for i, j in edges if degree[i] == 1 or degree[j] == 1}


def fork_scores(
    n_nodes: int,
    edges: Edges,
    squared_distances: npt.ArrayLike,
    strength: float = FORK_STRENGTH,
) -> npt.NDArray[np.float64]:
    """``(n_nodes,)`` log-evidence from the angles at forks for each node being the root.

    At a node ``b``, two neighbours' differences from it, ``W_x - W_b`` and ``W_y - W_b``, are at an angle
    whose cosine follows from the three squared distances alone (the law of cosines). Two children of
    ``b`` start from the same point, and their updates share what every run of a recipe shares (weight
    decay pulling towards zero, the drift of a continued objective): an acute angle. The parent and a
    child lie on either side of ``b`` along one trajectory: an obtuse angle when training steps in a
    similar direction twice. So the neighbour whose differences are most anti-aligned with the others'
    is likely ``b``'s parent: ``L_b(x) = -strength * sum_{y != x} cos_b(x, y)``, centred over ``b``'s
    neighbours, so that the angles say which neighbour is the parent, not whether ``b`` is the root. A
    node of degree two is therefore no evidence: a bare chain stays undecided.
    """
    sq = np.asarray(squared_distances, dtype=np.float64)
    neighbours: list[list[int]] = [[] for _ in range(n_nodes)]
    for i, j in edges:
        neighbours[i].append(j)
        neighbours[j].append(i)
    parent_evidence: dict[tuple[int, int], float] = {}  # (b, x): log-evidence that x is b's parent
    for b, around in enumerate(neighbours):
        if len(around) < 3:
            continue
        cosines = {(x, y): _cosine_at(sq, b, x, y) for k, x in enumerate(around) for y in around[k + 1 :]}
        totals = {x: -strength * sum(c for pair, c in cosines.items() if x in pair) for x in around}
        mean = float(np.mean(list(totals.values())))
        parent_evidence.update({(b, x): total - mean for x, total in totals.items()})
    scores = np.zeros(n_nodes)
    if n_nodes == 0:
        return scores
    hung = orient_from_root(n_nodes, edges, 0)
    scores[0] = sum(parent_evidence.get((c, int(p)), 0.0) for c, p in enumerate(hung) if p >= 0)
    for node in preorder(hung)[1:]:
        parent = int(hung[node])
        # Moving the root from `parent` to `node`: `parent` gains `node` as its parent, `node` loses its.
        scores[node] = (
            scores[parent]
            + parent_evidence.get((parent, node), 0.0)
            - parent_evidence.get((node, parent), 0.0)
        )
    return scores


def _cosine_at(sq: npt.NDArray[np.float64], b: int, x: int, y: int) -> float:
    norms = np.sqrt(sq[b, x] * sq[b, y])
    if not np.isfinite(norms) or norms <= 0:
        return 0.0
    return float(np.clip((sq[b, x] + sq[b, y] - sq[x, y]) / (2.0 * norms), -1.0, 1.0))


def direction_probabilities(
    log_posterior: npt.ArrayLike, parents: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """``(n,)`` posterior probability that each node's edge from its parent points the right way (NaN
    for roots): the mass of the roots outside the child's subtree."""
    mass = np.exp(np.asarray(log_posterior, dtype=np.float64))
    inside = _subtree_sums(mass, parents)
    probability = np.full(len(parents), np.nan)
    has_parent = parents >= 0
    probability[has_parent] = np.clip(1.0 - inside[has_parent], 0.0, 1.0)
    return probability


def posterior_parents(n_nodes: int, edges: Edges, log_posterior: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """The tree hung from its most probable root (ties: the lowest index)."""
    return orient_from_root(n_nodes, edges, int(np.argmax(np.asarray(log_posterior))))


def _subtree_sums(values: npt.NDArray[np.float64], parents: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    total = values.copy()
    for node in reversed(preorder(parents)):  # children before their parents
        parent = int(parents[node])
        if parent >= 0:
            total[parent] += total[node]
    return total


def _roots_reversing(n_nodes: int, edges: Sequence[tuple[int, int]], known: Mapping[int, int]) -> list[int]:
    """Nodes that, as the root, would point a known ``child -> parent`` edge the wrong way."""
    if not known:
        return []
    excluded: set[int] = set()
    for child, parent in known.items():
        hung = orient_from_root(n_nodes, edges, parent)
        if hung[child] != parent:  # the known pair is not an edge of this tree: nothing to keep
            continue
        excluded.update(_subtree_of(child, hung))
    return sorted(excluded)


def _subtree_of(head: int, parents: npt.NDArray[np.int64]) -> set[int]:
    inside = {head}
    for node in preorder(parents):  # parents before their children
        if int(parents[node]) in inside:
            inside.add(node)
    return inside
