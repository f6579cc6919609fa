"""Split a Model Graph into Model Trees: hierarchical clustering on weight distances (as the paper: Ward)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import squareform

from .._choices import UNRELATED_ABOVE as UNRELATED_ABOVE
from ..errors import InvalidParameterError


def tree_linkage(distances: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Ward linkage matrix (scipy format) of a symmetric ``(n, n)`` distance matrix."""
    d = np.asarray(distances, dtype=np.float64)
    d = (d + d.T) / 2.0
    np.fill_diagonal(d, 0.0)
    return np.asarray(linkage(squareform(d, checks=False), method="ward"), dtype=np.float64)


def cluster_trees(distances: npt.ArrayLike, n_trees: int) -> npt.NDArray[np.int64]:
    """``(n,)`` tree index of each model, 0-based, numbered in order of first appearance."""
    d = np.asarray(distances, dtype=np.float64)
    n_models = d.shape[0]
    if not 1 <= n_trees <= max(n_models, 1):
        raise InvalidParameterError(
            f"cannot split {n_models} models into {n_trees} trees",
            hint=f"`--trees` must be between 1 and the number of models ({n_models})",
        )
    if n_trees == 1 or n_models < 2:
        return np.zeros(n_models, dtype=np.int64)
    raw = fcluster(tree_linkage(d), t=n_trees, criterion="maxclust")
    order = {label: k for k, label in enumerate(dict.fromkeys(raw.tolist()))}
    return np.array([order[label] for label in raw], dtype=np.int64)


def split_counts(linkages: list[npt.NDArray[np.float64]], scales: list[float], n_trees: int) -> list[int]:
    """How many trees each of several independent groups gets, ``n_trees`` in all.

    Every group is at least one tree. Each further tree goes to the group whose next merge (undone from the
    top of its dendrogram) is highest relative to the group's distance scale, since heights of different
    architectures are not comparable in absolute terms.
    """
    n_groups = len(linkages)
    capacity = [len(z) + 1 for z in linkages]
    if not n_groups <= n_trees <= sum(capacity):
        raise InvalidParameterError(
            f"cannot split {sum(capacity)} models in {n_groups} architecture groups into {n_trees} trees",
            hint=f"models of different architectures are always separate trees: use `--trees` between "
            f"{n_groups} and {sum(capacity)}",
        )
    counts = [1] * n_groups
    for _ in range(n_trees - n_groups):
        best, best_height = -1, -np.inf
        for g, z in enumerate(linkages):
            if counts[g] >= capacity[g]:
                continue
            # The k-th split of a group undoes its k-th highest merge.
            height = z[-counts[g], 2] / scales[g] if scales[g] > 0 else np.inf
            if height > best_height:
                best, best_height = g, height
        counts[best] += 1
    return counts


def split_unrelated(
    relative_distances: npt.ArrayLike, threshold: float = UNRELATED_ABOVE
) -> npt.NDArray[np.int64]:
    """Tree index of each model when trees are not counted in advance (``--trees auto``).

    Two models belong to one tree when a chain of models links them with every step's relative distance
    (RMS of ``W_i - W_j`` over the RMS of the weights, its lower quartile over tensors:
    ``features.reductions.relatedness``) at most ``threshold``: single linkage, cut at a
    scale-free height (``UNRELATED_ABOVE`` by default, between unrelated weights and fine-tunes).
    """
    r = np.asarray(relative_distances, dtype=np.float64)
    linked = (r <= threshold) | np.eye(len(r), dtype=bool)
    _, raw = connected_components(linked, directed=False)
    order = {label: k for k, label in enumerate(dict.fromkeys(raw.tolist()))}
    return np.array([order[label] for label in raw], dtype=np.int64)
