"""Scores of a recovered Model Graph whose truth has typed relations (a zoo ``truth.json`` with ``relation``
per edge): placement, direction and relation of every edge.

A duplicate is not an edge of the result but an alias: a true ``duplicate`` edge is right when the result
holds its two ends as one model (either may be the one named, the other its alias). Every other true edge
is right when the result has it, parent -> child, once each side is named by its model (an alias by the
model it is an alias of); its relation is right when the recovered edge also has the true relation. A
model's true copies share its identity, so an edge from a copy that the result chose to name counts as
from the original.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import InvalidTruthError
from .metrics import chance_of_at_least

__all__ = ["FOUND", "RELATIONS", "RecoveredGraph", "RelationScore", "score_relations"]

RELATIONS = ("finetune", "adapter", "duplicate", "quantized", "pruned", "merge")
# What the result can say of a true edge, beside a relation: the edge reversed, the child hung elsewhere.
FOUND = (*RELATIONS, "reversed", "misplaced")
# Copies that must never stand as roots.
_LEAF_RELATIONS = ("duplicate", "quantized", "pruned")


class RecoveredEdge(Protocol):
    @property
    def parent(self) -> str: ...
    @property
    def child(self) -> str: ...
    @property
    def confidence(self) -> float: ...
    @property
    def relation(self) -> str | None: ...


class _Model(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def aliases(self) -> tuple[str, ...]: ...


class RecoveredGraph(Protocol):
    """What is scored of a result (a ``RecoveryResult`` is one): its models, edges and roots."""

    @property
    def models(self) -> Sequence[_Model]: ...
    @property
    def edges(self) -> Sequence[RecoveredEdge]: ...
    @property
    def roots(self) -> list[str]: ...


@dataclass(frozen=True)
class RelationScore:
    """How a result matches a truth with relations.

    Attributes:
        n_edges: true edges (a merge counts one per parent; a duplicate one).
        n_directed_correct: true edges the result has, placement and direction (a duplicate: as an alias).
        n_relation_correct: of those, the ones whose recovered relation is the true one.
        confusion: ``(true relation, found)`` -> count, ``found`` one of ``FOUND``.
        copies_as_roots: roots of the result that are a quantised, pruned or duplicate copy (a duplicate
            named in place of its original is not one: the two are one model).
        wrong_edges: recovered edges that no true edge explains (a copy under its original, as a
            fine-tune, is placed right: its relation is what is wrong).
        confident_wrong: of them, those with confidence above 0.99.
        expected_wrong: the sum of 1 - confidence over the recovered edges.
        chance_of_as_many_wrong: the probability, under the confidences, of ``wrong_edges`` or more wrong
            edges (``metrics.chance_of_at_least``): 1.0 when none is wrong.
    """

    n_edges: int
    n_directed_correct: int
    n_relation_correct: int
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)
    copies_as_roots: int = 0
    wrong_edges: int = 0
    confident_wrong: int = 0
    expected_wrong: float = 0.0
    chance_of_as_many_wrong: float = 1.0

    @property
    def directed(self) -> float:
        return self.n_directed_correct / self.n_edges if self.n_edges else 1.0

    @property
    def relations(self) -> float:
        return self.n_relation_correct / self.n_edges if self.n_edges else 1.0

    def of(self, relation: str) -> tuple[int, int]:
        """(right, total) for the true edges of ``relation``."""
        total = sum(n for (true, _), n in self.confusion.items() if true == relation)
        return self.confusion[(relation, relation)], total


def score_relations(result: RecoveredGraph, truth: Mapping[str, Any]) -> RelationScore:
    """Score ``result`` against a ``truth.json`` whose edges carry ``relation`` (missing: ``finetune``)."""
    true_edges = _true_edges(truth)
    original = _originals(true_edges)
    named = {alias: model.id for model in result.models for alias in (model.id, *model.aliases)}

    def identity(model_id: str) -> str:
        return original.get(model_id, model_id)

    # By identity (a copy named in place of its original is the original); as named, for the copies.
    found: dict[tuple[str, str], str] = {}
    as_named: dict[tuple[str, str], str] = {}
    for edge in result.edges:
        found[(identity(edge.parent), identity(edge.child))] = edge.relation or "finetune"
        as_named[(edge.parent, edge.child)] = edge.relation or "finetune"
    confusion: Counter[tuple[str, str]] = Counter()
    for parent, child, relation in true_edges:
        if relation == "duplicate":
            together = named.get(parent, parent) == named.get(child, child) and parent in named
            said = "duplicate" if together else _said(as_named, parent, child)
        else:
            said = _said(found, identity(parent), identity(child))
        confusion[(relation, said)] += 1
    wrong = _wrong_edges(result, true_edges, identity)
    leaves = {c for _, c, r in true_edges if r in ("quantized", "pruned")}
    bad_roots = sum(
        1
        for root in result.roots
        if root in leaves or (root in original and original[root] not in _group(result, root))
    )
    directed = sum(n for (_, said), n in confusion.items() if said not in ("reversed", "misplaced"))
    return RelationScore(
        n_edges=len(true_edges),
        n_directed_correct=directed,
        n_relation_correct=sum(n for (true, said), n in confusion.items() if true == said),
        confusion=confusion,
        copies_as_roots=bad_roots,
        wrong_edges=len(wrong),
        confident_wrong=sum(e.confidence > 0.99 for e in wrong),
        expected_wrong=float(sum(1.0 - e.confidence for e in result.edges)),
        chance_of_as_many_wrong=chance_of_at_least([e.confidence for e in result.edges], len(wrong)),
    )


def wrong_edges(result: RecoveredGraph, truth: Mapping[str, Any]) -> list[RecoveredEdge]:
    """The recovered edges of ``result`` that no true edge explains (``RelationScore.wrong_edges``)."""
    true_edges = _true_edges(truth)
    original = _originals(true_edges)
    return _wrong_edges(result, true_edges, lambda model_id: original.get(model_id, model_id))


def _wrong_edges(
    result: RecoveredGraph, true_edges: list[tuple[str, str, str]], identity: Callable[[str], str]
) -> list[RecoveredEdge]:
    # A copy hung under its original as a fine-tune is placed right, its relation wrong: not a wrong edge.
    true_pairs = {(identity(p), identity(c)) for p, c, r in true_edges if r != "duplicate"}
    copies = {(p, c) for p, c, r in true_edges if r == "duplicate"}
    return [
        e
        for e in result.edges
        if (identity(e.parent), identity(e.child)) not in true_pairs and (e.parent, e.child) not in copies
    ]


def _true_edges(truth: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    edges = truth.get("edges") if isinstance(truth, Mapping) else None
    if not isinstance(edges, list):
        raise InvalidTruthError("the truth has no `edges` list")
    out = []
    for k, edge in enumerate(edges):
        if not isinstance(edge, Mapping) or "parent" not in edge or "child" not in edge:
            raise InvalidTruthError(f"truth edge {k} needs `parent` and `child`, got {edge!r}")
        relation = str(edge.get("relation") or "finetune")
        if relation not in RELATIONS:
            raise InvalidTruthError(f"truth edge {k}: unknown relation {relation!r}")
        out.append((str(edge["parent"]), str(edge["child"]), relation))
    return out


def _originals(edges: list[tuple[str, str, str]]) -> dict[str, str]:
    """Each true copy's original (a copy of a copy: the first original)."""
    parent_of = {c: p for p, c, r in edges if r == "duplicate"}
    original = {}
    for copy in parent_of:
        source = parent_of[copy]
        while source in parent_of:
            source = parent_of[source]
        original[copy] = source
    return original


def _said(found: Mapping[tuple[str, str], str], parent: str, child: str) -> str:
    if (parent, child) in found:
        return found[(parent, child)]
    return "reversed" if (child, parent) in found else "misplaced"


def _group(result: RecoveredGraph, model_id: str) -> set[str]:
    for model in result.models:
        if model_id == model.id or model_id in model.aliases:
            return {model.id, *model.aliases}
    return {model_id}
