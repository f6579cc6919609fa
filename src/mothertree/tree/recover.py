"""MoTHer recovery as an estimator: split a collection into Model Trees, place their edges, orient them.

    >>> recovery = TreeRecovery(n_trees=2, direction="falls").fit(features)
    >>> recovery.edges_  # [Edge(parent="base", child="ft-1", distance=0.0012, confidence=0.99), ...]

``fit`` takes these steps, each a function of small matrices:

1. the distance that places edges: l2, rank, or per pair (``distance="auto"``, ``features/low_rank.py``);
2. trees: split where models are unrelated (``n_trees="auto"``, ``tree.cluster.split_unrelated``) or
   Ward clustering into K trees, as the paper;
3. each tree's edges and their direction. ``direction="auto"`` (the default) and ``"norm"``: the minimum
   spanning tree of the distances, hung from the most probable root over every root and cue sign
   (``tree.direction``). ``"falls"`` / ``"rises"``: the paper's method, distance plus a kurtosis
   penalty (``tree.costs``) and a minimum directed spanning tree (``tree.arborescence``);
4. each edge's placement margin and direction probability, and its confidence (``tree.calibration``).

Parameters live in ``__init__`` and are stored untouched; ``fit`` validates them and sets the results,
whose names end in ``_`` (scikit-learn's convention).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .._choices import DIRECTIONS, DISTANCES, Direction, Distance, TreeCount
from ..errors import InvalidParameterError, NotFittedError, TooFewModelsError
from ..features.featureset import FeatureSet
from ..features.low_rank import LowRankRule, PlacingDistances
from .arborescence import minimum_spanning_arborescence
from .calibration import edge_confidence
from .cluster import UNRELATED_ABOVE, cluster_trees, split_unrelated
from .costs import DEFAULT_LAM, KurtosisTrend, directed_costs
from .direction import (
    DETERMINED_ABOVE,
    clock_edges,
    clock_scores,
    direction_probabilities,
    fork_scores,
    posterior_parents,
    root_log_posterior,
)
from .orient import (
    PairValues,
    evidence_from_changes,
    pairwise_changes,
    placement_confidence,
    undirected_spanning_tree,
)
from .orient import consistency as consistency_of

# A cue: a per-model statistic and the sign of its change from parent to child.
Cue = tuple[str, float]
# The cues ``direction="auto"`` weighs, per tree, with both signs of each (``tree.direction``): fine-tuning
# adds an update nearly orthogonal to the weights, so the norm grows, unless weight decay shrinks it; the
# paper's kurtosis falls for fine-tuning and may rise for continued pre-training.
AUTO_CUES: tuple[Cue, ...] = (
    ("norm", 1.0),
    ("kurtosis", -1.0),
    ("kurtosis", 1.0),
    ("norm", -1.0),
    ("skew", 1.0),
    ("skew", -1.0),
)
CUE_NAMES: dict[Cue, str] = {
    ("norm", 1.0): "norm grows",
    ("norm", -1.0): "norm shrinks",
    ("kurtosis", -1.0): "kurtosis falls",
    ("kurtosis", 1.0): "kurtosis rises",
    ("skew", 1.0): "norm changes skew right",
    ("skew", -1.0): "norm changes skew left",
}
# Key of the weight-decay clock among a tree's pair statistics (``FeatureSet.clock_evidence``): evidence of
# a known sign, added to the root posterior beside the cues (``tree.direction.clock_scores``).
CLOCK = "clock"
CUES_OF: dict[Direction, tuple[Cue, ...]] = {
    "auto": AUTO_CUES,
    "norm": (("norm", 1.0),),
    "falls": (("kurtosis", -1.0),),
    "rises": (("kurtosis", 1.0),),
}

_PARAMS = ("n_trees", "lam", "direction", "unrelated_above", "distance")


@dataclass(frozen=True)
class Edge:
    """A recovered fine-tuning relation: ``child`` was trained from ``parent``.

    ``confidence`` in [0, 1] is the estimated probability that the edge is right, placement and direction
    (``tree/calibration.py``): the probability that the parent is placed right, from the placement margin
    1 - d(parent, child) / d(nearest other model, child), times ``direction_probability``, the posterior
    probability that the edge points the right way (``tree/direction.py``). Below ``DETERMINED_ABOVE``
    (0.75) the direction is *undetermined*: the two models are related, but which came first is a coin
    flip or little better. ``known`` edges were not inferred: a PEFT adapter read on its base
    (confidence 1). ``placement_margin`` is that margin itself (None when not recorded). ``relation`` is
    what the child is of its parent, in Hugging Face's words (``"finetune"``, ``"adapter"``,
    ``"quantized"``, ``"merge"``), when the pipeline knows it (None here: a tree of features does not know
    what its files were). A merge has an edge from each parent, each with its ``weight`` in the merge.
    """

    parent: str
    child: str
    distance: float
    confidence: float
    known: bool = False
    direction_probability: float = 1.0
    placement_margin: float | None = None
    relation: str | None = None
    weight: float | None = None

    @property
    def direction_determined(self) -> bool:
        """Whether the direction is more than a coin flip with a hint (``DETERMINED_ABOVE``)."""
        return self.known or self.direction_probability > DETERMINED_ABOVE


@dataclass(frozen=True)
class _TreeEdges:
    """One tree's recovered parents and margins (local indices), and the cue that oriented it."""

    parents: npt.NDArray[np.int64]
    placement: npt.NDArray[np.float64]
    direction_probability: npt.NDArray[np.float64]
    cue: str
    cue_consistency: dict[str, float] | None


class TreeRecovery:
    """Recover Model Trees from pairwise weight distances and per-model statistics.

    Parameters
    ----------
    n_trees : int, "auto" or None
        Number of Model Trees. ``"auto"``: models whose relative distance chain exceeds ``unrelated_above``
        are in different trees (``tree.cluster.split_unrelated``). An int: Ward clustering into that many
        (the paper's way). ``None``: one tree.
    lam : float
        Weight λ of the kurtosis penalty, in units of the tree's mean distance (paper: 0.3); used by
        ``direction="falls"`` and ``"rises"`` only.
    direction : {"auto", "norm", "falls", "rises"}
        ``"auto"`` (default): place edges by distance alone (minimum spanning tree), then hang each tree
        from its most probable root, over every root and both signs of the weight-norm and kurtosis cues,
        with the skew of the per-tensor norm changes (sign known) and the angles at forks
        (``tree.direction``). ``"norm"``: the same with the norm-grows cue only.
        ``"falls"`` / ``"rises"``: the paper's method, the expected
        kurtosis trend from parent to child (falls for fine-tuning, the paper's default; rises for
        continued pre-training) as a penalty ``lam`` in the directed costs, then a minimum directed
        spanning tree.
    unrelated_above : float
        Relative distance above which two models are not related (used by ``n_trees="auto"``).
    distance : {"l2", "rank", "auto"}
        Which distance places edges (``fit`` only): ``"l2"``, the per-tensor RMS of ``W_i - W_j`` averaged
        with weights sqrt(numel) (full fine-tunes); ``"rank"``, the summed rank of ``W_i - W_j`` (LoRA
        fine-tunes); ``"auto"``, per pair: pairs whose difference is clearly low-rank are joined first, by
        rank, every other pair by l2 (``features.low_rank.LowRankRule``).

    Attributes
    ----------
    model_ids_ : list of str, ``(n_models,)``
    distances_ : ndarray of shape (n_models, n_models)
        The distances that placed the edges.
    kurtosis_ : ndarray of shape (n_models,)
    labels_ : ndarray of shape (n_models,)
        Tree index of each model.
    parents_ : ndarray of shape (n_models,)
        Index of each model's parent, -1 for a root.
    confidences_ : ndarray of shape (n_models,)
        Confidence of each model's edge from its parent: the estimated probability that it is right
        (``tree.calibration``); NaN for roots, 1 for known edges.
    placement_margins_ : ndarray of shape (n_models,)
        How much nearer each model's parent is than the runner-up (``tree.orient.placement_confidence``);
        NaN for roots.
    direction_probabilities_ : ndarray of shape (n_models,)
        The posterior probability that each edge points the right way, over every root and cue sign
        (``tree.direction``); NaN for roots. Below ``DETERMINED_ABOVE`` an edge's direction is
        undetermined: its cues and the shape of the tree cannot tell which end came first.
    roots_ : list of str
        One root per tree, in tree order.
    edges_ : list of Edge
    distance_ : str
        The distance used: ``"l2"``, ``"rank"``, ``"rank+l2"`` (``auto`` with both kinds of pairs), or
        ``"given"`` from ``fit_matrices``.
    low_rank_pairs_ : int or None
        With ``distance="auto"``, how many pairs were judged clearly low-rank (None otherwise).
    cues_ : list of str
        Per tree (in label order), the cues that oriented it, with the signs they took at its root:
        ``"norm grows + kurtosis falls"``, ``"kurtosis rises"``, ... (a cue that more likely tells nothing
        about the tree is left out; ``"no cue (the shape of the tree alone)"`` when none tells).
    cue_consistency_ : list of dict
        Per tree, every candidate cue's consistency (``tree.orient.consistency``; auto and norm only).
    """

    def __init__(
        self,
        *,
        n_trees: TreeCount = "auto",
        lam: float = DEFAULT_LAM,
        direction: Direction = "auto",
        unrelated_above: float = UNRELATED_ABOVE,
        distance: Distance = "auto",
    ) -> None:
        self.n_trees = n_trees
        self.lam = lam
        self.direction = direction
        self.unrelated_above = unrelated_above
        self.distance = distance

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The parameters given to ``__init__`` (scikit-learn's ``get_params``; ``deep`` has no effect)."""
        return {name: getattr(self, name) for name in _PARAMS}

    def set_params(self, **params: Any) -> TreeRecovery:
        unknown = sorted(set(params) - set(_PARAMS))
        if unknown:
            raise InvalidParameterError(
                f"TreeRecovery has no parameter {', '.join(map(repr, unknown))}",
                hint=f"parameters: {', '.join(_PARAMS)}",
            )
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.get_params().items() if v != _DEFAULTS[k]}
        return f"TreeRecovery({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: a result read before fit.
        if name.endswith("_") and not name.startswith("_"):
            raise NotFittedError(f"this TreeRecovery is not fitted: `{name}` is set by `fit`")
        raise AttributeError(f"'TreeRecovery' object has no attribute {name!r}")

    def fit(self, features: FeatureSet) -> TreeRecovery:
        """Recover the trees of the models in ``features``.

        ``features.known_parents`` (an adapter and the base it was read on) are kept, in that direction.
        """
        self._validate_params()
        placing = self._placing_distances(features)
        return self._fit(
            placing.matrix,
            features.summed_kurtosis(),
            features.model_ids,
            log_norms=features.log_norm_pairs(),
            kurtosis_pairs=features.kurtosis_pairs(),
            norm_change_skew=features.norm_change_skew(),
            clock_evidence=features.clock_evidence(),
            relative_distances=features.relative_distances(),
            squared_distances=features.squared_distances(),
            known_parents=features.known_parents,
            distance_used=placing.kind,
            low_rank_pairs=placing.low_rank_pairs if self.distance == "auto" else None,
        )

    def fit_matrices(
        self,
        distances: npt.ArrayLike,
        kurtosis: npt.ArrayLike,
        model_ids: Sequence[str],
        *,
        log_norms: npt.ArrayLike | None = None,
        relative_distances: npt.ArrayLike | None = None,
        squared_distances: npt.ArrayLike | None = None,
        kurtosis_pairs: npt.ArrayLike | None = None,
        norm_change_skew: npt.ArrayLike | None = None,
        clock_evidence: npt.ArrayLike | None = None,
        known_parents: Mapping[str, str] | None = None,
    ) -> TreeRecovery:
        """Recover from ``(n, n)`` distances and ``(n,)`` kurtosis (plus what ``norm``/``auto`` need).

        ``log_norms`` is ``(n,)`` per model, or ``(n, n)`` with ``[i, j]`` model i's log squared norm over
        the weights it shares with j (``FeatureSet.log_norm_pairs``; pruned models need it).
        ``squared_distances`` (``FeatureSet.squared_distances``) lets the angles at forks help orient
        (``tree.direction.fork_scores``); without them only the cues do. ``kurtosis_pairs``
        (``FeatureSet.kurtosis_pairs``, pairs stored at two precisions compared at the coarser) replaces
        ``kurtosis`` as the direction cue. ``norm_change_skew`` (``FeatureSet.norm_change_skew``) adds the
        skew cue; ``clock_evidence`` (``FeatureSet.clock_evidence``) the weight-decay clock
        (``direction="auto"``).
        ``known_parents`` maps a child's id to its parent's where the relation is known; those edges are
        kept, in that direction.
        """
        self._validate_params()
        return self._fit(
            distances,
            kurtosis,
            model_ids,
            log_norms=log_norms,
            relative_distances=relative_distances,
            squared_distances=squared_distances,
            kurtosis_pairs=kurtosis_pairs,
            norm_change_skew=norm_change_skew,
            clock_evidence=clock_evidence,
            known_parents=known_parents or {},
            distance_used="given",
            low_rank_pairs=None,
        )

    # --- the steps --------------------------------------------------------------------------------------

    def _placing_distances(self, features: FeatureSet) -> PlacingDistances:
        if self.distance == "rank":
            return PlacingDistances(features.rank_distances(), "rank", 0)
        if self.distance == "auto":
            return LowRankRule().distances(features)
        return PlacingDistances(features.distances(), "l2", 0)

    def _fit(
        self,
        distances: npt.ArrayLike,
        kurtosis: npt.ArrayLike,
        model_ids: Sequence[str],
        *,
        log_norms: npt.ArrayLike | None,
        relative_distances: npt.ArrayLike | None,
        squared_distances: npt.ArrayLike | None,
        known_parents: Mapping[str, str],
        distance_used: str,
        low_rank_pairs: int | None,
        kurtosis_pairs: npt.ArrayLike | None = None,
        norm_change_skew: npt.ArrayLike | None = None,
        clock_evidence: npt.ArrayLike | None = None,
    ) -> TreeRecovery:
        d = np.asarray(distances, dtype=np.float64)
        k = np.asarray(kurtosis, dtype=np.float64)
        self._validate_data(d, k, len(model_ids), log_norms, relative_distances)
        index = {model: i for i, model in enumerate(model_ids)}
        known = {
            index[child]: index[parent]
            for child, parent in known_parents.items()
            if child in index and parent in index
        }
        labels = self._split_trees(d, relative_distances, known)
        changes = {"kurtosis": pairwise_changes(k if kurtosis_pairs is None else kurtosis_pairs)}
        if log_norms is not None:
            changes["norm"] = pairwise_changes(log_norms)
        if norm_change_skew is not None:
            changes["skew"] = np.asarray(norm_change_skew, dtype=np.float64)
        if clock_evidence is not None:
            changes[CLOCK] = np.asarray(clock_evidence, dtype=np.float64)

        squared = None if squared_distances is None else np.asarray(squared_distances, dtype=np.float64)
        parents, placement, direction = self._orient_trees(labels, d, k, changes, squared, known)
        confidences = edge_confidence(placement, direction)
        confidences[list(known)] = 1.0  # an adapter and the base it was read on: known, not inferred
        direction[list(known)] = 1.0

        self.model_ids_ = list(model_ids)
        self.distance_ = distance_used
        self.low_rank_pairs_ = low_rank_pairs
        self.distances_ = d
        self.kurtosis_ = k
        self.labels_ = labels
        self.parents_ = parents
        self.placement_margins_ = placement
        self.direction_probabilities_ = direction
        self.confidences_ = confidences
        self.roots_ = [self.model_ids_[i] for i in np.flatnonzero(parents < 0)]
        self.edges_ = [
            Edge(
                self.model_ids_[p],
                self.model_ids_[c],
                float(d[p, c]),
                float(confidences[c]),
                c in known,
                float(direction[c]),
                float(placement[c]),
            )
            for c, p in enumerate(parents)
            if p >= 0
        ]
        return self

    def _orient_trees(
        self,
        labels: npt.NDArray[np.int64],
        d: npt.NDArray[np.float64],
        k: npt.NDArray[np.float64],
        changes: Mapping[str, npt.NDArray[np.float64]],
        squared: npt.NDArray[np.float64] | None,
        known: Mapping[int, int],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Step 3 and 4 for every tree: each model's parent (-1 for roots) and its two margins.

        Also sets ``cues_`` and ``cue_consistency_``.
        """
        parents = np.full(len(labels), -1, dtype=np.int64)
        placement = np.full(len(labels), np.nan)
        direction = np.full(len(labels), np.nan)
        self.cues_: list[str] = []
        self.cue_consistency_: list[dict[str, float]] = []
        for tree in range(int(labels.max()) + 1):
            members = np.flatnonzero(labels == tree)
            local = {int(model): position for position, model in enumerate(members)}
            tree_edges = self._tree_edges(
                d[np.ix_(members, members)],
                k[members],
                {name: change[np.ix_(members, members)] for name, change in changes.items()},
                None if squared is None else squared[np.ix_(members, members)],
                {local[c]: local[p] for c, p in known.items() if c in local and p in local},
            )
            has_parent = tree_edges.parents >= 0
            parents[members[has_parent]] = members[tree_edges.parents[has_parent]]
            placement[members[has_parent]] = tree_edges.placement[has_parent]
            direction[members[has_parent]] = tree_edges.direction_probability[has_parent]
            self.cues_.append(tree_edges.cue)
            if tree_edges.cue_consistency is not None:
                self.cue_consistency_.append(tree_edges.cue_consistency)
        return parents, placement, direction

    def _split_trees(
        self,
        distances: npt.NDArray[np.float64],
        relative_distances: npt.ArrayLike | None,
        known: Mapping[int, int],
    ) -> npt.NDArray[np.int64]:
        """Step 2: the tree index of each model."""
        if self.n_trees != "auto":
            return cluster_trees(distances, self.n_trees or 1)
        relative = np.array(relative_distances, dtype=np.float64)
        for child, parent in known.items():  # a known pair is one tree, however far apart
            relative[child, parent] = relative[parent, child] = 0.0
        return split_unrelated(relative, self.unrelated_above)

    def _tree_edges(
        self,
        distances: npt.NDArray[np.float64],
        kurtosis: npt.NDArray[np.float64],
        changes: Mapping[str, npt.NDArray[np.float64]],
        squared: npt.NDArray[np.float64] | None,
        known: Mapping[int, int],
    ) -> _TreeEdges:
        """Step 3 and 4 on one tree (local indices): parents, margins, and the cue that oriented it."""
        cues = CUES_OF[self.direction]
        consistency: dict[str, float] | None = None
        if self.direction in ("auto", "norm"):
            edges = undirected_spanning_tree(_with_known_joined(distances, known))
            parents, log_posterior, cue, consistency = orient_by_cues(
                len(distances), edges, changes, squared, known, self.direction
            )
        else:
            trend: KurtosisTrend = "rises" if self.direction == "rises" else "falls"
            parents = paper_arborescence(distances, kurtosis, self.lam, trend, known)
            cue = CUE_NAMES[cues[0]]
            edges = [(min(int(p), c), max(int(p), c)) for c, p in enumerate(parents) if p >= 0]
            name, sign = cues[0]
            log_posterior, _ = root_log_posterior(
                len(distances), edges, {name: changes[name]}, signs={name: {sign: 1.0}}, known_parents=known
            )
        placement = placement_confidence(distances, parents)
        direction = direction_probabilities(log_posterior, parents)
        return _TreeEdges(parents, placement, direction, cue, consistency)

    # --- validation -------------------------------------------------------------------------------------

    def _validate_params(self) -> None:
        if self.direction not in DIRECTIONS:
            raise InvalidParameterError(
                f"unknown direction `{self.direction}`", hint=f"use one of: {', '.join(DIRECTIONS)}"
            )
        if self.distance not in DISTANCES:
            raise InvalidParameterError(
                f"unknown distance `{self.distance}`", hint=f"use one of: {', '.join(DISTANCES)}"
            )
        if not isinstance(self.lam, numbers.Real) or not self.lam >= 0:
            raise InvalidParameterError(f"`lam` must be a number >= 0, got {self.lam!r}")
        if not (self.n_trees is None or self.n_trees == "auto" or isinstance(self.n_trees, int)):
            raise InvalidParameterError(f"`n_trees` must be an integer, 'auto' or None, got {self.n_trees!r}")
        if not isinstance(self.unrelated_above, numbers.Real) or not self.unrelated_above > 0:
            raise InvalidParameterError(
                f"`unrelated_above` must be a relative distance > 0, got {self.unrelated_above!r}",
                hint=f"unrelated weights sit at about 1.41; the default is {UNRELATED_ABOVE}",
            )

    def _validate_data(
        self,
        d: npt.NDArray[np.float64],
        k: npt.NDArray[np.float64],
        n_models: int,
        log_norms: npt.ArrayLike | None,
        relative_distances: npt.ArrayLike | None,
    ) -> None:
        if n_models < 2:
            raise TooFewModelsError(f"found {n_models} model{'s' if n_models != 1 else ''}; need at least 2")
        if d.shape != (n_models, n_models) or k.shape != (n_models,):
            raise InvalidParameterError(
                f"distances {d.shape} and kurtosis {k.shape} do not match {n_models} models"
            )
        if not np.isfinite(d).all():
            raise InvalidParameterError("the distance matrix holds NaN or infinite values")
        if self.direction in ("auto", "norm") and log_norms is None:
            raise InvalidParameterError(
                f"`direction='{self.direction}'` needs the models' weight norms (`log_norms`)"
            )
        if log_norms is not None and np.shape(log_norms) not in ((n_models,), (n_models, n_models)):
            raise InvalidParameterError(f"`log_norms` {np.shape(log_norms)} do not match {n_models} models")
        if self.n_trees == "auto" and relative_distances is None:
            raise InvalidParameterError("`n_trees='auto'` needs the models' `relative_distances`")


_DEFAULTS = dict(zip(_PARAMS, ("auto", DEFAULT_LAM, "auto", UNRELATED_ABOVE, "auto"), strict=True))


def orient_by_cues(
    n_nodes: int,
    edges: Sequence[tuple[int, int]],
    changes: Mapping[str, PairValues],
    squared: PairValues | None,
    known: Mapping[int, int],
    direction: Direction,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], str, dict[str, float]]:
    """Step 3 of ``direction="auto"`` and ``"norm"`` on one tree's undirected ``edges``: each node's
    parent, the log posterior of each root, the cues that told (in words), and each cue's consistency.

    ``changes`` (per cue) and ``squared`` are read at the tree's edges and, for the angles at forks, at
    pairs of a node's neighbours only: arrays, or lookups of those pairs (``tree.sparse``).
    """
    cues = CUES_OF[direction]
    edge_list = list(edges)
    used = {name: changes[name] for name in dict.fromkeys(name for name, _ in cues) if name in changes}
    priors = None if direction == "auto" else {"norm": {1.0: 1.0}}
    # Per-root evidence beside the cues: the angles at forks, and the clock where it reads an edge.
    beside = np.zeros(n_nodes) if squared is None else fork_scores(n_nodes, edge_list, squared)
    clocked = clock_edges(edge_list, changes[CLOCK]) if direction == "auto" and CLOCK in changes else 0
    if clocked:
        beside = beside + clock_scores(n_nodes, edge_list, changes[CLOCK])
    log_posterior, signs = root_log_posterior(
        n_nodes, edge_list, used, signs=priors, known_parents=known, fork=beside
    )
    parents = posterior_parents(n_nodes, edge_list, log_posterior)
    measured = [cue for cue in cues if cue[0] in changes]
    scores = [
        consistency_of(n_nodes, edge_list, evidence_from_changes(changes[name], edge_list, sign))
        for name, sign in measured
    ]
    consistency = {CUE_NAMES[c]: v for c, v in zip(measured, scores, strict=True)}
    telling = [CUE_NAMES[(name, sign)] for name, sign in signs.items() if sign is not None]
    if clocked:
        telling.append(f"weight-decay clock ({clocked} of {len(edge_list)} edges)")
    return parents, log_posterior, " + ".join(telling) or "no cue (the shape of the tree alone)", consistency


def paper_arborescence(
    distances: npt.NDArray[np.float64],
    kurtosis: npt.NDArray[np.float64],
    lam: float,
    trend: KurtosisTrend,
    known_parents: Mapping[int, int] | None = None,
) -> npt.NDArray[np.int64]:
    """The paper's tree: the minimum directed spanning tree of ``D + lam * mean(D) * T`` (``tree.costs``).

    A known edge costs less than all others together, so no optimum leaves it out (not even by making its
    child the root); other parents of that child are ruled out.
    """
    costs = directed_costs(distances, kurtosis, lam=lam, direction=trend)
    forced = -(np.abs(costs[np.isfinite(costs)]).sum() + 1.0)
    for child, parent in (known_parents or {}).items():
        costs[:, child] = np.inf
        costs[parent, child] = forced
    return minimum_spanning_arborescence(costs)


def _with_known_joined(
    distances: npt.NDArray[np.float64], known: Mapping[int, int]
) -> npt.NDArray[np.float64]:
    """``distances`` with every known pair at distance zero, so that the spanning tree keeps it."""
    d = distances.copy()
    for child, parent in known.items():
        d[child, parent] = d[parent, child] = 0.0
    return d
