"""From a folder on disk to Model Trees: discover, open, group, read features, recover.

    recover(paths)  =  read_features(paths)  ->  recover_trees(feature_sets)
                       discover -> open -> align names -> group by architecture -> extract_features

``recover`` is the library call behind ``mothertree recover``; every step is also usable on its own
(``mothertree.io``, ``mothertree.features``, ``mothertree.tree``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ._choices import RELATIONS
from .errors import InvalidParameterError, MotherTreeError, NoComparableTensorsError, TooFewModelsError
from .features.align import align_names
from .features.decay import clock_tensors
from .features.duplicates import confirmed_by_reading, copy_groups
from .features.extract import extract_features
from .features.featureset import FeatureSet
from .features.low_rank import LowRankRule
from .features.pruned import newly_zeroed, pruned_sources
from .features.quantized import Rounding, quantized_sources
from .features.select import group_by_architecture, select_tensors, weight_signature
from .features.sparse_merges import Readable, sparse_merges
from .io import discover, match_base, open_checkpoint, os_error, with_unique_ids
from .io.types import BrokenModel, Checkpoint, ModelRef, TensorInfo
from .result import RecoveredModel, RecoveredTree, RecoveryResult, edge_json
from .tree.cluster import UNRELATED_ABOVE, split_counts, tree_linkage
from .tree.costs import DEFAULT_LAM
from .tree.merges import find_merges
from .tree.recover import Direction, Distance, Edge, TreeCount, TreeRecovery

LOG = logging.getLogger(__name__)

FEATURES_SUFFIX = ".npz"
RankRequest = bool | Literal["auto"]


def recover(
    paths: Sequence[str | Path],
    *,
    n_trees: TreeCount = "auto",
    lam: float = DEFAULT_LAM,
    direction: Direction = "auto",
    distance: Distance = "auto",
    layers: str | None = None,
    base: str | Path | None = None,
    save_features: str | Path | None = None,
    follow_links: bool = False,
    relations: Collection[str] = RELATIONS,
) -> RecoveryResult:
    """The Model Trees of the models under ``paths``, or of FeatureSet files (``.npz``) written before.

    ``layers`` (a regex of tensor names) and ``base`` (the base of LoRA adapters whose declared base is
    not in the collection) apply when weights are read. ``save_features`` also writes the features read
    (one file per architecture group: ``save_feature_sets``). ``follow_links`` lets links in the input
    lead anywhere (by default every file read lies inside the paths given). ``relations`` are the kinds of
    relative found besides fine-tunes (``RELATIONS``: copies, quantised copies, merges); leaving one out
    treats such models as fine-tunes, as the paper's method does. See ``recover_trees`` for the rest.
    """
    _check_relations(relations)
    feature_sets, broken = load_features(
        paths,
        layers=layers,
        base=base,
        ranks=ranks_for(distance),
        follow_links=follow_links,
        relations=relations,
    )
    if save_features is not None:
        save_feature_sets(feature_sets, save_features)
    return recover_trees(
        feature_sets,
        n_trees=n_trees,
        lam=lam,
        direction=direction,
        distance=distance,
        broken=broken,
        relations=relations,
    )


def _check_relations(relations: Collection[str]) -> None:
    unknown = sorted(set(relations) - set(RELATIONS))
    if unknown:
        raise InvalidParameterError(
            f"unknown relation{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}",
            hint=f"choose among {', '.join(RELATIONS)}",
        )


@dataclass(frozen=True)
class Comparison:
    """The auditor's question about two models: related or not, and if so which is the parent.

    ``relative_distance`` is RMS(A - B) over the two weights' RMS, its lower quartile over the compared
    tensors (about 1.41 for unrelated weights, a few hundredths for fine-tunes; related below
    ``UNRELATED_ABOVE``), None
    when the two share no tensor of one name and shape (other architectures), or when one is the other
    quantised or pruned (found by reading, ``why`` says so; 0 for a copy). ``edge`` is the recovered
    edge between them when related: its ``confidence``, ``direction_probability`` and ``relation``, as in
    ``recover``; with two models alone there are no forks to learn cue signs from, so a direction is often
    undetermined, and said so. ``why`` says in words what the numbers mean.
    """

    a: str
    b: str
    related: bool
    relative_distance: float | None
    edge: Edge | None
    cue: str | None
    why: str

    def to_json(self) -> dict[str, object]:
        return {
            "a": self.a,
            "b": self.b,
            "related": self.related,
            "relative_distance": self.relative_distance,
            "edge": edge_json(self.edge) if self.edge is not None else None,
            "cue": self.cue,
            "why": self.why,
        }


def compare(
    a: str | Path, b: str | Path, *, base: str | Path | None = None, follow_links: bool = False
) -> Comparison:
    """Whether model ``a`` and model ``b`` are related by fine-tuning, and which is the parent.

    Each path is one model (a folder, a file, an adapter, a cache entry), read as ``recover`` reads it.

    Raises:
        TooFewModelsError: ``a`` or ``b`` holds no readable model (the error names which and why).
    """
    try:
        feature_sets, broken = read_features(
            [a, b],
            base=base,
            ranks=ranks_for("auto"),
            follow_links=follow_links,
            relations=("duplicate", "quantized", "pruned"),  # no merge of two models alone
        )
    except NoComparableTensorsError:
        return Comparison(
            Path(a).name,
            Path(b).name,
            False,
            None,
            None,
            None,
            "they share no weight tensor of one name and shape: other architectures, never fine-tuned "
            "from one another",
        )
    by_path = {
        Path(path).resolve(): model_id
        for features in feature_sets
        for model_id, path in zip(features.model_ids, features.model_paths, strict=True)
    }
    copies = {
        Path(record["path"]).resolve(): child
        for features in feature_sets
        for child, record in features.metadata.get(LEAF_COPIES, {}).items()
    }
    aliases = {
        copy: original
        for f in feature_sets
        for original, same in f.metadata.get(ALIASES, {}).items()
        for copy in same
    }
    if len(by_path) == 1 and len(aliases) == 1:  # one model stored twice
        ((copy, original),) = aliases.items()
        edge = Edge(original, copy, 0.0, 1.0, direction_probability=1.0, relation="duplicate")
        why = (
            f"`{copy}` is a copy of `{original}`: every tensor equal, or equal to `{original}`'s rounded to "
            "the dtype it is stored in (checked on every tensor)"
        )
        return Comparison(original, copy, True, 0.0, edge, None, why)
    by_path.update(copies)
    if len(by_path) != 2:
        found = ", ".join(f"`{m}`" for m in by_path.values())
        raise TooFewModelsError(
            f"`compare` takes two models; `{a}` and `{b}` hold {len(by_path)} ({found})",
            hint="give one model folder or file for each of A and B",
        )
    # Named in the order given, whichever the recovery makes the parent.
    first = by_path.get(Path(a).resolve(), next(iter(by_path.values())))
    second = next(model_id for model_id in by_path.values() if model_id != first)
    paired = next((features for features in feature_sets if features.n_models == 2), None)
    relative = float(paired.relative_distances()[0, 1]) if paired is not None else None
    result = recover_trees(feature_sets, broken=broken)
    if not result.edges:
        return Comparison(
            first,
            second,
            False,
            relative,
            None,
            None,
            f"their weights are as far apart as unrelated weights (relative distance {relative or 0:.3g}, "
            f"related below {UNRELATED_ABOVE})",
        )
    edge = result.edges[0]
    cue = result.trees[0].cue
    if edge.known:
        why = f"`{edge.child}` is a PEFT adapter read on its base `{edge.parent}`"
    elif edge.relation in ("quantized", "pruned"):
        made = "quantised (rounded to an integer grid)" if edge.relation == "quantized" else "pruned"
        why = (
            f"`{edge.child}` is `{edge.parent}` {made}: checked on every tensor, the copy is always the child"
        )
    elif edge.direction_determined:
        why = (
            f"`{edge.child}` was fine-tuned from `{edge.parent}` (relative distance {relative:.3g}; "
            f"direction probability {edge.direction_probability:.2f}, from {cue})"
        )
    else:
        why = (
            f"related (relative distance {relative:.3g}), but which came first is undetermined: direction "
            f"probability {edge.direction_probability:.2f} for `{edge.parent}` before `{edge.child}`"
        )
    return Comparison(first, second, True, relative, edge, cue, why)


def _models_compared(features: FeatureSet) -> int:
    """The models a FeatureSet stands for: its own, and the copies, quantised and pruned copies it holds
    as aliases and leaves."""
    aliases = sum(len(same) for same in features.metadata.get(ALIASES, {}).values())
    return features.n_models + aliases + len(features.metadata.get(LEAF_COPIES, {}))


def load_features(
    paths: Sequence[str | Path],
    *,
    layers: str | None = None,
    base: str | Path | None = None,
    ranks: RankRequest = False,
    follow_links: bool = False,
    relations: Collection[str] = RELATIONS,
) -> tuple[list[FeatureSet], list[BrokenModel]]:
    """``FeatureSet.load`` of each path when all are ``.npz`` files, else ``read_features(paths)``."""
    feature_files = [Path(p) for p in paths if Path(p).suffix == FEATURES_SUFFIX]
    if not feature_files:
        return read_features(
            paths, layers=layers, ranks=ranks, base=base, follow_links=follow_links, relations=relations
        )
    if len(feature_files) != len(paths):
        raise InvalidParameterError(
            "give either model folders or FeatureSet (.npz) files, not both",
            hint="recover the models with `--save-features FILE.npz` first, or give only the folders",
        )
    if layers is not None or base is not None:
        raise InvalidParameterError(
            "`--layers` and `--base` apply when weights are read; FeatureSet files hold features "
            "read already",
            hint="read the models again with these options (and `--save-features` to keep them)",
        )
    return [FeatureSet.load(p) for p in feature_files], []


def save_feature_sets(feature_sets: Sequence[FeatureSet], path: str | Path) -> list[Path]:
    """Write each group of comparable models to ``path`` (``stem-group<k>.npz`` when there are several)."""
    path = Path(path)
    comparable = [f for f in feature_sets if f.n_models > 1]
    written = []
    for k, features in enumerate(comparable):
        target = path if len(comparable) == 1 else path.with_name(f"{path.stem}-group{k}{path.suffix}")
        features.save(target)
        LOG.info("features of %d models written to `%s`", features.n_models, target)
        written.append(target)
    return written


def ranks_for(distance: Distance) -> RankRequest:
    """What ``read_features`` must extract for a distance: nothing for l2, every pair for rank."""
    choices: dict[str, RankRequest] = {"l2": False, "rank": True, "auto": "auto"}
    return choices[distance]


@dataclass(frozen=True)
class _OpenModel:
    ref: ModelRef
    checkpoint: Checkpoint
    known_parent: str | None  # the id of the base an adapter was read on, when it is in the collection


def read_features(
    paths: Sequence[str | Path],
    *,
    layers: str | None = None,
    ranks: RankRequest = False,
    base: str | Path | None = None,
    follow_links: bool = False,
    relations: Collection[str] = RELATIONS,
) -> tuple[list[FeatureSet], list[BrokenModel]]:
    """One FeatureSet per architecture group of the models found under ``paths`` (with ranks if asked).

    ``ranks="auto"`` (for ``--distance auto``) reads ranks only where the ``LowRankRule`` needs them
    (``features/low_rank.py``). A PEFT LoRA adapter is read as its base model plus the adapter's update:
    the base is the model of the collection its ``adapter_config.json`` names (``io.match_base``; that
    edge becomes one of the group's ``known_parents``), else ``base``.
    """
    refs: list[ModelRef] = []
    broken: list[BrokenModel] = []
    for path in paths:
        found, failed = discover(Path(path), follow_links=follow_links)
        refs.extend(found)
        broken.extend(failed)
    refs = with_unique_ids(_distinct(refs))  # two paths may each hold a `model`

    found_broken = len(broken)  # those found broken by discovery; the CLI lists every skipped model
    with ExitStack() as stack:
        opened: list[_OpenModel] = []
        for ref in refs:
            try:
                model = _open_model(ref, refs, base, follow_links)
            except (MotherTreeError, OSError) as exc:
                # Readers name their OS errors; one that slips through still only costs this model.
                error = exc if isinstance(exc, MotherTreeError) else os_error(ref.path, exc)
                broken.append(BrokenModel(path=ref.path, error=error))
                continue
            stack.enter_context(model.checkpoint)
            opened.append(model)
        if not opened and len(broken) == 1 and isinstance(broken[0].error, MotherTreeError):
            raise broken[0].error  # one model, alone: what is wrong with it is the news
        if len(opened) < 2:
            raise TooFewModelsError(_too_few_message(paths, len(opened), broken))
        # Said here, not as each fails: when the run stops above, its error says it once.
        for skipped in broken[found_broken:]:
            LOG.warning("skipping `%s`: %s", skipped.path, skipped.error)

        # Names that differ only by a wrapper prefix (`bert.` of a task model) are compared as one.
        aligned = align_names([model.checkpoint for model in opened])
        groups = group_by_architecture([weight_signature(ckpt.tensors) for ckpt in aligned])
        LOG.info("%d models in %d architecture group(s)", len(opened), len(groups))
        feature_sets = []
        for members in groups:
            group = [(opened[i], aligned[i]) for i in members]
            features, failed = _group_features(group, layers, ranks, relations)
            broken.extend(failed)
            if features.n_models:
                feature_sets.append(features)
    # A quantised or pruned copy left out is a model compared (with its source) all the same.
    if not any(_models_compared(f) > 1 for f in feature_sets):
        raise NoComparableTensorsError(
            "no two models share their weight tensors (name and shape): there is nothing to compare",
            hint="put fine-tunes of one architecture in the folder; models of different architectures "
            "are never related by fine-tuning",
        )
    return feature_sets, broken


def _distinct(refs: Sequence[ModelRef]) -> list[ModelRef]:
    """``refs`` without repeats: a model reached twice (a path given twice, or one inside another) is one."""
    seen: set[Path] = set()
    distinct = []
    for ref in refs:
        where = ref.path.resolve()
        if where not in seen:
            seen.add(where)
            distinct.append(ref)
    return distinct


def _open_model(
    ref: ModelRef, refs: Sequence[ModelRef], base: str | Path | None, follow_links: bool
) -> _OpenModel:
    """Open ``ref``; an adapter on the base it declares among ``refs``, else on ``base``."""
    declared = match_base(ref.adapter_base, refs) if ref.adapter_base else None

    def resolve_base(_name: str) -> Checkpoint | None:
        if declared is not None:
            return open_checkpoint(declared, follow_links=follow_links)
        # `--base` is a path the user named: its own folder is its boundary.
        return open_checkpoint(Path(base), follow_links=follow_links) if base is not None else None

    checkpoint = open_checkpoint(ref, resolve_base=resolve_base, follow_links=follow_links)
    return _OpenModel(ref, checkpoint, declared.id if declared is not None else None)


def _group_features(
    group: Sequence[tuple[_OpenModel, Checkpoint]],
    layers: str | None,
    ranks: RankRequest,
    relations: Collection[str] = RELATIONS,
) -> tuple[FeatureSet, list[BrokenModel]]:
    """The FeatureSet of one architecture group (``aligned`` checkpoints beside their models)."""
    if len(group) == 1:
        lone = _lone_model(group[0][0])
        lone.metadata[MODEL_SUMMARIES] = {group[0][0].ref.id: checkpoint_summary(group[0][1])}
        return lone, []
    ids = {model.ref.id for model, _ in group}
    known_parents = {
        model.ref.id: model.known_parent
        for model, _ in group
        if model.known_parent is not None and model.known_parent in ids
    }
    metadata: dict[str, object] = {
        "layers": layers,
        "selection": "regex" if layers else "default",
        MODEL_SUMMARIES: {model.ref.id: checkpoint_summary(ckpt) for model, ckpt in group},
    }
    roundings = quantized_sources([ckpt for _, ckpt in group]) if "quantized" in relations else {}
    rest = [member for k, member in enumerate(group) if k not in roundings]
    checkpoints = {model.ref.id: ckpt for model, ckpt in rest}
    failed: list[BrokenModel] = []
    if len(rest) == 1:
        features = _lone_model(rest[0][0])
        features.metadata.update(metadata)
    else:
        tensors = select_tensors([ckpt.tensors for _, ckpt in rest], layers)
        features, failed = _extract(
            [ckpt for _, ckpt in rest], [model.ref.id for model, _ in rest], tensors, ranks, metadata
        )
    features, alias_of = _merge_copies(features, checkpoints) if "duplicate" in relations else (features, {})
    members = [model.ref.id for model, _ in group]
    record_quantized(features, members, [str(ckpt.path) for _, ckpt in group], roundings, alias_of)
    if "pruned" in relations:
        ordered = [checkpoints[model_id] for model_id in features.model_ids]
        features = split_pruned(features, lambda child, source: newly_zeroed(ordered[child], ordered[source]))
    if "merge" in relations:
        record_sparse_merges(features, [checkpoints[model_id] for model_id in features.model_ids])
    known_parents = {alias_of.get(c, c): alias_of.get(p, p) for c, p in known_parents.items()}
    read = set(features.model_ids)
    features.known_parents = {c: p for c, p in known_parents.items() if c in read and p in read and c != p}
    return features, failed


# FeatureSet metadata key: original id -> the ids of its copies (``features.duplicates``).
ALIASES = "aliases"


def _merge_copies(
    features: FeatureSet, checkpoints: dict[str, Checkpoint]
) -> tuple[FeatureSet, dict[str, str]]:
    """``features`` without the copies of other models, each recorded as an alias of its original; and
    copy id -> original id."""
    opened = [checkpoints[model_id] for model_id in features.model_ids]
    return merge_copies(features, lambda i, j: confirmed_by_reading(opened[i], opened[j]))


def merge_copies(
    features: FeatureSet, confirm: Callable[[int, int], bool]
) -> tuple[FeatureSet, dict[str, str]]:
    """``_merge_copies`` with candidates confirmed by ``confirm(i, j)`` (``duplicates.copy_groups``)."""
    groups = copy_groups(features, confirm)
    if not groups:
        return features, {}
    copies = {i for group in groups for i in group[1:]}
    kept = features.subset([i for i in range(features.n_models) if i not in copies])
    aliases = {features.model_ids[group[0]]: [features.model_ids[i] for i in group[1:]] for group in groups}
    kept.metadata[ALIASES] = {**kept.metadata.get(ALIASES, {}), **aliases}
    for original, same in aliases.items():
        LOG.info("`%s` is a copy of `%s`: one model, with an alias", "`, `".join(same), original)
    return kept, {copy: original for original, same in aliases.items() for copy in same}


# FeatureSet metadata key: id of a quantised or pruned copy -> {"parent", "path", "relation", "distance"}:
# models taken out of the tree step, each a leaf under the model it was made from (``features.quantized``,
# ``features.pruned``).
LEAF_COPIES = "leaf_copies"
# A rounding or a pruning is confirmed on every tensor of both models; what is left is a source outside
# the collection that equals this one on every tensor the quantiser left alone (every weight kept).
LEAF_COPY_CONFIDENCE = 0.99


def record_quantized(
    features: FeatureSet,
    ids: Sequence[str],
    paths: Sequence[str],
    roundings: dict[int, Rounding],
    alias_of: dict[str, str],
) -> None:
    """Record under ``LEAF_COPIES`` the quantised copies left out of ``features``, to come back as leaves
    (``roundings`` index ``ids`` and ``paths``: every model of the group)."""
    if not roundings:
        return
    found = {}
    for rounding in roundings.values():
        child, source = ids[rounding.child], ids[rounding.source]
        found[child] = {
            "parent": alias_of.get(source, source),
            "path": paths[rounding.child],
            "relation": "quantized",
            "distance": rounding.distance,
        }
        LOG.info(
            "`%s` is `%s` quantised (relative RMS error %.3f): a leaf under it", child, source, rounding.error
        )
    features.metadata[LEAF_COPIES] = {**features.metadata.get(LEAF_COPIES, {}), **found}


def split_pruned(features: FeatureSet, zeroed_by: Callable[[int, int], int | None]) -> FeatureSet:
    """``features`` without its pruned copies (``features.pruned``, confirmed by ``zeroed_by``, indices into
    ``features``), recorded under ``LEAF_COPIES``."""
    sources = pruned_sources(features, zeroed_by)
    if not sources:
        return features
    distances = features.distances()
    kept = features.subset([i for i in range(features.n_models) if i not in sources])
    found = {
        features.model_ids[child]: {
            "parent": features.model_ids[source],
            "path": features.model_paths[child],
            "relation": "pruned",
            "distance": float(distances[source, child]),
        }
        for child, source in sources.items()
    }
    for child, record in found.items():
        LOG.info("`%s` is `%s` pruned: a leaf under it", child, record["parent"])
    kept.metadata[LEAF_COPIES] = {**kept.metadata.get(LEAF_COPIES, {}), **found}
    return kept


def _attach_leaf_copies(
    features: FeatureSet, trees: list[RecoveredTree], models: list[RecoveredModel], edges: list[Edge]
) -> None:
    """The quantised and pruned copies taken out of the tree step, each back as a leaf under its source."""
    summaries = features.metadata.get(MODEL_SUMMARIES, {})
    aliases = features.metadata.get(ALIASES, {})
    for child, record in features.metadata.get(LEAF_COPIES, {}).items():
        tree = next((k for k, t in enumerate(trees) if record["parent"] in t.models), None)
        if tree is None:  # its source could not be read to the end: the copy is a model of its own
            trees.append(RecoveredTree(root=child, models=[]))
            tree = len(trees) - 1
        else:
            edges.append(
                Edge(
                    record["parent"],
                    child,
                    record["distance"],
                    LEAF_COPY_CONFIDENCE,
                    direction_probability=1.0,
                    relation=record["relation"],
                )
            )
        trees[tree].models.append(child)
        summary = summaries.get(child, {})
        models.append(
            RecoveredModel(
                child,
                record["path"],
                tree,
                summary.get("dtype"),
                summary.get("parameters"),
                tuple(aliases.get(child, ())),
            )
        )


@dataclass(frozen=True)
class _FoundMerge:
    """A merge taken out of the tree step: its model record, and its parents with their weights."""

    model: RecoveredModel
    parents: tuple[tuple[str, float, float], ...]  # (parent id, weight, distance)


# FeatureSet metadata key: the sparse merges read from the weights (``features.sparse_merges``), each
# {"child", "base", "parents": [[id, weight], ...]}; the merges found from distances are not recorded.
SPARSE_MERGES = "sparse_merges"


def record_sparse_merges(features: FeatureSet, checkpoints: Sequence[Readable]) -> None:
    """Record under ``SPARSE_MERGES`` the TIES/DARE merges among ``features``' models, read from
    ``checkpoints`` (in ``features``' order: Checkpoints, or ``SampledModel`` views of fingerprints)."""
    if features.n_models < 4:
        return
    ids = features.model_ids
    found = sparse_merges(checkpoints, features.tensor_names, features.rms_distances)
    features.metadata[SPARSE_MERGES] = [
        {"child": ids[m.child], "base": ids[m.base], "parents": [[ids[p], w] for p, w in m.parents]}
        for m in found
    ]


def split_merges(features: FeatureSet) -> tuple[FeatureSet, list[_FoundMerge]]:
    """``features`` without the models that are merges of two others, and those merges: the sparse ones
    read from the weights (``SPARSE_MERGES``), then those on a segment between two others (``tree.merges``,
    from distances alone).

    A merge left in the tree step would hang between its parents as a parent or a child of one of them;
    taken out, it comes back with an edge from each parent (``_attach_merges``).
    """
    position = {model_id: i for i, model_id in enumerate(features.model_ids)}
    found: list[tuple[int, list[tuple[int, float]], str]] = [
        (position[m["child"]], [(position[p], float(w)) for p, w in m["parents"]], f"onto `{m['base']}`")
        for m in features.metadata.get(SPARSE_MERGES, [])
        if m["child"] in position and all(p in position for p, _ in m["parents"])
    ]
    sparse = {child for child, _, _ in found}
    rest = [i for i in range(features.n_models) if i not in sparse]
    if len(rest) >= 3:
        squared = features.squared_distances()[np.ix_(rest, rest)]
        found += [
            (rest[m.child], [(rest[p], w) for p, w in m.parents], f"{m.residual:.3f} off their span")
            for m in find_merges(squared)
        ]
    if not found:
        return features, []
    distances = features.distances()
    merges = []
    for child, weighted, how in found:
        record = _recovered_model(features, child, -1)
        parents = tuple(
            (features.model_ids[parent], weight, float(distances[parent, child]))
            for parent, weight in sorted(weighted, key=lambda pw: -pw[1])
        )
        merges.append(_FoundMerge(record, parents))
        LOG.info(
            "`%s` is a merge of %s (%s): an edge from each",
            record.id,
            " + ".join(f"`{p}` {w:.2f}" for p, w, _ in parents),
            how,
        )
    children = {child for child, _, _ in found}
    kept = features.subset([i for i in range(features.n_models) if i not in children])
    return kept, merges


# A merge is found from distances alone, on the compared tensors; a pair of models that lies on a segment
# by chance in millions of dimensions is the error this leaves.
MERGE_CONFIDENCE = 0.95


def _attach_merges(
    merges: Sequence[_FoundMerge], trees: list[RecoveredTree], models: list[RecoveredModel], edges: list[Edge]
) -> None:
    """Each merge back in the tree of its heaviest parent, with an edge from every parent."""
    for merge in merges:
        tree = next(k for k, t in enumerate(trees) if merge.parents[0][0] in t.models)
        trees[tree].models.append(merge.model.id)
        models.append(dataclasses.replace(merge.model, tree=tree))
        edges.extend(
            Edge(
                parent,
                merge.model.id,
                distance,
                MERGE_CONFIDENCE,
                direction_probability=1.0,
                relation="merge",
                weight=weight,
            )
            for parent, weight, distance in merge.parents
        )


# FeatureSet metadata key: model id -> what its checkpoint holds (``checkpoint_summary``), for the result.
MODEL_SUMMARIES = "models"


def checkpoint_summary(checkpoint: Checkpoint) -> dict[str, object]:
    """The storage dtype of most of a model's float parameters, and how many float parameters it has
    (from its headers: nothing is read)."""
    return tensors_summary(checkpoint.tensors.values())


def tensors_summary(tensors: Iterable[TensorInfo]) -> dict[str, object]:
    """``checkpoint_summary`` of a model's tensor list."""
    by_dtype: dict[str, int] = {}
    for info in tensors:
        if info.is_float:
            by_dtype[info.dtype] = by_dtype.get(info.dtype, 0) + info.numel
    dtype = max(sorted(by_dtype), key=lambda name: by_dtype[name]) if by_dtype else None
    return {"dtype": dtype, "parameters": sum(by_dtype.values())}


def _extract(
    checkpoints: Sequence[Checkpoint],
    ids: Sequence[str],
    tensors: Sequence[TensorInfo],
    ranks: RankRequest,
    metadata: dict[str, object],
) -> tuple[FeatureSet, list[BrokenModel]]:
    clock = clock_tensors([checkpoint.tensors for checkpoint in checkpoints])
    if ranks != "auto":
        return extract_features(checkpoints, ids, tensors, ranks=ranks, clock=clock, metadata=metadata)
    rule = LowRankRule()
    features, failed = extract_features(
        checkpoints, ids, tensors, ranks="nearest", clock=clock, metadata=metadata
    )
    if features.n_models < 2 or not rule.needs_pair_ranks(features):
        return features, failed
    pairs = rule.pairs_to_rank(features)
    LOG.info("some differences are low-rank (LoRA-like): reading again for the ranks of %d pairs", len(pairs))
    position = {model_id: i for i, model_id in enumerate(ids)}
    kept = [position[model_id] for model_id in features.model_ids]  # the models read completely
    again, more = extract_features(
        [checkpoints[i] for i in kept],
        [ids[i] for i in kept],
        tensors,
        ranks=True,
        rank_pairs=pairs,
        metadata=metadata,
    )
    if not more:  # the same models, in the same order: their clock was read in the first pass
        again.decay_log_factors = features.decay_log_factors
    return again, failed + more


def recover_trees(
    feature_sets: Sequence[FeatureSet],
    *,
    n_trees: TreeCount = "auto",
    lam: float = DEFAULT_LAM,
    direction: Direction = "auto",
    distance: Distance = "auto",
    broken: Sequence[BrokenModel] = (),
    relations: Collection[str] = RELATIONS,
) -> RecoveryResult:
    """Model Trees of several architecture groups; ``broken`` lists the models that could not be read.
    Merges (``relations``) are taken out before the tree step and come back with an edge per parent.

    ``n_trees``: ``"auto"`` splits each group where models are unrelated; an int counts the trees of all
    groups together (each group is at least one); ``None`` makes one tree per group.
    """
    comparable = [f for f in feature_sets if f.n_models > 1]
    counts = dict(zip(map(id, comparable), _tree_counts(feature_sets, comparable, n_trees), strict=True))
    models: list[RecoveredModel] = []
    edges: list[Edge] = []
    trees: list[RecoveredTree] = []
    distances_used: list[str] = []
    for features in feature_sets:
        if features.n_models == 1:
            trees.append(RecoveredTree(root=features.model_ids[0], models=list(features.model_ids)))
            models.append(_recovered_model(features, 0, len(trees) - 1))
            _attach_leaf_copies(features, trees, models, edges)
            continue
        n_trees_here = counts[id(features)]
        features, merges = split_merges(features) if "merge" in relations else (features, [])
        if features.n_models == 1:
            trees.append(RecoveredTree(root=features.model_ids[0], models=list(features.model_ids)))
            models.append(_recovered_model(features, 0, len(trees) - 1))
            _attach_merges(merges, trees, models, edges)
            _attach_leaf_copies(features, trees, models, edges)
            continue
        recovery = TreeRecovery(n_trees=n_trees_here, lam=lam, direction=direction, distance=distance).fit(
            features
        )
        distances_used.append(recovery.distance_)
        first_tree = len(trees)
        for label in range(int(recovery.labels_.max()) + 1):
            members = [recovery.model_ids_[i] for i in np.flatnonzero(recovery.labels_ == label)]
            root = next(r for r in recovery.roots_ if r in members)
            trees.append(RecoveredTree(root=root, models=members, cue=recovery.cues_[label]))
        for index, label in enumerate(recovery.labels_):
            models.append(_recovered_model(features, index, first_tree + int(label)))
        # Known edges are PEFT adapters read on their base (``known_parents``); every other edge is inferred
        # from the weights, a copy is an alias, never an edge, and a quantised copy comes back as a leaf
        # after the tree step: what is left is fine-tuning.
        edges.extend(
            dataclasses.replace(edge, relation="adapter" if edge.known else "finetune")
            for edge in recovery.edges_
        )
        _attach_merges(merges, trees, models, edges)
        _attach_leaf_copies(features, trees, models, edges)
    params = {
        "n_trees": n_trees,
        "lam": lam,
        "direction": direction,
        "distance": distance,
        "distances_used": distances_used,
        "layers": next((f.metadata["layers"] for f in comparable if "layers" in f.metadata), None),
    }
    return RecoveryResult(models=models, edges=edges, trees=trees, broken=list(broken), params=params)


def _recovered_model(features: FeatureSet, index: int, tree: int) -> RecoveredModel:
    model_id = features.model_ids[index]
    # FeatureSet files written before summaries existed have none: the result then says None.
    summary = features.metadata.get(MODEL_SUMMARIES, {}).get(model_id, {})
    return RecoveredModel(
        model_id,
        features.model_paths[index],
        tree,
        summary.get("dtype"),
        summary.get("parameters"),
        tuple(features.metadata.get(ALIASES, {}).get(model_id, ())),
    )


def _tree_counts(
    feature_sets: Sequence[FeatureSet], comparable: Sequence[FeatureSet], n_trees: TreeCount
) -> list[TreeCount]:
    """The ``n_trees`` of each comparable group: a given total is shared out by ``split_counts``."""
    if n_trees is None or n_trees == "auto":
        return [n_trees] * len(comparable)
    lone = len(feature_sets) - len(comparable)
    linkages = [tree_linkage(f.distances()) for f in comparable]
    scales = [float(np.median(f.distances()[np.triu_indices(f.n_models, 1)])) for f in comparable]
    return list(split_counts(linkages, scales, n_trees - lone))


def lone_features(model_id: str, path: str, aliases: Sequence[str] = ()) -> FeatureSet:
    """The features of a model compared with no other (alone in its architecture group): a tree of one."""
    return FeatureSet(
        model_ids=[model_id],
        model_paths=[path],
        tensor_names=[],
        numel=np.zeros(0, dtype=np.int64),
        rms_distances=np.zeros((0, 1, 1)),
        moments=np.zeros((0, 1, 4)),
        metadata={ALIASES: {model_id: list(aliases)}} if aliases else {},
    )


def _lone_model(model: _OpenModel) -> FeatureSet:
    return lone_features(model.ref.id, str(model.checkpoint.path))


def _too_few_message(paths: Sequence[str | Path], n_readable: int, broken: list[BrokenModel]) -> str:
    where = ", ".join(f"`{p}`" for p in paths)
    message = f"found {n_readable} readable model{'s' if n_readable != 1 else ''} in {where}; need at least 2"
    if broken:
        shown = broken[:_LISTED]
        more = f"; and {len(broken) - len(shown)} more" if len(broken) > len(shown) else ""
        reasons = "; ".join(str(model.error) for model in shown)
        message += f". {len(broken)} could not be read: {reasons}{more}"
    return message


# How many unreadable models an error message names (the CLI's skipped list names them all).
_LISTED = 5
