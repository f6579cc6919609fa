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
the tree from a child. A bare chain is explained equally by both signs (one root at each end), so its
direction is a coin flip, reported undetermined (below ``DETERMINED_ABOVE``), unless the angles at its
forks (``fork_scores``: a side branch off the chain) say which neighbour of a fork is its parent, or the
weight-decay clock (``clock_scores``, ``features/decay.py``) reads the edge: its sign is known.

Each edge's *direction probability* is the posterior mass of the roots that keep it as it is (outside its
child's subtree); ``tree.calibration`` turns it and the placement margin into the edge's confidence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from scipy.special import logsumexp

from .orient import Edges, PairValues, evidence_from_changes, orient_from_root, preorder, root_scores

# An edge whose cue moves by the tree's median step (evidence tanh(1) = 0.76) agrees with the recipe's
# sign with probability sigmoid(2 * 2 * 0.76) = 0.95. Chosen on the shapes zoo and the zoo's fans
# (docs/DESIGN.md, `benchmarks/direction_sweep.py`).
BETA = 2.0
# Prior of a cue's sign, +1: the statistic grows from parent to child. Even: which way the norm and the
# kurtosis move depends on the recipe (weight decay shrinks the norm, continued pre-training can raise the
# kurtosis), so no sign is favoured and a bare chain is a coin flip.
SIGN_PRIOR: dict[str, dict[float, float]] = {
    "norm": {1.0: 0.5, -1.0: 0.5},
    "kurtosis": {-1.0: 0.5, 1.0: 0.5},
    # The skew of per-tensor norm changes leans right from parent to child by how training works, not by
    # recipe (``FeatureSet.norm_change_skew``): its sign is all but known.
    "skew": {1.0: 0.95, -1.0: 0.05},
}
# Prior probability that a cue tells nothing about a tree's directions (``_cue_log_likelihood``).
CUE_UNINFORMATIVE = 0.5
# Weight of each cue's log-likelihood in the joint (a composite likelihood): the cues are not independent
# given the tree, the norm and the skew being two summaries of the same per-tensor norm changes. Fitted on
# a grid by `benchmarks/direction_calibration.py` (docs/RESULTS.md, section (m)); kept at 1, docs/DESIGN.md
# says why.
CUE_WEIGHTS: dict[str, float] = {"norm": 1.0, "kurtosis": 1.0, "skew": 1.0}
# How many nats a cosine of 1 between a neighbour's difference and the others' counts at a fork
# (``fork_scores``): on the shapes zoo's masked-token chains parent-child pairs sit near -0.1 and sibling
# pairs near +0.03, so one fork gives the upstream side about 2 to 1.
FORK_STRENGTH = 10.0
# How many nats one edge's weight-decay clock (``clock_scores``) counts for its direction. Decay shrinks
# the rows a run did not update and nothing else scales them all alike, so a clock is wrong only where a
# model was rescaled by other means; 5 nats (0.993 on its own) leaves room for that.
CLOCK_STRENGTH = 5.0
# Above this direction probability an edge's direction is reported as determined.
DETERMINED_ABOVE = 0.75


def root_log_posterior(
    n_nodes: int,
    edges: Edges,
    cues: Mapping[str, PairValues],
    *,
    signs: Mapping[str, Mapping[float, float]] | None = None,
    beta: float = BETA,
    known_parents: Mapping[int, int] | None = None,
    fork: npt.ArrayLike | None = None,
) -> tuple[npt.NDArray[np.float64], dict[str, float | None]]:
    """``(n_nodes,)`` log posterior of each node being the root, and per cue its most probable sign at the
    most probable root (None: the cue more likely tells nothing about this tree).

    ``cues`` maps a cue's name to its ``(n, n)`` pairwise changes (``tree.orient.pairwise_changes``);
    ``signs`` gives each cue's sign prior (default ``SIGN_PRIOR``; a single sign with probability 1 fixes
    it, as ``direction="norm"`` does). ``fork``: per-root log-evidence beside the cues (the tree's
    ``fork_scores``, and ``clock_scores`` where the clock reads an edge), added to every hypothesis.
    """
    signs = signs if signs is not None else {name: SIGN_PRIOR[name] for name in cues}
    joint = np.zeros(n_nodes) if fork is None else np.asarray(fork, dtype=np.float64).copy()
    agreements, chances = {}, {}
    for name, changes in cues.items():
        evidence = evidence_from_changes(changes, edges, 1.0)
        agreements[name] = root_scores(n_nodes, edges, evidence)
        chances[name] = _chance(evidence.values(), beta)
        joint += CUE_WEIGHTS.get(name, 1.0) * _cue_log_likelihood(
            agreements[name], chances[name], signs[name], beta
        )
    joint[_roots_reversing(n_nodes, edges, known_parents or {})] = -np.inf
    log_posterior = joint - logsumexp(joint)
    root = int(np.argmax(log_posterior))
    return log_posterior, {
        name: _likely_sign(agreements[name][root], chances[name], signs[name], beta) for name in cues
    }


def _chance(evidence: Iterable[float], beta: float) -> float:
    """Log of how much likelier each edge's evidence is under its best sign than by chance, summed."""
    return float(np.sum(np.log(np.cosh(beta * np.fromiter(evidence, dtype=np.float64)))))


def _likely_sign(agreement: float, chance: float, signs: Mapping[float, float], beta: float) -> float | None:
    """The cue's most probable sign given the root, or None when it more likely tells nothing."""
    sign = max(signs, key=lambda s: np.log(signs[s]) + beta * s * agreement)
    if len([p for p in signs.values() if p > 0]) == 1:
        return sign
    informative = np.log1p(-CUE_UNINFORMATIVE) + np.log(signs[sign]) + beta * sign * agreement - chance
    return sign if informative > np.log(CUE_UNINFORMATIVE) else None


def _cue_log_likelihood(
    agreement: npt.NDArray[np.float64],
    chance: float,
    signs: Mapping[float, float],
    beta: float,
) -> npt.NDArray[np.float64]:
    """``(n,)`` log-likelihood of one cue's evidence for each root, relative to the cue telling nothing.

    Each edge agrees with the recipe's sign with probability ``exp(beta e) / 2 cosh(beta e)``; a cue
    that tells nothing agrees by chance (1/2). The cue is informative with probability
    ``1 - CUE_UNINFORMATIVE``, so a statistic without a trend along this tree (a norm that grows on half
    the edges) adds little either way instead of pulling the root to wherever its noise fits best.
    """
    informative = logsumexp(
        [np.log(prior) + beta * sign * agreement - chance for sign, prior in signs.items() if prior > 0],
        axis=0,
    )
    if len([p for p in signs.values() if p > 0]) == 1:  # the sign is given: the cue is taken at its word
        return np.asarray(informative, dtype=np.float64)
    return np.asarray(
        np.logaddexp(np.log(CUE_UNINFORMATIVE), np.log1p(-CUE_UNINFORMATIVE) + informative), dtype=np.float64
    )


def fork_scores(
    n_nodes: int,
    edges: Edges,
    squared_distances: PairValues,
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
    sq = squared_distances
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


def clock_scores(
    n_nodes: int, edges: Edges, clock: PairValues, strength: float = CLOCK_STRENGTH
) -> npt.NDArray[np.float64]:
    """``(n_nodes,)`` log-evidence from the weight-decay clock for each node being the root.

    ``clock[i, j]`` is +1 where model j's untouched rows are model i's shrunk by weight decay (j came
    later), -1 for the reverse, 0 where the pair shows no clock (``FeatureSet.clock_evidence``). Each edge
    the clock reads counts ``strength`` nats for its direction; a tree without a clock gets zeros.
    """
    evidence = {(i, j): 0.5 * strength * _finite_or_zero(clock[i, j]) for i, j in edges}
    return root_scores(n_nodes, edges, evidence)


def clock_edges(edges: Edges, clock: PairValues) -> int:
    """How many of ``edges`` the clock reads."""
    return sum(_finite_or_zero(clock[i, j]) != 0 for i, j in edges)


def _finite_or_zero(value: object) -> float:
    number = float(value)  # type: ignore[arg-type]
    return number if np.isfinite(number) else 0.0


def _cosine_at(sq: PairValues, b: int, x: int, y: int) -> float:
    bx, by, xy = float(sq[b, x]), float(sq[b, y]), float(sq[x, y])
    norms = np.sqrt(bx * by)
    if not np.isfinite(norms) or norms <= 0:
        return 0.0
    return float(np.clip((bx + by - xy) / (2.0 * norms), -1.0, 1.0))


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
