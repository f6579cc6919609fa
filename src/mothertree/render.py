"""Drawing a recovered Model Graph: a terminal tree, Graphviz DOT, or JSON (``RecoveryResult.to_json``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from .pipeline import RecoveryResult


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
    label = {e.child: f"  (d={e.distance:.3g}, confidence {e.confidence:.3f})" for e in result.edges}
    blocks = []
    for k, tree in enumerate(result.trees):
        label[tree.root] = "  (root: no parent in this collection)"
        header = f"tree {k}: {len(tree.models)} model{'s' if len(tree.models) != 1 else ''}"
        if tree.cue:
            header += f", oriented by: {tree.cue}"
        blocks.append("\n".join([header, *draw_tree(tree.root, children, label)]))
    return "\n\n".join(blocks) + "\n"


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
