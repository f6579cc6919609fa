"""Scores of a recovered Model Graph against the truth (kept apart from recovery, unlike the paper's code).

The paper's metric is directed edge accuracy: a true edge counts when the recovered graph has the same
parent -> child edge, placement and direction right. Undirected accuracy counts placement alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .truth import EdgeSet


@dataclass(frozen=True)
class TreeScore:
    root: str
    n_edges: int
    directed: float
    undirected: float


@dataclass(frozen=True)
class Score:
    """Directed and undirected edge accuracy, overall and per true tree."""

    n_edges: int
    n_directed_correct: int
    n_undirected_correct: int
    per_tree: list[TreeScore] = field(default_factory=list)

    @property
    def directed(self) -> float:
        return self.n_directed_correct / self.n_edges if self.n_edges else 1.0

    @property
    def undirected(self) -> float:
        return self.n_undirected_correct / self.n_edges if self.n_edges else 1.0

    def to_dict(self) -> dict[str, object]:
        return {
            "n_edges": self.n_edges,
            "directed_accuracy": self.directed,
            "undirected_accuracy": self.undirected,
            "trees": [
                {
                    "root": t.root,
                    "n_edges": t.n_edges,
                    "directed_accuracy": t.directed,
                    "undirected_accuracy": t.undirected,
                }
                for t in self.per_tree
            ],
        }


def true_trees(edges: EdgeSet) -> list[tuple[str, EdgeSet]]:
    """The weakly connected components of the true edges, each with its root (a node with no parent)."""
    neighbours: dict[str, set[str]] = {}
    for parent, child in edges:
        neighbours.setdefault(parent, set()).add(child)
        neighbours.setdefault(child, set()).add(parent)
    children = {child for _, child in edges}
    seen: set[str] = set()
    trees: list[tuple[str, EdgeSet]] = []
    for start in sorted(neighbours):
        if start in seen:
            continue
        component, stack = {start}, [start]
        while stack:
            for other in neighbours[stack.pop()] - component:
                component.add(other)
                stack.append(other)
        seen |= component
        roots = sorted(component - children) or sorted(component)
        trees.append((roots[0], {e for e in edges if e[0] in component}))
    return trees


def score_edges(predicted: EdgeSet, truth: EdgeSet) -> Score:
    """Accuracy of ``predicted`` over the ``truth`` edges, overall and per true tree."""
    undirected_predicted = {frozenset(e) for e in predicted}

    def counts(true_edges: EdgeSet) -> tuple[int, int]:
        directed = sum(e in predicted for e in true_edges)
        undirected = sum(frozenset(e) in undirected_predicted for e in true_edges)
        return directed, undirected

    per_tree = []
    for root, tree_edges in true_trees(truth):
        directed, undirected = counts(tree_edges)
        n = len(tree_edges)
        per_tree.append(TreeScore(root, n, directed / n if n else 1.0, undirected / n if n else 1.0))
    directed, undirected = counts(truth)
    return Score(len(truth), directed, undirected, per_tree)


def clustering_accuracy(assigned: Mapping[str, int], truth: EdgeSet) -> float:
    """Share of models placed in the right tree, after matching found trees to true trees one to one.

    The matching maximises the models that agree (Hungarian algorithm), so the labels' numbering does not
    matter; a true tree split in two counts its smaller part as wrong, two trees merged count the smaller
    one as wrong. Models of ``assigned`` that are in no true edge are ignored.
    """
    from scipy.optimize import linear_sum_assignment

    tree_of = {model: k for k, (_, edges) in enumerate(true_trees(truth)) for edge in edges for model in edge}
    models = [m for m in assigned if m in tree_of]
    if not models:
        return 1.0
    found = sorted({assigned[m] for m in models})
    column = {label: k for k, label in enumerate(found)}
    agreement = np.zeros((max(tree_of.values()) + 1, len(found)))
    for model in models:
        agreement[tree_of[model], column[assigned[model]]] += 1
    rows, cols = linear_sum_assignment(agreement, maximize=True)
    return float(agreement[rows, cols].sum() / len(models))


def chance_of_at_least(confidences: Sequence[float], wrong: int) -> float:
    """The probability of ``wrong`` or more wrong edges if each edge is wrong with probability
    ``1 - confidence``, independently: how surprising the observed count is under the confidences.

    The ratio of observed to expected wrong edges says little where the expected number is below one or
    two: with 0.8 expected, two wrong edges (a ratio of 2.5) happen one time in five. This tail (of the
    Poisson-binomial distribution, by dynamic programming over the edges) says it in the units it is
    read in; a small value (say below 0.05) is miscalibration, not bad luck.
    """
    if wrong <= 0:
        return 1.0
    # counts[k]: the probability of exactly k wrong edges among those seen so far (k < wrong), and
    # counts[wrong] of `wrong` or more.
    counts = np.zeros(wrong + 1)
    counts[0] = 1.0
    for confidence in confidences:
        p = float(np.clip(1.0 - confidence, 0.0, 1.0))
        at_least = counts[wrong] + p * counts[wrong - 1]
        counts[1:wrong] = counts[1:wrong] * (1.0 - p) + counts[: wrong - 1] * p
        counts[0] *= 1.0 - p
        counts[wrong] = at_least
    return float(counts[wrong])
