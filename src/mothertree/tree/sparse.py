"""Model Trees of a very large group on a sparse candidate graph: no ``n x n`` matrix anywhere.

The same steps as ``TreeRecovery`` with ``n_trees="auto"`` and ``direction="auto"`` or ``"norm"``, on the
pairs a candidate graph holds (each model with its nearest by fingerprint, ``features.pairs``):

1. trees: the connected components of the candidate pairs whose relative distance is at most
   ``UNRELATED_ABOVE`` (single linkage cut there, as ``tree.cluster.split_unrelated``);
2. edges: a minimum spanning forest of those pairs (scipy, sparse);
3. direction: ``tree.recover.orient_by_cues`` per tree, its cue changes and fork angles read from a
   ``PairLookup`` that computes the pairs asked, in batches;
4. margins: the runner-up of each child among its candidates outside its own subtree (the dense path
   looks at every model; a model's true runner-up is among its nearest).

A spanning tree of the k-nearest-neighbour graph equals the full minimum spanning tree when every MST
edge joins a model to one of its ``k`` nearest, which holds for fine-tunes (a parent is among its
child's nearest); an approximate index may miss a few, so the benchmark counts them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from .._choices import UNRELATED_ABOVE, Direction
from .calibration import edge_confidence
from .direction import direction_probabilities
from .orient import preorder
from .recover import orient_by_cues

# Pair -> values of the asked pairs, in batches: (first, second) index arrays -> one array per statistic.
PairFunction = Callable[[npt.NDArray[np.int64], npt.NDArray[np.int64]], Mapping[str, npt.NDArray[np.float64]]]


class PairLookup:
    """Pair statistics read as ``lookup[name][i, j]``, computed by ``compute`` for the pairs ``ensure``
    is given (in one batch), cached. ``antisymmetric`` statistics (changes from i to j) are stored for
    ``i < j`` and negated the other way; the others are symmetric."""

    def __init__(self, compute: PairFunction, antisymmetric: Iterable[str]) -> None:
        self._compute = compute
        self._antisymmetric = set(antisymmetric)
        self._values: dict[str, dict[tuple[int, int], float]] = {}

    def ensure(self, pairs: Iterable[tuple[int, int]]) -> None:
        wanted = sorted({(min(i, j), max(i, j)) for i, j in pairs if i != j})
        known = next(iter(self._values.values()), {})
        missing = [pair for pair in wanted if pair not in known]
        if not missing:
            return
        first = np.array([i for i, _ in missing], dtype=np.int64)
        second = np.array([j for _, j in missing], dtype=np.int64)
        for name, values in self._compute(first, second).items():
            self._values.setdefault(name, {}).update(zip(missing, values.tolist(), strict=True))

    def __getitem__(self, name: str) -> _View:
        return _View(self._values[name], name in self._antisymmetric)


class _View:
    def __init__(self, values: dict[tuple[int, int], float], antisymmetric: bool) -> None:
        self._values, self._antisymmetric = values, antisymmetric

    def __getitem__(self, key: tuple[int, int]) -> float:
        i, j = key
        if i == j:
            return 0.0
        value = self._values[(min(i, j), max(i, j))]
        return -value if self._antisymmetric and i > j else value


class _Local:
    """A view of a global pair lookup in one tree's local indices."""

    def __init__(self, inner: _View, members: npt.NDArray[np.int64]) -> None:
        self._inner, self._members = inner, members

    def __getitem__(self, key: tuple[int, int]) -> float:
        return self._inner[int(self._members[key[0]]), int(self._members[key[1]])]


@dataclass(frozen=True)
class SparseTrees:
    """What ``sparse_trees`` recovers, in global indices: each model's tree, parent (-1 for roots),
    placement margin, direction probability and confidence, and each tree's cues."""

    labels: npt.NDArray[np.int64]
    parents: npt.NDArray[np.int64]
    placement: npt.NDArray[np.float64]
    direction_probability: npt.NDArray[np.float64]
    confidence: npt.NDArray[np.float64]
    cues: list[str]
    cue_consistency: list[dict[str, float]]


CUE_STATISTICS = {"norm": "norm_change", "kurtosis": "kurtosis_change", "skew": "skew"}


def sparse_trees(
    n_models: int,
    first: npt.NDArray[np.int64],
    second: npt.NDArray[np.int64],
    distance: npt.NDArray[np.float64],
    relative: npt.NDArray[np.float64],
    lookup: PairLookup,
    *,
    direction: Direction = "auto",
    unrelated_above: float = UNRELATED_ABOVE,
    known: Mapping[int, int] | None = None,
) -> SparseTrees:
    """The Model Trees of ``n_models`` from candidate pairs ``(first[k], second[k])`` with their
    ``distance`` and ``relative`` distance (module docstring). ``lookup`` computes the cue changes
    (``norm_change``, ``kurtosis_change``, ``skew``: from the first to the second) and ``squared``
    distances of the pairs asked. ``known``: child -> parent pairs that must be edges."""
    known = dict(known or {})
    related = relative <= unrelated_above
    rows, cols, weights = first[related], second[related], distance[related]
    if known:
        rows = np.concatenate([rows, np.array(list(known), dtype=np.int64)])
        cols = np.concatenate([cols, np.array(list(known.values()), dtype=np.int64)])
        weights = np.concatenate([weights, np.full(len(known), -1.0)])  # below every distance: kept
    graph = coo_matrix(
        # scipy reads 0 as "no edge": every weight is shifted by one constant, which changes no choice.
        (weights - min(float(weights.min(initial=0.0)), 0.0) + 1.0, (rows, cols)),
        shape=(n_models, n_models),
    ).tocsr()
    _, raw = connected_components(graph, directed=False)
    order = {label: k for k, label in enumerate(dict.fromkeys(raw.tolist()))}
    labels = np.array([order[label] for label in raw], dtype=np.int64)
    forest = minimum_spanning_tree(graph).tocoo()
    edges = [(min(i, j), max(i, j)) for i, j in zip(forest.row.tolist(), forest.col.tolist(), strict=True)]

    lookup.ensure(edges)
    lookup.ensure(_fork_pairs(n_models, edges))
    parents = np.full(n_models, -1, dtype=np.int64)
    direction_probability = np.full(n_models, np.nan)
    cues: list[str] = []
    consistencies: list[dict[str, float]] = []
    edges_by_tree: dict[int, list[tuple[int, int]]] = {}
    for i, j in edges:
        edges_by_tree.setdefault(int(labels[i]), []).append((i, j))
    for tree in range(int(labels.max()) + 1 if n_models else 0):
        members = np.flatnonzero(labels == tree)
        local = {int(m): k for k, m in enumerate(members)}
        tree_edges = [(local[i], local[j]) for i, j in edges_by_tree.get(tree, [])]
        changes = {cue: _Local(lookup[stat], members) for cue, stat in CUE_STATISTICS.items()}
        tree_known = {local[c]: local[p] for c, p in known.items() if c in local and p in local}
        hung, log_posterior, cue, consistency = orient_by_cues(
            len(members), tree_edges, changes, _Local(lookup["squared"], members), tree_known, direction
        )
        has_parent = hung >= 0
        parents[members[has_parent]] = members[hung[has_parent]]
        direction_probability[members[has_parent]] = direction_probabilities(log_posterior, hung)[has_parent]
        cues.append(cue)
        consistencies.append(consistency)
    placement = placement_margins(parents, labels, first, second, distance)
    confidence = edge_confidence(placement, direction_probability)
    for child in known:
        confidence[child] = direction_probability[child] = 1.0
    return SparseTrees(labels, parents, placement, direction_probability, confidence, cues, consistencies)


def _fork_pairs(n_models: int, edges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The pairs of neighbours of every node of degree three or more: what the angles at forks read."""
    neighbours: list[list[int]] = [[] for _ in range(n_models)]
    for i, j in edges:
        neighbours[i].append(j)
        neighbours[j].append(i)
    return [
        (x, y)
        for around in neighbours
        if len(around) >= 3
        for k, x in enumerate(around)
        for y in around[k + 1 :]
    ]


def placement_margins(
    parents: npt.NDArray[np.int64],
    labels: npt.NDArray[np.int64],
    first: npt.NDArray[np.int64],
    second: npt.NDArray[np.int64],
    distance: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """``tree.orient.placement_confidence`` on candidate pairs: ``1 - d(parent, child) / d(runner-up,
    child)``, the runner-up the nearest candidate of the child in its tree outside its own subtree (1 when
    there is none)."""
    n_models = len(parents)
    entry, leave = _euler_intervals(parents)
    by_pair: dict[tuple[int, int], float] = {}
    candidates: list[list[int]] = [[] for _ in range(n_models)]
    for i, j, d in zip(first.tolist(), second.tolist(), distance.tolist(), strict=True):
        by_pair[(i, j)] = by_pair[(j, i)] = d
        candidates[i].append(j)
        candidates[j].append(i)
    margins = np.full(n_models, np.nan)
    for child, parent in enumerate(parents.tolist()):
        if parent < 0:
            continue
        own = by_pair.get((parent, child))
        outside = [
            by_pair[(q, child)]
            for q in candidates[child]
            if q != parent
            and labels[q] == labels[child]
            and not entry[child] <= entry[q] < leave[child]  # q is not in the child's subtree
        ]
        if own is None:  # a known pair the candidates lacked: nothing to weigh it against
            margins[child] = 1.0
            continue
        runner_up = min(outside, default=np.inf)
        margins[child] = 1.0 - own / runner_up if runner_up > 0 else 0.0
    return np.clip(margins, 0.0, 1.0)


def _euler_intervals(parents: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Preorder positions: node q lies in the subtree of c exactly when ``entry[c] <= entry[q] <
    leave[c]``."""
    order = preorder(parents)
    entry = np.zeros(len(parents), dtype=np.int64)
    entry[order] = np.arange(len(order))
    size = np.ones(len(parents), dtype=np.int64)
    for node in reversed(order):
        parent = int(parents[node])
        if parent >= 0:
            size[parent] += size[node]
    return entry, entry + size
