"""MoTHer recovery as an estimator: cluster into trees, then one minimum directed spanning tree per tree.

    >>> recovery = TreeRecovery(n_trees=2, lam=0.3, direction="falls").fit(features)
    >>> recovery.edges_  # [Edge(parent="base", child="ft-1", distance=0.0012), ...]

Parameters live in ``__init__`` and are stored untouched; ``fit`` validates them and sets the results,
whose names end in ``_`` (scikit-learn's convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from ..errors import InvalidParameterError, TooFewModelsError
from ..features.featureset import FeatureSet
from .arborescence import minimum_spanning_arborescence
from .cluster import cluster_trees
from .costs import KurtosisTrend, directed_costs
from .orient import choose_root, edge_evidence, orient_from_root, root_scores, undirected_spanning_tree

Direction = Literal["falls", "rises", "norm"]
DIRECTIONS: tuple[Direction, ...] = ("falls", "rises", "norm")


@dataclass(frozen=True)
class Edge:
    """A recovered fine-tuning relation: ``child`` was trained from ``parent``."""

    parent: str
    child: str
    distance: float


class TreeRecovery:
    """Recover Model Trees from pairwise weight distances and per-model kurtosis.

    Parameters
    ----------
    n_trees : int or None
        Number of Model Trees in the collection; ``None`` means one.
    lam : float
        Weight λ of the direction penalty, in units of the tree's mean distance (paper: 0.3).
    direction : {"falls", "rises", "norm"}
        ``"falls"`` / ``"rises"``: the paper's method, the expected kurtosis trend from parent to child
        (falls for fine-tuning, the paper's default; rises for continued pre-training) as a penalty ``lam``
        in the directed costs, then a minimum directed spanning tree. ``"norm"``: place edges by distance
        alone (minimum spanning tree), then orient each tree by choosing the root that makes the weight
        norm grow along the most edges (see ``tree/orient.py``); ``lam`` is unused.

    Attributes
    ----------
    model_ids_ : list of str, ``(n_models,)``
    distances_ : ndarray of shape (n_models, n_models)
    kurtosis_ : ndarray of shape (n_models,)
    labels_ : ndarray of shape (n_models,)
        Tree index of each model.
    parents_ : ndarray of shape (n_models,)
        Index of each model's parent, -1 for a root.
    roots_ : list of str
        One root per tree, in tree order.
    edges_ : list of Edge
    """

    def __init__(
        self, *, n_trees: int | None = None, lam: float = 0.3, direction: Direction = "falls"
    ) -> None:
        self.n_trees = n_trees
        self.lam = lam
        self.direction = direction

    def fit(self, features: FeatureSet) -> TreeRecovery:
        """Recover the trees of the models in ``features``."""
        return self.fit_matrices(
            features.distances(),
            features.summed_kurtosis(),
            features.model_ids,
            log_norms=features.log_norms(),
        )

    def fit_matrices(
        self,
        distances: npt.ArrayLike,
        kurtosis: npt.ArrayLike,
        model_ids: Sequence[str],
        *,
        log_norms: npt.ArrayLike | None = None,
    ) -> TreeRecovery:
        """Recover from a ``(n, n)`` distance matrix and ``(n,)`` kurtosis (and log weight norms) directly."""
        d = np.asarray(distances, dtype=np.float64)
        k = np.asarray(kurtosis, dtype=np.float64)
        if self.direction == "norm" and log_norms is None:
            raise InvalidParameterError("`direction='norm'` needs the models' weight norms (`log_norms`)")
        n_models = len(model_ids)
        self._validate(d, k, n_models)

        labels = cluster_trees(d, self.n_trees or 1)
        parents = np.full(n_models, -1, dtype=np.int64)
        for tree in range(int(labels.max()) + 1 if n_models else 0):
            members = np.flatnonzero(labels == tree)
            if self.direction == "norm":
                local_parents = _orient_by_norm(d[np.ix_(members, members)], np.asarray(log_norms)[members])
            else:
                trend: KurtosisTrend = "rises" if self.direction == "rises" else "falls"
                costs = directed_costs(d[np.ix_(members, members)], k[members], lam=self.lam, direction=trend)
                local_parents = minimum_spanning_arborescence(costs)
            for local_child, local_parent in enumerate(local_parents):
                if local_parent >= 0:
                    parents[members[local_child]] = members[local_parent]

        self.model_ids_ = list(model_ids)
        self.distances_ = d
        self.kurtosis_ = k
        self.labels_ = labels
        self.parents_ = parents
        self.roots_ = [self.model_ids_[i] for i in np.flatnonzero(parents < 0)]
        self.edges_ = [
            Edge(parent=self.model_ids_[p], child=self.model_ids_[c], distance=float(d[p, c]))
            for c, p in enumerate(parents)
            if p >= 0
        ]
        return self

    def _validate(self, d: npt.NDArray[np.float64], k: npt.NDArray[np.float64], n_models: int) -> None:
        if n_models < 2:
            raise TooFewModelsError(f"found {n_models} model{'s' if n_models != 1 else ''}; need at least 2")
        if d.shape != (n_models, n_models) or k.shape != (n_models,):
            raise InvalidParameterError(
                f"distances {d.shape} and kurtosis {k.shape} do not match {n_models} models"
            )
        if not np.isfinite(d).all():
            raise InvalidParameterError("the distance matrix holds NaN or infinite values")
        if self.direction not in DIRECTIONS:
            raise InvalidParameterError(
                f"unknown direction `{self.direction}`", hint=f"use one of: {', '.join(DIRECTIONS)}"
            )
        if self.lam < 0:
            raise InvalidParameterError(f"`lam` must be >= 0, got {self.lam}")


def _orient_by_norm(
    distances: npt.NDArray[np.float64], log_norms: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    n_models = len(log_norms)
    edges = undirected_spanning_tree(distances)
    root, _ = choose_root(root_scores(n_models, edges, edge_evidence(log_norms, edges, sign=1.0)))
    return orient_from_root(n_models, edges, root)
