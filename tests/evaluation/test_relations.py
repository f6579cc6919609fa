"""``score_relations``: worked examples with known answers (hand-written results and truths, no weights)."""

from __future__ import annotations

import pytest

from mothertree.errors import InvalidTruthError
from mothertree.evaluation.relations import score_relations
from mothertree.result import Edge, RecoveredModel, RecoveredTree, RecoveryResult

# root -> a -> a1; root -> b; copy is root's duplicate; q quantises a; m merges a1 and b.
TRUTH = {
    "edges": [
        {"parent": "root", "child": "a", "relation": "finetune"},
        {"parent": "a", "child": "a1", "relation": "finetune"},
        {"parent": "root", "child": "b"},  # no relation: a fine-tune (truths of older builds)
        {"parent": "root", "child": "copy", "relation": "duplicate"},
        {"parent": "a", "child": "q", "relation": "quantized"},
        {"parent": "a1", "child": "m", "relation": "merge", "weight": 0.6},
        {"parent": "b", "child": "m", "relation": "merge", "weight": 0.4},
    ]
}


def result(edges: list[Edge], aliases: dict[str, tuple[str, ...]], root: str) -> RecoveryResult:
    named = {m for e in edges for m in (e.parent, e.child)} | {root}
    models = [RecoveredModel(m, f"/{m}", 0, aliases=aliases.get(m, ())) for m in sorted(named)]
    return RecoveryResult(models, edges, [RecoveredTree(root, sorted(named))])


def edge(parent: str, child: str, relation: str = "finetune", confidence: float = 0.9) -> Edge:
    return Edge(parent, child, 0.1, confidence, relation=relation)


RIGHT = [
    edge("root", "a"),
    edge("a", "a1"),
    edge("root", "b"),
    edge("a", "q", "quantized"),
    edge("a1", "m", "merge"),
    edge("b", "m", "merge"),
]


def test_all_right_with_the_copy_as_an_alias() -> None:
    score = score_relations(result(RIGHT, {"root": ("copy",)}, "root"), TRUTH)
    assert (score.n_edges, score.n_directed_correct, score.n_relation_correct) == (7, 7, 7)
    assert score.wrong_edges == score.copies_as_roots == score.confident_wrong == 0
    assert score.of("merge") == (2, 2)
    assert score.expected_wrong == pytest.approx(0.6)


def test_the_copy_may_be_the_one_named() -> None:
    renamed = [
        Edge("copy" if e.parent == "root" else e.parent, e.child, 0.1, 0.9, relation=e.relation)
        for e in RIGHT
    ]
    score = score_relations(result(renamed, {"copy": ("root",)}, "copy"), TRUTH)
    assert score.n_directed_correct == 7 and score.copies_as_roots == 0


def test_reversed_misplaced_and_wrong_relation_are_told_apart() -> None:
    edges = [
        edge("a", "root"),  # reversed
        edge("b", "a1"),  # misplaced
        edge("root", "b"),
        edge("a", "q", "finetune"),  # placed right, relation wrong
        edge("a1", "m", "merge"),
        edge("b", "m", "merge"),
        edge("root", "copy", "finetune", confidence=0.995),  # a copy made a child
        edge("b", "copy", "finetune", confidence=0.995),  # and a child of another: wrong
    ]
    score = score_relations(result(edges, {}, "a"), TRUTH)
    assert score.confusion[("finetune", "reversed")] == 1
    assert score.confusion[("finetune", "misplaced")] == 1
    assert score.confusion[("quantized", "finetune")] == 1
    assert score.confusion[("duplicate", "finetune")] == 1
    # Wrong edges: the reversed one, the misplaced one and b -> copy; the copy under its original is
    # placed right (its relation is wrong).
    assert score.n_directed_correct == 5 and score.n_relation_correct == 3
    assert score.wrong_edges == 3 and score.confident_wrong == 1


def test_a_quantised_root_is_counted() -> None:
    edges = [edge("q", "a", "finetune"), *RIGHT[:3], *RIGHT[4:]]
    assert score_relations(result(edges, {"root": ("copy",)}, "q"), TRUTH).copies_as_roots == 1
    # A copy that stands as a root apart from its original is one too.
    alone = score_relations(result(RIGHT, {}, "copy"), TRUTH)
    assert alone.copies_as_roots == 1 and alone.confusion[("duplicate", "misplaced")] == 1


def test_a_truth_without_edges_or_with_an_unknown_relation_is_refused() -> None:
    with pytest.raises(InvalidTruthError):
        score_relations(result(RIGHT, {}, "root"), {"models": {}})
    with pytest.raises(InvalidTruthError, match="relation"):
        score_relations(
            result(RIGHT, {}, "root"), {"edges": [{"parent": "a", "child": "b", "relation": "x"}]}
        )
