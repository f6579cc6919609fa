"""Showing results: a terminal tree, Graphviz DOT, JSON (``RecoveryResult.to_json``), scores, the demo."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping

from .evaluation.metrics import Score
from .evaluation.truth import EdgeSet
from .result import Edge, RecoveryResult


def children_of(edges: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {}
    for parent, child in edges:
        children.setdefault(parent, []).append(child)
    return {parent: sorted(kids) for parent, kids in children.items()}


def draw_tree(
    root: str, children: Mapping[str, list[str]], label: Mapping[str, str] | None = None
) -> list[str]:
    """Lines of a box-drawing tree under ``root``; ``label`` adds text after a model's id."""
    label = label or {}
    lines = [root + label.get(root, "")]

    def walk(node: str, prefix: str) -> None:
        kids = children.get(node, [])
        for k, kid in enumerate(kids):
            last = k == len(kids) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{kid}{label.get(kid, '')}")
            walk(kid, prefix + ("    " if last else "│   "))

    walk(root, "")
    return lines


def to_text(result: RecoveryResult) -> str:
    children = children_of((e.parent, e.child) for e in result.edges)
    label = {
        e.child: f"  (d={e.distance:.3g}, confidence {e.confidence:.3f}{_undetermined(e)})"
        for e in result.edges
    }
    undetermined = {e.child for e in result.edges if not e.direction_determined}
    blocks = []
    for k, tree in enumerate(result.trees):
        label[tree.root] = "  (root: no parent in this collection)"
        header = f"tree {k}: {len(tree.models)} model{'s' if len(tree.models) != 1 else ''}"
        if tree.cue:
            header += f", oriented by: {tree.cue}"
        lines = [header, *draw_tree(tree.root, children, label)]
        ambiguous = [model for model in tree.models if model in undetermined]
        if ambiguous:
            lines.append(
                f"  direction undetermined on {len(ambiguous)} of {len(tree.models) - 1} edges (marked ?): "
                "each marked model is related to the one above it, but the weights do not tell which "
                "of the two came first; the true root may lie at the far end of a marked path"
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _undetermined(edge: Edge) -> str:
    if edge.direction_determined:
        return ""
    return f", ? direction {edge.direction_probability:.2f}"


def to_dot(result: RecoveryResult) -> str:
    lines = ["digraph model_trees {", "  rankdir=TB;", "  node [shape=box];"]
    for k, tree in enumerate(result.trees):
        lines.append(f"  subgraph cluster_{k} {{")
        lines.append(f'    label="tree {k}";')
        lines.extend(f"    {json.dumps(model)};" for model in tree.models)
        lines.append("  }")
    for edge in result.edges:
        lines.append(
            f'  {json.dumps(edge.parent)} -> {json.dumps(edge.child)} [label="{edge.distance:.3g}"];'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_json(result: RecoveryResult) -> str:
    return json.dumps(result.to_json(), indent=2) + "\n"


RENDERERS: dict[str, Callable[[RecoveryResult], str]] = {"text": to_text, "json": to_json, "dot": to_dot}


def score_text(score: Score) -> str:
    """Directed and undirected accuracy, per tree when there are several."""
    lines = [
        f"directed accuracy:   {score.directed:.1%} ({score.n_directed_correct}/{score.n_edges} edges)",
        f"undirected accuracy: {score.undirected:.1%} ({score.n_undirected_correct}/{score.n_edges} edges)",
    ]
    if len(score.per_tree) > 1:
        for tree in score.per_tree:
            lines.append(
                f"  tree of {tree.root}: directed {tree.directed:.1%}, undirected {tree.undirected:.1%}"
            )
    return "\n".join(lines)


def method_scores(scores: Mapping[str, Score]) -> str:
    """One line per direction method: its directed and undirected accuracy."""
    lines = ["every direction method on this graph:"]
    for method, score in scores.items():
        numbers = f"directed {score.directed:6.1%}   undirected {score.undirected:6.1%}"
        lines.append(f"  --direction {method:<6} {numbers}")
    return "\n".join(lines)


def side_by_side(result: RecoveryResult, truth: EdgeSet) -> str:
    """The recovered trees (each edge marked right or wrong) beside the true ones."""
    recovered_edges = {(e.parent, e.child) for e in result.edges}
    marks = {child: "  ✓" if (parent, child) in truth else "  ✗" for parent, child in recovered_edges}
    method = result.params["direction"]
    left = [
        f"recovered (direction={method}"
        + (f", lam={result.params['lam']})" if method in ("falls", "rises") else ")")
    ]
    recovered_children = children_of(recovered_edges)
    for tree in result.trees:
        left += draw_tree(tree.root, recovered_children, marks)
    right = ["truth"]
    true_children = children_of(truth)
    roots = sorted({p for p, _ in truth} - {c for _, c in truth})
    for root in roots:
        right += draw_tree(root, true_children)
    width = max(len(line) for line in left) + 4
    rows = max(len(left), len(right))
    left += [""] * (rows - len(left))
    right += [""] * (rows - len(right))
    return "\n".join(f"{a.ljust(width)}{b}".rstrip() for a, b in zip(left, right, strict=True))
