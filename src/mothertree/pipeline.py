"""From a folder on disk to Model Trees: discover, open, group, read features, recover.

This is the library call behind ``mothertree recover``; every step is also usable on its own
(``mothertree.io``, ``mothertree.features``, ``mothertree.tree``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import MotherTreeError, NoComparableTensorsError, TooFewModelsError
from .features.align import align_names
from .features.extract import extract_features
from .features.featureset import FeatureSet
from .features.rank import neighbour_pairs
from .features.select import group_by_architecture, select_tensors, weight_signature
from .io import discover, match_base, open_checkpoint
from .io.types import BrokenModel, Checkpoint, ModelRef, TensorInfo
from .tree.cluster import split_counts, tree_linkage
from .tree.recover import Direction, Distance, Edge, TreeRecovery

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoveredModel:
    id: str
    path: str
    tree: int


@dataclass(frozen=True)
class RecoveredTree:
    root: str
    models: list[str]
    cue: str | None = None  # what oriented the tree ("norm grows", "kurtosis falls", ...); None for one model


@dataclass
class RecoveryResult:
    """The Model Trees of a collection, and the models that could not be used.

    ``to_json`` gives the stable JSON contract of ``mothertree recover --format json``.
    """

    models: list[RecoveredModel]
    edges: list[Edge]
    trees: list[RecoveredTree]
    broken: list[BrokenModel] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def roots(self) -> list[str]:
        return [tree.root for tree in self.trees]

    def to_json(self) -> dict[str, Any]:
        return {
            "models": [{"id": m.id, "path": m.path, "tree": m.tree} for m in self.models],
            "edges": [
                {"parent": e.parent, "child": e.child, "distance": e.distance, "confidence": e.confidence}
                for e in self.edges
            ],
            "roots": self.roots,
            "trees": [{"root": t.root, "models": t.models, "cue": t.cue} for t in self.trees],
            "skipped": [{"path": str(b.path), "error": str(b.error)} for b in self.broken],
            "params": self.params,
        }


def read_features(
    paths: Sequence[str | Path],
    *,
    layers: str | None = None,
    ranks: bool | Literal["auto"] = False,
    base: str | Path | None = None,
) -> tuple[list[FeatureSet], list[BrokenModel]]:
    """One FeatureSet per architecture group of the models found under ``paths`` (with ranks if asked).

    ``ranks="auto"`` (for ``--distance auto``): first only each model's difference to its nearest model
    (cheap: n ranks per tensor); a group where any of them is clearly low-rank
    (``FeatureSet.has_low_rank_differences``) is read again with the ranks of each model's
    ``features.rank.NEIGHBOURS`` nearest models in l2 (all pairs in groups that small).

    A PEFT LoRA adapter is read as its base model plus the adapter's update: the base is the model of the
    collection its ``adapter_config.json`` names (``io.match_base``), else ``base``.
    """
    refs: list[ModelRef] = []
    broken: list[BrokenModel] = []
    for path in paths:
        found, failed = discover(Path(path))
        refs.extend(found)
        broken.extend(failed)

    # An adapter read on a base of the collection is known to be that base's child.
    known_parents: dict[str, str] = {}

    def base_resolver(adapter: ModelRef) -> Callable[[str], Checkpoint | None]:
        def resolve(name: str) -> Checkpoint | None:
            found = match_base(name, refs) if name else None
            if found is not None:
                known_parents[adapter.id] = found.id
                return open_checkpoint(found)
            return open_checkpoint(Path(base)) if base is not None else None

        return resolve

    with ExitStack() as stack:
        opened: list[tuple[ModelRef, Checkpoint]] = []
        for ref in refs:
            try:
                checkpoint = open_checkpoint(ref, resolve_base=base_resolver(ref))
                opened.append((ref, stack.enter_context(checkpoint)))
            except MotherTreeError as exc:
                LOG.warning("skipping `%s`: %s", ref.path, exc)
                broken.append(BrokenModel(path=ref.path, error=exc))
        if len(opened) < 2:
            raise TooFewModelsError(_too_few_message(paths, len(opened), broken))

        # Names that differ only by a wrapper prefix (`bert.` of a task model) are compared as one.
        aligned = align_names([ckpt for _, ckpt in opened])
        opened = [(ref, ckpt) for (ref, _), ckpt in zip(opened, aligned, strict=True)]
        groups = group_by_architecture([weight_signature(ckpt.tensors) for _, ckpt in opened])
        LOG.info("%d models in %d architecture group(s)", len(opened), len(groups))
        feature_sets = []
        for members in groups:
            group = [opened[i] for i in members]
            if len(group) == 1:
                feature_sets.append(_lone_model(group[0]))
                continue
            tensors = select_tensors([ckpt.tensors for _, ckpt in group], layers)
            features, failed = _extract_group(
                group,
                tensors,
                ranks,
                metadata={
                    "layers": layers,
                    "selection": "regex" if layers else "default",
                    "known_parents": {
                        child: parent
                        for child, parent in known_parents.items()
                        if child in {r.id for r, _ in group} and parent in {r.id for r, _ in group}
                    },
                },
            )
            broken.extend(failed)
            if features.n_models:
                feature_sets.append(features)
    if not any(f.n_models > 1 for f in feature_sets):
        raise NoComparableTensorsError(
            "no two models share their weight tensors (name and shape): there is nothing to compare",
            hint="put fine-tunes of one architecture in the folder; models of different architectures "
            "are never related by fine-tuning",
        )
    return feature_sets, broken


def _extract_group(
    group: Sequence[tuple[ModelRef, Checkpoint]],
    tensors: Sequence[TensorInfo],
    ranks: bool | Literal["auto"],
    metadata: dict[str, object],
) -> tuple[FeatureSet, list[BrokenModel]]:
    checkpoints, ids = [ckpt for _, ckpt in group], [ref.id for ref, _ in group]
    if ranks != "auto":
        return extract_features(checkpoints, ids, tensors, ranks=ranks, metadata=metadata)
    features, failed = extract_features(checkpoints, ids, tensors, ranks="nearest", metadata=metadata)
    if features.n_models < 2 or not features.has_low_rank_differences():
        return features, failed
    # Rank is needed only where an edge could be: each model's nearest models in l2 (not all n^2 pairs).
    pairs = neighbour_pairs(features.distances())
    LOG.info("some differences are low-rank (LoRA-like): reading again for the ranks of %d pairs", len(pairs))
    kept = set(features.model_ids)
    readable = [(ref, ckpt) for ref, ckpt in group if ref.id in kept]  # in the order of features.model_ids
    again, more = extract_features(
        [ckpt for _, ckpt in readable],
        [ref.id for ref, _ in readable],
        tensors,
        ranks=True,
        rank_pairs=pairs,
        metadata=metadata,
    )
    return again, failed + more


def recover_trees(
    feature_sets: Sequence[FeatureSet],
    *,
    n_trees: int | Literal["auto"] | None = "auto",
    lam: float = 0.3,
    direction: Direction = "auto",
    distance: Distance = "auto",
) -> RecoveryResult:
    """Model Trees of several architecture groups.

    ``n_trees``: ``"auto"`` splits each group where models are unrelated; an int counts the trees of all
    groups together (each group is at least one); ``None`` makes one tree per group.
    """
    started = time.perf_counter()
    comparable = [f for f in feature_sets if f.n_models > 1]
    counts: list[int | Literal["auto"] | None]
    if n_trees is None or n_trees == "auto":
        counts = [n_trees] * len(comparable)
    else:
        lone = len(feature_sets) - len(comparable)
        linkages = [tree_linkage(f.distances()) for f in comparable]
        scales = [float(np.median(f.distances()[np.triu_indices(f.n_models, 1)])) for f in comparable]
        counts = list(split_counts(linkages, scales, n_trees - lone))

    models: list[RecoveredModel] = []
    edges: list[Edge] = []
    trees: list[RecoveredTree] = []
    distances_used: list[str] = []
    count_of = dict(zip(map(id, comparable), counts, strict=True))
    for features in feature_sets:
        if features.n_models == 1:
            trees.append(RecoveredTree(root=features.model_ids[0], models=list(features.model_ids)))
            models.append(RecoveredModel(features.model_ids[0], features.model_paths[0], len(trees) - 1))
            continue
        recovery = TreeRecovery(
            n_trees=count_of[id(features)], lam=lam, direction=direction, distance=distance
        ).fit(features)
        distances_used.append(recovery.distance_)
        first_tree = len(trees)
        for label in range(int(recovery.labels_.max()) + 1):
            members = [recovery.model_ids_[i] for i in np.flatnonzero(recovery.labels_ == label)]
            root = next(r for r in recovery.roots_ if r in members)
            trees.append(RecoveredTree(root=root, models=members, cue=recovery.cues_[label]))
        for model_id, path, label in zip(
            features.model_ids, features.model_paths, recovery.labels_, strict=True
        ):
            models.append(RecoveredModel(model_id, path, first_tree + int(label)))
        edges.extend(recovery.edges_)
    params = {
        "n_trees": n_trees,
        "lam": lam,
        "direction": direction,
        "distance": distance,
        "distances_used": distances_used,
    }
    return RecoveryResult(
        models=models,
        edges=edges,
        trees=trees,
        params=params,
        timings={"trees_s": time.perf_counter() - started},
    )


def recover(
    paths: Sequence[str | Path],
    *,
    n_trees: int | Literal["auto"] | None = "auto",
    lam: float = 0.3,
    direction: Direction = "auto",
    distance: Distance = "auto",
    layers: str | None = None,
    base: str | Path | None = None,
) -> RecoveryResult:
    """Discover the models under ``paths``, read their features, and recover their Model Trees."""
    started = time.perf_counter()
    feature_sets, broken = read_features(paths, layers=layers, ranks=ranks_for(distance), base=base)
    read_s = time.perf_counter() - started
    result = recover_trees(feature_sets, n_trees=n_trees, lam=lam, direction=direction, distance=distance)
    result.broken = broken
    result.params["layers"] = layers
    result.timings["features_s"] = read_s
    return result


def ranks_for(distance: Distance) -> bool | Literal["auto"]:
    """What ``read_features`` must extract for a distance: nothing for l2, every pair for rank."""
    choices: dict[str, bool | Literal["auto"]] = {"l2": False, "rank": True, "auto": "auto"}
    return choices[distance]


def _lone_model(opened: tuple[ModelRef, Checkpoint]) -> FeatureSet:
    ref, ckpt = opened
    return FeatureSet(
        model_ids=[ref.id],
        model_paths=[str(ckpt.path)],
        tensor_names=[],
        numel=np.zeros(0, dtype=np.int64),
        rms_distances=np.zeros((0, 1, 1)),
        moments=np.zeros((0, 1, 4)),
    )


def _too_few_message(paths: Sequence[str | Path], n_readable: int, broken: list[BrokenModel]) -> str:
    where = ", ".join(f"`{p}`" for p in paths)
    message = f"found {n_readable} readable model{'s' if n_readable != 1 else ''} in {where}; need at least 2"
    if broken:
        message += f" ({len(broken)} could not be read)"
    return message
