"""The pieces of orienting a placed tree: its spanning tree, each edge's evidence, the scores of roots.

When the undirected edges of a tree are right, every direction follows from the root, so orienting is
choosing the root (``tree.direction`` weighs every root). Each tree edge carries evidence for one direction
from a *cue*: a per-model statistic that moves one way along training (the weight norm grows when
fine-tuning adds an update nearly orthogonal to the weights; the paper's kurtosis falls). Evidence per edge
is squashed with ``tanh`` after dividing by the median change along the tree, so that no single large step
decides alone.

A statistic is either one value per model or, pairwise, ``s[i, j]`` model i's value as compared with
model j. Pruning needs the pairwise form: a pruned child's whole norm is smaller than its parent's, but
over the weights both kept (``FeatureSet.log_norm_pairs``) it is larger, as for any fine-tune.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from scipy.sparse.csgraph import minimum_spanning_tree

Edges = list[tuple[int, int]]


class PairValues(Protocol):
    """A pair statistic read at ``[i, j]``: an ``(n, n)`` array, or a lookup of the pairs a sparse
    candidate graph holds (``tree.sparse.PairLookup``)."""

    def __getitem__(self, key: tuple[int, int], /) -> Any: ...


def undirected_spanning_tree(distances: npt.ArrayLike) -> Edges:
    """Edges ``(i, j)`` with ``i < j`` of a minimum spanning tree of a symmetric distance matrix."""
    d = np.asarray(distances, dtype=np.float64)
    d = (d + d.T) / 2.0
    # scipy reads a zero (and anything under about 1e-8) as "no edge", yet identical models are at
    # distance zero and must stay connected. Every spanning tree has n - 1 edges, so adding one constant
    # to all of them changes no choice.
    d = d + (np.abs(d).max() + 1.0)
    np.fill_diagonal(d, 0.0)
    tree = minimum_spanning_tree(d).tocoo()
    return sorted((min(i, j), max(i, j)) for i, j in zip(tree.row.tolist(), tree.col.tolist(), strict=True))


def pairwise_changes(statistic: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``(n, n)`` change of a statistic from model i to model j, ``[i, j]``.

    Per model, ``(n,)``: ``v[j] - v[i]``. Pairwise, ``(n, n)`` with ``s[i, j]`` model i's value as compared
    with j: ``s[j, i] - s[i, j]``, both measured on the same footing (for a row-constant ``s``, the same).
    """
    s = np.asarray(statistic, dtype=np.float64)
    if s.ndim == 1:
        return np.asarray(s[None, :] - s[:, None], dtype=np.float64)
    if s.ndim == 2 and s.shape[0] == s.shape[1]:
        return np.asarray(s.T - s, dtype=np.float64)
    raise ValueError(f"a statistic is (n,) or (n, n), got shape {s.shape}")


def evidence_from_changes(
    changes: PairValues, edges: Sequence[tuple[int, int]], sign: float = 1.0
) -> dict[tuple[int, int], float]:
    """Evidence in [-1, 1] that each edge points ``i -> j``: ``tanh(sign * change / median |change|)``.

    ``changes`` are the ``(n, n)`` changes of ``pairwise_changes``; the evidence for ``j -> i`` is the
    negative. ``sign=+1``: the statistic grows from parent to child. A non-finite change (a model with
    nothing to compare on) is no evidence either way.
    """
    along = {(i, j): float(changes[i, j]) if np.isfinite(changes[i, j]) else 0.0 for i, j in edges}
    steps = np.abs(np.array(list(along.values())))
    scale = float(np.median(steps)) if steps.size else 1.0
    scale = scale if scale > 0 else 1.0
    return {edge: float(np.tanh(sign * change / scale)) for edge, change in along.items()}


def orient_from_root(n_nodes: int, edges: Sequence[tuple[int, int]], root: int) -> npt.NDArray[np.int64]:
    """``parents`` of every node when the tree ``edges`` hangs from ``root`` (-1 for the root)."""
    neighbours: list[list[int]] = [[] for _ in range(n_nodes)]
    for i, j in edges:
        neighbours[i].append(j)
        neighbours[j].append(i)
    parents = np.full(n_nodes, -1, dtype=np.int64)
    seen = {root}
    stack = [root]
    while stack:
        node = stack.pop()
        for other in neighbours[node]:
            if other not in seen:
                seen.add(other)
                parents[other] = node
                stack.append(other)
    return parents


def root_scores(
    n_nodes: int, edges: Sequence[tuple[int, int]], evidence: dict[tuple[int, int], float]
) -> npt.NDArray[np.float64]:
    """For every node, the total evidence agreeing with the orientation that makes it the root.

    Moving the root across one edge flips only that edge, so all scores follow from one of them in a
    single walk over the tree: ``score(child) = score(parent) - 2 * evidence(parent -> child)``.
    """

    def towards(parent: int, child: int) -> float:
        return evidence[(parent, child)] if (parent, child) in evidence else -evidence[(child, parent)]

    scores = np.zeros(n_nodes)
    if n_nodes == 0:
        return scores
    parents = orient_from_root(n_nodes, edges, 0)
    scores[0] = sum(towards(int(p), c) for c, p in enumerate(parents) if p >= 0)
    order = preorder(parents)
    for node in order[1:]:
        parent = int(parents[node])
        scores[node] = scores[parent] - 2.0 * towards(parent, node)
    return scores


def preorder(parents: npt.NDArray[np.int64]) -> list[int]:
    """Every node, each after its parent (roots in index order)."""
    children: list[list[int]] = [[] for _ in parents]
    roots = []
    for child, parent in enumerate(parents.tolist()):
        if parent >= 0:
            children[parent].append(child)
        else:
            roots.append(child)
    order: list[int] = []
    stack = roots[::-1]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(reversed(children[node]))
    return order


def placement_confidence(distances: npt.ArrayLike, parents: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """``(n,)`` confidence in each node's parent (NaN for roots).

    ``1 - d(parent, child) / d(runner-up, child)``, the runner-up being the nearest model that could have
    been the parent instead: any other model outside the child's own subtree (whether a descendant should
    have been the parent is a question of direction, see ``tree.direction``). 0 means another model
    is as close as the chosen parent; 1 when there is no other candidate.
    """
    d = np.asarray(distances, dtype=np.float64)
    n_nodes = len(parents)
    confidence = np.full(n_nodes, np.nan)
    for child, parent in enumerate(parents.tolist()):
        if parent < 0:
            continue
        candidates = [q for q in range(n_nodes) if q != parent and not _is_in_subtree(q, child, parents)]
        runner_up = float(d[candidates, child].min()) if candidates else np.inf
        confidence[child] = 1.0 - d[parent, child] / runner_up if runner_up > 0 else 0.0
    return np.clip(confidence, 0.0, 1.0)


def _is_in_subtree(node: int, head: int, parents: npt.NDArray[np.int64]) -> bool:
    while node >= 0:
        if node == head:
            return True
        node = int(parents[node])
    return False


def consistency(
    n_nodes: int, edges: Sequence[tuple[int, int]], evidence: dict[tuple[int, int], float]
) -> float:
    """How well the best root explains a cue: its score over the total evidence, in [-1, 1].

    1 when every edge agrees with the orientation from one root. Why this tells a cue's sign: in a fan (a
    parent with several children) the wrong sign points every child at the parent, which no single root
    can explain, so the wrong sign scores far lower. In a chain both signs explain everything (one root at
    each end): there the sign is undecided by this cue alone.
    """
    total = sum(abs(value) for value in evidence.values())
    if total == 0.0:
        return 0.0
    return float(root_scores(n_nodes, edges, evidence).max() / total)
