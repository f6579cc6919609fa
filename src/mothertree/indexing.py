"""Recovery through a fingerprint store: ``index`` reads each model once; ``recover_store``, ``add`` and
``query`` answer from fingerprints (``features.fingerprint``, ``store``).

    index(paths, store)        discover -> for each model not in the store: open -> fingerprint -> commit
    recover_store(store)       fingerprints -> align, group, select -> estimated FeatureSets -> recover_trees
    add(model, store)          index that one model, then place it among its nearest relatives
    query(model, store)        the same, without writing to the store

The tree step is ``pipeline.recover_trees``, unchanged: only where the FeatureSet comes from differs.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._progress import progress
from .errors import (
    InvalidParameterError,
    MissingDependencyError,
    MotherTreeError,
    NoComparableTensorsError,
    TooFewModelsError,
    UnreadableFileError,
)
from .features.align import prefixes_to_strip, stripped_names
from .features.decay import clock_tensors
from .features.estimate import RankRequest, features_from_fingerprints
from .features.featureset import FeatureSet
from .features.fingerprint import Fingerprint, FingerprintParams, fingerprint, is_copy, is_weight
from .features.pairs import GroupFingerprints, nearest_pairs
from .features.pruned import newly_zeroed_in_prints
from .features.quantized import quantized_sources_of_prints
from .features.reductions import relatedness
from .features.select import group_by_architecture, select_tensors, weight_signature
from .features.sparse_merges import SampledModel
from .io import discover, os_error, with_unique_ids
from .io.types import BrokenModel, Checkpoint, ModelRef, TensorInfo
from .pipeline import (
    ALIASES,
    MODEL_SUMMARIES,
    RELATIONS,
    _distinct,
    _open_model,
    lone_features,
    merge_copies,
    ranks_for,
    record_quantized,
    record_sparse_merges,
    recover_trees,
    split_pruned,
    tensors_summary,
)
from .result import RecoveredModel, RecoveredTree, RecoveryResult
from .store import FingerprintStore, Location, layout_key
from .tree.cluster import UNRELATED_ABOVE
from .tree.recover import Direction, Distance, Edge, TreeCount
from .tree.sparse import PairLookup, sparse_trees

LOG = logging.getLogger(__name__)

# How many of a new model's nearest fingerprints `add` and `query` recover it among.
RELATIVES = 16
# How many models of its own layout `add` and `query` compare a model's fingerprint with, after screening
# the store by screening vectors.
SCREENED = 64

# Groups larger than this are recovered on a sparse candidate graph; each model's candidates are its
# NEIGHBOURS nearest by fingerprint.
SPARSE_ABOVE = 2000
# ... or whose dense arrays would hold more than this many (tensor, model, model) entries: the dense path
# keeps four such arrays (distances, support norms, two rank counts), 32 bytes an entry, 1.3 GB here.
DENSE_ENTRIES = 40_000_000
NEIGHBOURS = 10
# Models fingerprinted at once by `index` in this process (each tensor's arithmetic is numpy's, which lets
# go of the GIL): one per core, at most two models' tensors in memory on 2 cores.
THREADS = min(os.cpu_count() or 1, 4)


@dataclass
class IndexReport:
    """What ``index`` did: counts, the models it could not read, and what it read."""

    indexed: list[str] = field(default_factory=list)  # read and committed, new content
    aliases: list[str] = field(default_factory=list)  # read: content already in the store (a copy, a move)
    unchanged: list[str] = field(default_factory=list)  # not read: files as when indexed
    broken: list[BrokenModel] = field(default_factory=list)
    bytes_read: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.bytes_read / self.seconds / 1e6 if self.seconds > 0 else 0.0
        return (
            f"indexed {len(self.indexed)} new, {len(self.aliases)} already known under another path, "
            f"{len(self.unchanged)} unchanged, {len(self.broken)} failed; "
            f"read {self.bytes_read / 1e6:.1f} MB in {self.seconds:.2f} s ({rate:.0f} MB/s)"
        )


def model_files(ref: ModelRef) -> list[list[Any]]:
    """``[[name, size, mtime_ns], ...]`` of the files a model is read from (its folder's files, or the
    file): compared on a rerun to skip models whose files are as they were."""
    where = ref.weights_path
    try:
        if where.is_file():
            stat = where.stat()
            return [[where.name, stat.st_size, stat.st_mtime_ns]]
        entries = []
        for entry in sorted(os.scandir(where), key=lambda e: e.name):
            if entry.is_file():
                stat = entry.stat()
                entries.append([entry.name, stat.st_size, stat.st_mtime_ns])
        return entries
    except OSError:
        return []  # never equal to a stored list: the model is read, and its reader names the error


def index(
    paths: Sequence[str | Path],
    store: FingerprintStore,
    *,
    base: str | Path | None = None,
    follow_links: bool = False,
    reread: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    on_model: Callable[[str], None] | None = None,
) -> IndexReport:
    """Fingerprint every model under ``paths`` that the store does not hold as it is now, each committed as
    soon as it is read (a crash loses only the models being read).

    ``reread``: read every model again, even those whose files look unchanged. ``workers`` (a local Dask
    cluster of that many processes) or ``scheduler`` (the address of a running Dask scheduler):
    fingerprint on Dask workers; this process stays the store's one writer, and a model whose worker dies
    is retried on another (Dask's ``allowed_failures``), then reported. ``on_model(id)`` is called after
    each model is committed or skipped.
    """
    started = time.perf_counter()
    report = IndexReport()
    refs: list[ModelRef] = []
    for path in paths:
        found, failed = discover(Path(path), follow_links=follow_links)
        refs.extend(found)
        report.broken.extend(failed)
    refs = with_unique_ids(_distinct(refs))
    by_id = {ref.id: ref for ref in refs}
    jobs: list[_Job] = []
    for ref in refs:
        where = str(ref.path.resolve())
        base_ref = _declared_base(ref, refs)
        files = model_files(ref)
        if ref.adapter_base is not None:  # the adapter's weights are its base's plus the update
            files = [*files, ["base", _base_files(base_ref, base)]]
        known = store.location(where)
        if not reread and known is not None and known.files == files and store.has(known.content_id):
            report.unchanged.append(ref.id)
            if on_model is not None:
                on_model(ref.id)
            continue
        jobs.append(_Job(ref, where, files, base_ref))
    read = (
        _fingerprint_on_dask(jobs, base, follow_links, store.params, workers, scheduler)
        if workers is not None or scheduler is not None
        else _fingerprint_in_threads(jobs, base, follow_links, store.params)
    )
    for job, outcome in progress(read, desc="indexing", total=len(jobs), unit="model"):
        if isinstance(outcome, BrokenModel):
            report.broken.append(outcome)
            LOG.warning("skipping `%s`: %s", outcome.path, outcome.error)
        else:
            report.bytes_read += sum(int(f[1]) for f in job.files if f[0] != "base")
            parent = by_id.get(outcome.known_parent) if outcome.known_parent is not None else None
            new = store.put(
                outcome.fingerprint,
                path=job.where,
                name=job.ref.id,
                files=job.files,
                known_parent=str(parent.path.resolve()) if parent is not None else None,
            )
            (report.indexed if new else report.aliases).append(job.ref.id)
        if on_model is not None:
            on_model(job.ref.id)
    report.seconds = time.perf_counter() - started
    return report


@dataclass(frozen=True)
class _Job:
    """A model to fingerprint: where it is, its files as seen, and the base it declares if an adapter."""

    ref: ModelRef
    where: str
    files: list[list[Any]]
    base_ref: ModelRef | None


@dataclass(frozen=True)
class _Read:
    fingerprint: Fingerprint
    known_parent: str | None  # the id of the base an adapter was read on


def _fingerprint_job(
    job: _Job, base: str | Path | None, follow_links: bool, params: FingerprintParams
) -> tuple[_Job, _Read | BrokenModel]:
    """Open and fingerprint one model (in this process or on a Dask worker); what fails is returned."""
    try:
        # The adapter's declared base was found among all models by the caller: it alone is passed on.
        model = _open_model(job.ref, [job.ref] + ([job.base_ref] if job.base_ref else []), base, follow_links)
        with model.checkpoint as checkpoint:
            print_ = fingerprint(checkpoint, params)
            print_.summary = _summary(checkpoint)
    except (MotherTreeError, OSError) as exc:
        error = exc if isinstance(exc, MotherTreeError) else os_error(job.ref.path, exc)
        return job, BrokenModel(path=job.ref.path, error=error)
    return job, _Read(print_, model.known_parent)


def _fingerprint_in_threads(
    jobs: Sequence[_Job], base: str | Path | None, follow_links: bool, params: FingerprintParams
) -> Iterator[tuple[_Job, _Read | BrokenModel]]:
    """``_fingerprint_job`` of every job, ``THREADS`` models at a time (numpy and file reads release the
    GIL), yielded in order. At most ``THREADS`` models' tensors are in memory at once."""
    if THREADS <= 1 or len(jobs) <= 1:
        yield from (_fingerprint_job(job, base, follow_links, params) for job in jobs)
        return
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        pending: deque[Future[tuple[_Job, _Read | BrokenModel]]] = deque()
        for job in jobs:
            pending.append(pool.submit(_fingerprint_job, job, base, follow_links, params))
            if len(pending) >= THREADS:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _fingerprint_on_dask(
    jobs: Sequence[_Job],
    base: str | Path | None,
    follow_links: bool,
    params: FingerprintParams,
    workers: int | None,
    scheduler: str | None,
) -> Iterator[tuple[_Job, _Read | BrokenModel]]:
    """``_fingerprint_job`` of every job on Dask, yielded as each finishes (this process commits)."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise MissingDependencyError(
            f"`--workers` and `--scheduler` run on Dask distributed, which is not installed: {exc}",
            hint="pip install 'dask[distributed]'",
        ) from None
    with ExitStack() as stack:
        if scheduler is not None:
            client = stack.enter_context(Client(scheduler))
        else:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers or 1, threads_per_worker=1, processes=True, dashboard_address=None
                )
            )
            client = stack.enter_context(Client(cluster))
        futures = {
            client.submit(_fingerprint_job, job, base, follow_links, params, pure=False): job for job in jobs
        }
        for future in as_completed(futures):
            job = futures[future]
            try:
                yield future.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died (KilledWorker) or a task's crash
                error = UnreadableFileError(
                    f"`{job.ref.path}` could not be fingerprinted on Dask: {type(exc).__name__}: {exc}",
                    hint="rerun `mothertree index`: what was committed stays, and this model is read again",
                    path=job.ref.path,
                )
                yield job, BrokenModel(path=job.ref.path, error=error)


def _summary(checkpoint: Checkpoint) -> dict[str, object]:
    """What a fingerprint records of its model beside the weights: ``tensors_summary`` and its format
    (an export may leave tensors out and still be a copy: ``fingerprint.shared_names``)."""
    return {**tensors_summary(checkpoint.tensors.values()), "format": checkpoint.format}


def _declared_base(ref: ModelRef, refs: Sequence[ModelRef]) -> ModelRef | None:
    """The model of ``refs`` an adapter declares as its base (None for other models, or when absent)."""
    from .io import match_base

    if not ref.adapter_base:
        return None
    try:
        return match_base(ref.adapter_base, refs)
    except MotherTreeError:
        return None  # ambiguous: opening the adapter says so, for that model alone


def _base_files(declared: ModelRef | None, base: str | Path | None) -> list[list[Any]]:
    if declared is not None:
        return model_files(declared)
    if base is not None:
        return model_files(ModelRef(id="base", path=Path(base), weights_path=Path(base)))
    return []


# -- from fingerprints to trees ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    """One model of the store: a content, under the name of its first location, with the others' names
    as aliases."""

    id: str
    path: str
    content_id: str
    aliases: tuple[str, ...]
    known_parent: str | None  # a content id


def _nodes(locations: Sequence[Location]) -> list[_Node]:
    refs = with_unique_ids(
        [ModelRef(id=loc.name, path=Path(loc.path), weights_path=Path(loc.path)) for loc in locations]
    )
    names = {loc.path: ref.id for loc, ref in zip(locations, refs, strict=True)}
    content_of = {loc.path: loc.content_id for loc in locations}
    by_content: dict[str, list[Location]] = {}
    for loc in locations:
        by_content.setdefault(loc.content_id, []).append(loc)
    nodes = []
    for content_id, where in by_content.items():
        first, *others = where
        parent = next((content_of.get(loc.known_parent) for loc in where if loc.known_parent), None)
        nodes.append(
            _Node(names[first.path], first.path, content_id, tuple(names[o.path] for o in others), parent)
        )
    return nodes


@dataclass
class _Group:
    """One architecture group of the store: its nodes, the tensors compared, and each node's names for
    them (``features.align``)."""

    nodes: list[_Node]
    tensors: list[TensorInfo]
    stored_names: list[dict[str, str]]
    clock: list[TensorInfo] = field(default_factory=list)  # features.decay.clock_tensors


def _groups(
    store: FingerprintStore,
    layers: str | None,
    extra: Sequence[tuple[_Node, Fingerprint]] = (),
    only: Sequence[str] | None = None,
) -> list[_Group]:
    """The store's models (``only`` these content ids, if given; ``extra`` added), grouped by architecture
    from their tensor lists alone (no fingerprint loaded)."""
    nodes = _nodes(store.locations())
    if only is not None:
        wanted = set(only)
        nodes = [node for node in nodes if node.content_id in wanted]
    tensors = [store.tensors(node.content_id) for node in nodes]
    nodes += [node for node, _ in extra]
    tensors += [print_.tensors for _, print_ in extra]
    maps = [{info.name: info for info in infos} for infos in tensors]
    prefixes = prefixes_to_strip(maps)
    renamed = [stripped_names(m, prefix) for m, prefix in zip(maps, prefixes, strict=True)]
    aligned = [{short: maps[i][stored] for short, stored in renamed[i].items()} for i in range(len(maps))]
    signatures = [
        weight_signature({name: TensorInfo(name, t.shape, t.dtype) for name, t in m.items()}) for m in aligned
    ]
    groups = []
    for members in group_by_architecture(signatures):
        selected = (
            [
                TensorInfo(info.name, info.shape, info.dtype)
                for info in select_tensors([aligned[i] for i in members], layers)
            ]
            if len(members) > 1
            else []
        )
        clock = clock_tensors([aligned[i] for i in members]) if len(members) > 1 else []
        groups.append(_Group([nodes[i] for i in members], selected, [renamed[i] for i in members], clock))
    return groups


def store_feature_sets(
    store: FingerprintStore,
    *,
    layers: str | None = None,
    ranks: RankRequest = "auto",
    extra: Sequence[tuple[_Node, Fingerprint]] = (),
    only: Sequence[str] | None = None,
) -> list[FeatureSet]:
    """One estimated FeatureSet per architecture group of the store's models (``extra`` added, a model
    not in the store; ``only``: just these content ids and ``extra``)."""
    loaded = {node.content_id: print_ for node, print_ in extra}
    return [
        _group_features(store, group, layers, ranks, loaded) for group in _groups(store, layers, extra, only)
    ]


def _group_features(
    store: FingerprintStore,
    group: _Group,
    layers: str | None,
    ranks: RankRequest,
    loaded: dict[str, Fingerprint],
    relations: Collection[str] = RELATIONS,
) -> FeatureSet:
    if len(group.nodes) == 1:
        return _lone(group.nodes[0])
    prints = [loaded.get(node.content_id) or store.fingerprint(node.content_id) for node in group.nodes]
    features = features_from_fingerprints(
        prints,
        [node.id for node in group.nodes],
        [node.path for node in group.nodes],
        group.tensors,
        group.stored_names,
        ranks=ranks,
        clock=group.clock,
        metadata={
            "layers": layers,
            "selection": "regex" if layers else "default",
            "source": f"store {store.path}",
            MODEL_SUMMARIES: {node.id: p.summary for node, p in zip(group.nodes, prints, strict=True)},
            ALIASES: {node.id: list(node.aliases) for node in group.nodes if node.aliases},
        },
    )
    features, alias_of = (
        merge_copies(features, _digests_agree(prints)) if "duplicate" in relations else (features, {})
    )
    features = _split_leaf_copies(features, group, prints, alias_of, relations)
    id_of_content = {node.content_id: node.id for node in group.nodes}
    known = {
        alias_of.get(node.id, node.id): alias_of.get(id_of_content[p], id_of_content[p])
        for node in group.nodes
        if (p := node.known_parent) is not None and p in id_of_content
    }
    features.known_parents = {c: p for c, p in known.items() if c != p and c in features.model_ids}
    return features


def _split_leaf_copies(
    features: FeatureSet,
    group: _Group,
    prints: Sequence[Fingerprint],
    alias_of: dict[str, str],
    relations: Collection[str],
) -> FeatureSet:
    """``features`` without the group's quantised and pruned copies, found from fingerprints and recorded
    to come back as leaves (``pipeline.record_quantized``, ``pipeline.split_pruned``); its TIES and DARE
    merges recorded for the tree step to take out (``pipeline.record_sparse_merges``, on the samples)."""
    ids, paths = [node.id for node in group.nodes], [node.path for node in group.nodes]
    print_of = dict(zip(ids, prints, strict=True))
    if "quantized" in relations:
        roundings = quantized_sources_of_prints(prints)
        kept = {ids[r.child] for r in roundings.values()}
        features = features.subset([i for i, m in enumerate(features.model_ids) if m not in kept])
        record_quantized(features, ids, paths, roundings, alias_of)
    if "pruned" in relations:
        ordered = [print_of[model_id] for model_id in features.model_ids]
        features = split_pruned(
            features, lambda child, source: newly_zeroed_in_prints(ordered[child], ordered[source])
        )
    if "merge" in relations:
        names_of = dict(zip(ids, group.stored_names, strict=True))
        views = [SampledModel(print_of[m], names_of[m]) for m in features.model_ids]
        record_sparse_merges(features, views)
    return features


def _digests_agree(prints: Sequence[Fingerprint]) -> Callable[[int, int], bool]:
    return lambda i, j: is_copy(prints[i], prints[j])


def _lone(node: _Node) -> FeatureSet:
    return lone_features(node.id, node.path, node.aliases)


def recover_store(
    store: FingerprintStore,
    *,
    n_trees: TreeCount = "auto",
    lam: float = 0.3,
    direction: Direction = "auto",
    distance: Distance = "auto",
    layers: str | None = None,
    sparse_above: int = SPARSE_ABOVE,
    relations: Collection[str] = RELATIONS,
) -> RecoveryResult:
    """The Model Trees of every model in ``store``, from fingerprints alone (no weights read).

    ``relations`` as ``pipeline.recover``'s, each found from fingerprints (``_split_leaf_copies``; TIES
    and DARE merges by the weight-by-weight test on the samples), in groups recovered densely.

    A group of more than ``sparse_above`` models (or too large for dense arrays: ``DENSE_ENTRIES``) is
    recovered on a sparse candidate graph
    (``tree.sparse``): each model's ``NEIGHBOURS`` nearest by fingerprint, l2 distances, trees split
    where models are unrelated; ``n_trees`` must then be ``"auto"`` and ``direction`` ``"auto"`` or
    ``"norm"``.
    """
    if len(store) < 2:
        raise TooFewModelsError(
            f"the store `{store.path}` holds {len(store)} model(s); need at least 2",
            hint="add models with `mothertree index MODELS --store FILE`",
        )
    groups = _groups(store, layers)
    large = [
        group
        for group in groups
        if len(group.nodes) > sparse_above or len(group.tensors) * len(group.nodes) ** 2 > DENSE_ENTRIES
    ]
    if large and (n_trees != "auto" or direction not in ("auto", "norm")):
        raise InvalidParameterError(
            f"a group of {len(large[0].nodes)} models is recovered on a sparse candidate graph, which "
            "splits trees where models are unrelated and orients them by the cues' posterior",
            hint="use `--trees auto` and `--direction auto` (or `norm`) for collections this large",
        )
    dense = [
        _group_features(store, group, layers, ranks_for(distance), {}, relations)
        for group in groups
        if group not in large
    ]
    if not any(f.n_models > 1 for f in dense) and not large:
        raise NoComparableTensorsError(
            "no two models of the store share their weight tensors (name and shape): nothing to compare"
        )
    result = (
        recover_trees(
            dense, n_trees=n_trees, lam=lam, direction=direction, distance=distance, relations=relations
        )
        if dense
        else RecoveryResult(models=[], edges=[], trees=[], params={})
    )
    for group in large:
        _add_sparse_group(result, store, group, direction)
    return result


def _add_sparse_group(
    result: RecoveryResult, store: FingerprintStore, group: _Group, direction: Direction
) -> None:
    """Recover one large group on its candidate graph and append its models, edges and trees."""
    prints = (store.fingerprint(node.content_id) for node in group.nodes)
    stacked = GroupFingerprints.from_fingerprints(list(prints), group.tensors, group.stored_names)
    first, second = nearest_pairs(stacked.vectors(), NEIGHBOURS)
    stats = stacked.pair_stats(first, second)

    def compute(i: np.ndarray, j: np.ndarray) -> dict[str, np.ndarray]:
        found = stacked.pair_stats(i, j)
        return {
            "squared": found.squared,
            "norm_change": found.norm_change,
            "kurtosis_change": found.kurtosis_change,
            "skew": found.skew,
        }

    ids = [node.id for node in group.nodes]
    index_of_content = {node.content_id: k for k, node in enumerate(group.nodes)}
    known = {
        k: index_of_content[node.known_parent]
        for k, node in enumerate(group.nodes)
        if node.known_parent is not None and node.known_parent in index_of_content
    }
    trees = sparse_trees(
        len(ids),
        first,
        second,
        stats.distance,
        stats.relative,
        PairLookup(compute, antisymmetric=("norm_change", "kurtosis_change", "skew")),
        direction=direction,
        known=known,
    )
    offset = len(result.trees)
    for label in range(int(trees.labels.max()) + 1):
        members = [ids[k] for k in np.flatnonzero(trees.labels == label)]
        root = next(ids[k] for k in np.flatnonzero(trees.labels == label) if trees.parents[k] < 0)
        result.trees.append(
            RecoveredTree(root=root, models=members, cue=trees.cues[label] if len(members) > 1 else None)
        )
    distance_of = {(int(i), int(j)): float(d) for i, j, d in zip(first, second, stats.distance, strict=True)}
    for k, node in enumerate(group.nodes):
        result.models.append(
            RecoveredModel(node.id, node.path, offset + int(trees.labels[k]), aliases=node.aliases)
        )
        parent = int(trees.parents[k])
        if parent < 0:
            continue
        result.edges.append(
            Edge(
                ids[parent],
                node.id,
                distance_of.get((min(parent, k), max(parent, k)), float("nan")),
                float(trees.confidence[k]),
                k in known,
                float(trees.direction_probability[k]),
                float(trees.placement[k]),
                "adapter" if k in known else "finetune",
            )
        )
    result.params.setdefault("distances_used", []).append("l2 (sparse candidate graph)")


# -- one model against the store --------------------------------------------------------------------


@dataclass(frozen=True)
class Relative:
    """A model of the store near the queried one: its id, path and relative distance."""

    id: str
    path: str
    relative_distance: float


@dataclass(frozen=True)
class Placement:
    """Where one model fits among the store's: ``parent`` (the edge into it, with its confidence,
    direction probability and relation), ``children`` (edges out of it), ``relatives`` (nearest first).

    ``related`` is False when no model of the store is nearer than unrelated weights are; ``copy_of``
    names a model of the store it is a copy of.
    """

    model: str
    path: str
    related: bool
    parent: Edge | None
    children: tuple[Edge, ...]
    relatives: tuple[Relative, ...]
    copy_of: str | None
    added: bool
    why: str

    def to_json(self) -> dict[str, object]:
        from .result import edge_json

        return {
            "model": self.model,
            "path": self.path,
            "related": self.related,
            "copy_of": self.copy_of,
            "parent": edge_json(self.parent) if self.parent is not None else None,
            "children": [edge_json(e) for e in self.children],
            "relatives": [
                {"id": r.id, "path": r.path, "relative_distance": r.relative_distance} for r in self.relatives
            ],
            "added": self.added,
            "why": self.why,
        }


def query(
    model: str | Path,
    store: FingerprintStore,
    *,
    base: str | Path | None = None,
    follow_links: bool = False,
    relatives: int = RELATIVES,
) -> Placement:
    """Where ``model`` (a path; or the name of a model in the store) fits among the store's models,
    without writing to the store."""
    return _place(model, store, base=base, follow_links=follow_links, relatives=relatives, commit=False)


def add(
    model: str | Path,
    store: FingerprintStore,
    *,
    base: str | Path | None = None,
    follow_links: bool = False,
    relatives: int = RELATIVES,
) -> Placement:
    """Read only ``model``, commit its fingerprint, and say where it fits (``query``)."""
    return _place(model, store, base=base, follow_links=follow_links, relatives=relatives, commit=True)


def _place(
    model: str | Path,
    store: FingerprintStore,
    *,
    base: str | Path | None,
    follow_links: bool,
    relatives: int,
    commit: bool,
) -> Placement:
    node, print_ = _read_one(model, store, base=base, follow_links=follow_links, commit=commit)
    others = [n for n in _nodes(store.locations()) if n.content_id != node.content_id]
    nearest = _nearest(print_, others, store, relatives)
    copy_of = next((n.id for n, _ in nearest if is_copy(print_, store.fingerprint(n.content_id))), None)
    related = [(n, d) for n, d in nearest if d <= UNRELATED_ABOVE]
    found = tuple(Relative(n.id, n.path, round(d, 6)) for n, d in nearest)
    if copy_of is not None:
        return Placement(node.id, node.path, True, None, (), found, copy_of, commit, f"a copy of `{copy_of}`")
    if not related:
        return Placement(
            node.id,
            node.path,
            False,
            None,
            (),
            found,
            None,
            commit,
            "no relative in this store"
            + (f" (nearest: `{nearest[0][0].id}`, relative distance {nearest[0][1]:.3g})" if nearest else ""),
        )
    feature_sets = store_feature_sets(store, extra=[(node, print_)], only=[n.content_id for n, _ in related])
    result = recover_trees(feature_sets)
    parent = next((e for e in result.edges if e.child == node.id), None)
    children = tuple(e for e in result.edges if e.parent == node.id)
    if parent is None:
        why = f"the root of its tree among its {len(related)} nearest relatives"
    else:
        why = (
            f"fine-tuned from `{parent.parent}` (confidence {parent.confidence:.2f}, direction probability "
            f"{parent.direction_probability:.2f}"
            + ("" if parent.direction_determined else ", direction undetermined")
            + ")"
        )
    return Placement(node.id, node.path, True, parent, children, found, None, commit, why)


def _read_one(
    model: str | Path, store: FingerprintStore, *, base: str | Path | None, follow_links: bool, commit: bool
) -> tuple[_Node, Fingerprint]:
    """The node and fingerprint of ``model``: read from its path (committed with ``commit``), or, when it
    names a model of the store and no path, taken from the store."""
    path = Path(model)
    if not path.exists():
        by_name = [n for n in _nodes(store.locations()) if n.id == str(model) or str(model) in n.aliases]
        if by_name:
            return by_name[0], store.fingerprint(by_name[0].content_id)
    refs, broken = discover(path, follow_links=follow_links)
    if not refs:
        if broken:
            raise broken[0].error
        raise TooFewModelsError(f"`{model}` holds no readable model")
    if len(refs) > 1:
        raise TooFewModelsError(
            f"`{model}` holds {len(refs)} models; `add` and `query` take one",
            hint="give one model folder or file, or `mothertree index` the folder",
        )
    ref = refs[0]
    opened = _open_model(ref, refs, base, follow_links)
    with opened.checkpoint as checkpoint:
        print_ = fingerprint(checkpoint, store.params)
        print_.summary = _summary(checkpoint)
    where = str(ref.path.resolve())
    if commit:
        store.put(print_, path=where, name=ref.id, files=model_files(ref), known_parent=None)
    taken = {n.id for n in _nodes(store.locations()) if n.content_id != print_.content_id}
    name = ref.id if ref.id not in taken else where
    return _Node(name, where, print_.content_id, (), None), print_


def _nearest(
    print_: Fingerprint, nodes: Sequence[_Node], store: FingerprintStore, k: int
) -> list[tuple[_Node, float]]:
    """The ``k`` nodes nearest ``print_`` by relative distance over the weight tensors both hold with one
    name and shape (aligned as in recovery), nearest first; nodes of other architectures are left out.

    Models of ``print_``'s own layout are screened first by their screening vectors (one query, one array
    operation): only the ``SCREENED`` nearest by those are compared fingerprint to fingerprint, with the
    models of other layouts.
    """
    vectors = store.screening_vectors(layout_key(print_.tensors))
    same_layout = [node for node in nodes if node.content_id in vectors]
    shortlist = same_layout
    if len(same_layout) > SCREENED:
        mine = print_.screening_vector()
        screened = np.stack([vectors[node.content_id] for node in same_layout])
        far = ((screened - mine) ** 2).sum(axis=1)
        shortlist = [same_layout[i] for i in np.argsort(far, kind="stable")[:SCREENED]]
    inside = {node.content_id for node in same_layout}
    candidates = shortlist + [node for node in nodes if node.content_id not in inside]
    found = _relative_distances(print_, candidates, store)
    found.sort(key=lambda pair: pair[1])
    return found[:k]


def _relative_distances(
    print_: Fingerprint, nodes: Sequence[_Node], store: FingerprintStore
) -> list[tuple[_Node, float]]:
    """Each node of ``print_``'s architecture with its relative distance to ``print_``, from the
    fingerprints' samples.

    Nodes are taken layout by layout (one alignment per distinct tensor list), each layout's samples
    stacked: one array operation per tensor, not per model.
    """
    own = print_.tensor_map
    own_weights = {name: k for k, name in enumerate(print_.weights)}
    layouts: dict[tuple[tuple[str, tuple[int, ...]], ...], tuple[dict[str, TensorInfo], list[_Node]]] = {}
    for node in nodes:
        tensors = {info.name: info for info in store.tensors(node.content_id)}
        key = tuple((t.name, t.shape) for t in tensors.values() if is_weight(t))
        layouts.setdefault(key, (tensors, []))[1].append(node)
    found: list[tuple[_Node, float]] = []
    for tensors, members in layouts.values():
        prefixes = prefixes_to_strip([own, tensors])
        mine, theirs = stripped_names(own, prefixes[0]), stripped_names(tensors, prefixes[1])
        shared = [
            name
            for name in mine
            if name in theirs
            and mine[name] in own_weights
            and is_weight(tensors[theirs[name]])
            and tensors[theirs[name]].shape == own[mine[name]].shape
        ]
        if not shared or len(shared) < 0.5 * min(len(own_weights), sum(map(is_weight, tensors.values()))):
            continue
        others = [store.fingerprint(node.content_id) for node in members]
        slots = {name: k for k, name in enumerate(others[0].weights)}
        ratios = np.zeros((len(shared), len(members)))
        for row, name in enumerate(shared):
            x = print_.samples[own_weights[mine[name]]].astype(np.float64)
            y = np.stack([other.samples[slots[theirs[name]]] for other in others]).astype(np.float64)
            scale = np.sqrt((np.mean(x**2) + np.mean(y**2, axis=1)) / 2.0)
            rms = np.sqrt(np.mean((y - x) ** 2, axis=1))
            ratios[row] = np.where(scale > 0, rms / np.where(scale > 0, scale, 1.0), 0.0)
        found += [(node, float(r)) for node, r in zip(members, relatedness(ratios), strict=True)]
    return found
