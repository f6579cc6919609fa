"""MoTHer recovery as an estimator: cluster into trees, then one minimum directed spanning tree per tree.

    >>> recovery = TreeRecovery(n_trees=2, lam=0.3, direction="falls").fit(features)
    >>> recovery.edges_  # [Edge(parent="base", child="ft-1", distance=0.0012), ...]

Parameters live in ``__init__`` and are stored untouched; ``fit`` validates them and sets the results,
whose names end in ``_`` (scikit-learn's convention).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from ..errors import InvalidParameterError, TooFewModelsError
from ..features.featureset import FeatureSet
from .arborescence import minimum_spanning_arborescence
from .calibration import edge_confidence
from .cluster import cluster_trees, split_unrelated
from .costs import KurtosisTrend, directed_costs, tiered_distances
from .orient import (
    choose_cue,
    choose_root,
    direction_confidence,
    evidence_from_changes,
    orient_from_root,
    pairwise_changes,
    placement_confidence,
    root_scores,
    undirected_spanning_tree,
)

Distance = Literal["l2", "rank", "auto"]
DISTANCES: tuple[Distance, ...] = ("l2", "rank", "auto")
Direction = Literal["auto", "norm", "falls", "rises"]
DIRECTIONS: tuple[Direction, ...] = ("auto", "norm", "falls", "rises")

# The cues ``direction="auto"`` chooses from, per tree: (statistic, sign of its change from parent to child).
# The order is the prior that breaks ties (a chain is explained equally well by both signs of one cue):
# fine-tuning adds an update nearly orthogonal to the weights, so the norm grows; the paper's kurtosis
# falls for fine-tuning and rises for continued pre-training; a shrinking norm (strong weight decay) last.
AUTO_CUES: tuple[tuple[str, float], ...] = (
    ("norm", 1.0),
    ("kurtosis", -1.0),
    ("kurtosis", 1.0),
    ("norm", -1.0),
)
CUE_NAMES = {("norm", 1.0): "norm grows", ("norm", -1.0): "norm shrinks"}
CUE_NAMES |= {("kurtosis", -1.0): "kurtosis falls", ("kurtosis", 1.0): "kurtosis rises"}


@dataclass(frozen=True)
class Edge:
    """A recovered fine-tuning relation: ``child`` was trained from ``parent``.

    ``confidence`` in [0, 1] is the estimated probability that the edge is right, placement and direction
    (``tree/calibration.py``), computed from the smaller of two margins (``tree/orient.py``): placement,
    1 - d(parent, child) / d(nearest other model, child); and direction, tanh(half the evidence, in edges,
    that would have to flip to reverse the edge). It was fit on zoo graphs and checked on held-out ones.
    """

    parent: str
    child: str
    distance: float
    confidence: float


class TreeRecovery:
    """Recover Model Trees from pairwise weight distances and per-model statistics.

    Parameters
    ----------
    n_trees : int, "auto" or None
        Number of Model Trees. ``"auto"``: models whose relative distance chain exceeds ``unrelated_above``
        are in different trees (``tree.cluster.split_unrelated``). An int: Ward clustering into that many
        (the paper's way). ``None``: one tree.
    lam : float
        Weight λ of the kurtosis penalty, in units of the tree's mean distance (paper: 0.3).
    direction : {"auto", "norm", "falls", "rises"}
        ``"auto"`` (default): place edges by distance alone (minimum spanning tree), then orient each tree
        by the cue it is most consistent with (``AUTO_CUES``: weight norm grows, kurtosis falls, kurtosis
        rises, norm shrinks; ``tree.orient.choose_cue``) and the root that cue favours; ``lam`` is unused.
        ``"norm"``: the same with the norm-grows cue only. ``"falls"`` / ``"rises"``: the paper's method,
        the expected kurtosis trend from parent to child (falls for fine-tuning, the paper's default; rises
        for continued pre-training) as a penalty ``lam`` in the directed costs, then a minimum directed
        spanning tree.
    unrelated_above : float
        Relative distance above which two models are not related (used by ``n_trees="auto"``).
    distance : {"l2", "rank", "auto"}
        Which distance places edges (``fit`` only): ``"l2"``, the mean per-tensor RMS of ``W_i - W_j`` (full
        fine-tunes); ``"rank"``, the summed rank of ``W_i - W_j`` (LoRA fine-tunes); ``"auto"``, per pair:
        the pairs whose difference is clearly low-rank (``FeatureSet.low_rank_pairs``) are joined first, by
        rank, and every other pair is placed by l2 (``tree.costs.tiered_distances``).

    Attributes
    ----------
    model_ids_ : list of str, ``(n_models,)``
    distances_ : ndarray of shape (n_models, n_models)
    kurtosis_ : ndarray of shape (n_models,)
    labels_ : ndarray of shape (n_models,)
        Tree index of each model.
    parents_ : ndarray of shape (n_models,)
        Index of each model's parent, -1 for a root.
    confidences_ : ndarray of shape (n_models,)
        Confidence of each model's edge from its parent: the estimated probability that it is right
        (``tree.calibration``); NaN for roots, 1 for known edges.
    placement_margins_, direction_margins_ : ndarray of shape (n_models,)
        The margins the confidence is computed from (``tree.orient.placement_confidence`` and
        ``direction_confidence``); NaN for roots.
    roots_ : list of str
        One root per tree, in tree order.
    edges_ : list of Edge
    distance_ : str
        The distance used: ``"l2"``, ``"rank"``, ``"rank+l2"`` (``auto`` with both kinds of pairs), or
        ``"given"`` from ``fit_matrices``.
    low_rank_pairs_ : int or None
        With ``distance="auto"``, how many pairs were judged clearly low-rank (None otherwise).
    cues_ : list of str
        Per tree (in label order), the cue that oriented it: ``"norm grows"``, ``"kurtosis falls"``, ...
    cue_consistency_ : list of dict
        Per tree, every candidate cue's consistency (``tree.orient.consistency``; auto and norm only).
    """

    def __init__(
        self,
        *,
        n_trees: int | Literal["auto"] | None = "auto",
        lam: float = 0.3,
        direction: Direction = "auto",
        unrelated_above: float = 0.5,
        distance: Distance = "auto",
    ) -> None:
        self.n_trees = n_trees
        self.lam = lam
        self.direction = direction
        self.unrelated_above = unrelated_above
        self.distance = distance

    def fit(self, features: FeatureSet, known_parents: Mapping[str, str] | None = None) -> TreeRecovery:
        """Recover the trees of the models in ``features``.

        ``known_parents`` maps a child's id to its parent's where the relation is known for certain (a
        LoRA adapter and the base it was read on; defaults to ``features.metadata["known_parents"]``).
        Those edges are kept, in that direction.
        """
        if known_parents is None:
            known_parents = features.metadata.get("known_parents", {})
        if self.distance not in DISTANCES:
            raise InvalidParameterError(
                f"unknown distance `{self.distance}`", hint=f"use one of: {', '.join(DISTANCES)}"
            )
        low_rank = features.low_rank_pairs() if self.distance == "auto" else None
        if self.distance == "rank":
            distances, used = features.rank_distances(), "rank"
        elif low_rank is not None and low_rank.any():
            distances = tiered_distances(features.distances(), features.rank_shares(), low_rank)
            used = "rank+l2" if (~low_rank).sum() > len(low_rank) else "rank"
        else:
            distances, used = features.distances(), "l2"
        self.fit_matrices(
            distances,
            features.summed_kurtosis(),
            features.model_ids,
            log_norms=features.log_norm_pairs(),
            relative_distances=features.relative_distances(),
            known_parents=known_parents,
        )
        self.distance_ = used
        self.low_rank_pairs_: int | None = int(np.triu(low_rank).sum()) if low_rank is not None else None
        return self

    def fit_matrices(
        self,
        distances: npt.ArrayLike,
        kurtosis: npt.ArrayLike,
        model_ids: Sequence[str],
        *,
        log_norms: npt.ArrayLike | None = None,
        relative_distances: npt.ArrayLike | None = None,
        known_parents: Mapping[str, str] | None = None,
    ) -> TreeRecovery:
        """Recover from ``(n, n)`` distances and ``(n,)`` kurtosis (plus what ``norm``/``auto`` need).

        ``log_norms`` is ``(n,)`` per model, or ``(n, n)`` with ``[i, j]`` model i's log squared norm over
        the weights it shares with j (``FeatureSet.log_norm_pairs``; pruned models need it).
        """
        d = np.asarray(distances, dtype=np.float64)
        k = np.asarray(kurtosis, dtype=np.float64)
        n_models = len(model_ids)
        self._validate(d, k, n_models)
        if self.direction in ("auto", "norm") and log_norms is None:
            raise InvalidParameterError(
                f"`direction='{self.direction}'` needs the models' weight norms (`log_norms`)"
            )
        if log_norms is not None and np.shape(log_norms) not in ((n_models,), (n_models, n_models)):
            raise InvalidParameterError(f"`log_norms` {np.shape(log_norms)} do not match {n_models} models")
        if self.n_trees == "auto" and relative_distances is None:
            raise InvalidParameterError("`n_trees='auto'` needs the models' `relative_distances`")

        index = {model: i for i, model in enumerate(model_ids)}
        known = {
            index[child]: index[parent]
            for child, parent in (known_parents or {}).items()
            if child in index and parent in index
        }
        if self.n_trees == "auto":
            relative = np.array(relative_distances, dtype=np.float64)
            for child, parent in known.items():  # a known pair is one tree, however far apart
                relative[child, parent] = relative[parent, child] = 0.0
            labels = split_unrelated(relative, self.unrelated_above)
        else:
            labels = cluster_trees(d, self.n_trees or 1)
        # The change along every pair of each statistic that can orient edges, with its expected sign.
        changes = {"kurtosis": pairwise_changes(k)}
        if log_norms is not None:
            changes["norm"] = pairwise_changes(log_norms)
        if self.direction == "auto":
            cues = list(AUTO_CUES)
        elif self.direction == "norm":
            cues = [("norm", 1.0)]
        else:
            cues = [("kurtosis", DIRECTION_SIGN[self.direction])]

        parents = np.full(n_models, -1, dtype=np.int64)
        placement = np.full(n_models, np.nan)
        direction = np.full(n_models, np.nan)
        self.cues_: list[str] = []
        self.cue_consistency_: list[dict[str, float]] = []
        for tree in range(int(labels.max()) + 1):
            members = np.flatnonzero(labels == tree)
            local_d = d[np.ix_(members, members)]
            local_cues = [(changes[name][np.ix_(members, members)], sign) for name, sign in cues]
            local = {int(model): position for position, model in enumerate(members)}
            local_known = {local[c]: local[p] for c, p in known.items() if c in local and p in local}
            if self.direction in ("auto", "norm"):
                local_parents, chosen, scores = orient_by_cues(local_d, local_cues, local_known)
                self.cue_consistency_.append({CUE_NAMES[c]: v for c, v in zip(cues, scores, strict=True)})
            else:
                chosen = 0
                trend: KurtosisTrend = "rises" if self.direction == "rises" else "falls"
                costs = directed_costs(local_d, k[members], lam=self.lam, direction=trend)
                # A known edge costs less than all others together, so no optimum leaves it out (not even
                # by making its child the root); other parents of that child are ruled out.
                forced = -(np.abs(costs[np.isfinite(costs)]).sum() + 1.0)
                for child, parent in local_known.items():
                    costs[:, child] = np.inf
                    costs[parent, child] = forced
                local_parents = minimum_spanning_arborescence(costs)
            self.cues_.append(CUE_NAMES[cues[chosen]])
            local_placement, local_direction = edge_margins(local_d, *local_cues[chosen], local_parents)
            for local_child, local_parent in enumerate(local_parents):
                if local_parent >= 0:
                    parents[members[local_child]] = members[local_parent]
                    placement[members[local_child]] = local_placement[local_child]
                    direction[members[local_child]] = local_direction[local_child]
        confidences = edge_confidence(placement, direction)
        confidences[list(known)] = 1.0  # structural: an adapter and the base it was read on

        self.model_ids_ = list(model_ids)
        self.distance_ = "given"
        self.low_rank_pairs_ = None
        self.distances_ = d
        self.kurtosis_ = k
        self.labels_ = labels
        self.parents_ = parents
        self.placement_margins_ = placement
        self.direction_margins_ = direction
        self.confidences_ = confidences
        self.roots_ = [self.model_ids_[i] for i in np.flatnonzero(parents < 0)]
        self.edges_ = [
            Edge(self.model_ids_[p], self.model_ids_[c], float(d[p, c]), float(confidences[c]))
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
        if not (self.n_trees is None or self.n_trees == "auto" or isinstance(self.n_trees, int)):
            raise InvalidParameterError(f"`n_trees` must be an integer, 'auto' or None, got {self.n_trees!r}")


# Sign of the statistic's expected change from parent to child.
DIRECTION_SIGN = {"falls": -1.0, "rises": 1.0, "norm": 1.0}


def orient_by_statistic(
    distances: npt.NDArray[np.float64],
    changes: npt.NDArray[np.float64],
    sign: float,
    known_parents: Mapping[int, int] | None = None,
) -> npt.NDArray[np.int64]:
    """Parents from the minimum spanning tree of ``distances``, hung from the root the statistic favours.

    ``changes`` are the statistic's ``(n, n)`` changes between models (``tree.orient.pairwise_changes``).

    Known ``child -> parent`` pairs are forced into the tree (distance zero) and their direction outweighs
    all the evidence of the other edges together.
    """
    return orient_by_cues(distances, [(changes, sign)], known_parents)[0]


def orient_by_cues(
    distances: npt.NDArray[np.float64],
    cues: Sequence[tuple[npt.NDArray[np.float64], float]],
    known_parents: Mapping[int, int] | None = None,
) -> tuple[npt.NDArray[np.int64], int, list[float]]:
    """``orient_by_statistic`` with the cue the tree is most consistent with (``tree.orient.choose_cue``).

    Returns the parents, the index of the chosen ``(changes, sign)`` cue and every cue's consistency.
    """
    n_models = len(distances)
    d = distances.copy()
    for child, parent in (known_parents or {}).items():
        d[child, parent] = d[parent, child] = 0.0
    edges = undirected_spanning_tree(d)
    chosen, scores = choose_cue(n_models, edges, cues)
    changes, sign = cues[chosen]
    evidence = evidence_from_changes(changes, edges, sign)
    for child, parent in (known_parents or {}).items():
        edge = (min(child, parent), max(child, parent))
        evidence[edge] = float(n_models) if edge == (parent, child) else -float(n_models)
    root, _ = choose_root(root_scores(n_models, edges, evidence))
    return orient_from_root(n_models, edges, root), chosen, scores


def edge_margins(
    distances: npt.NDArray[np.float64],
    changes: npt.NDArray[np.float64],
    sign: float,
    parents: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Each node's placement and direction margins (``tree.orient``), NaN for roots."""
    edges = [(min(int(p), c), max(int(p), c)) for c, p in enumerate(parents) if p >= 0]
    scores = root_scores(len(parents), edges, evidence_from_changes(changes, edges, sign))
    return placement_confidence(distances, parents), direction_confidence(scores, parents)
