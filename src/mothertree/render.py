"""Showing results: a terminal tree, JSON (``RecoveryResult.to_json``), the HTML report, Graphviz DOT and
its SVG and PNG figures, GraphML, Newick; and scores and the demo's side-by-side view.

``RENDERERS`` write text, ``BINARY_RENDERERS`` bytes; ``recover --format`` and ``report`` offer both.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from xml.etree import ElementTree

from .errors import GraphvizFailedError, GraphvizNotFoundError
from .evaluation.metrics import Score
from .evaluation.truth import EdgeSet
from .report import confidence_colour, to_html
from .result import Edge, RecoveryResult, edge_attributes, model_attributes


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
    children = children_of((e.parent, e.child) for e in result.tree_edges)
    label = {
        e.child: f"  ({_relation(e)}d={e.distance:.3g}, confidence {e.confidence:.3f}{_undetermined(e)})"
        for e in result.tree_edges
    }
    for child, parents in _merged_from(result).items():
        label[child] = (
            f"  (merge of {' + '.join(parents)}, confidence {_merge_confidence(result, child):.3f})"
        )
    undetermined = {e.child for e in result.edges if not e.direction_determined}
    for tree in result.trees:
        label[tree.root] = "  (root: no parent in this collection)"
    for model in result.models:
        if model.aliases:  # copies are one model: said after its id, before its evidence
            label[model.id] = f" (= {', '.join(model.aliases)})" + label.get(model.id, "")
    blocks = []
    for k, tree in enumerate(result.trees):
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


def _merged_from(result: RecoveryResult) -> dict[str, list[str]]:
    """Merge child -> its parents with their weights (``"a 0.60"``), heaviest first."""
    merged: dict[str, list[tuple[float, str]]] = {}
    for edge in result.edges:
        if edge.relation == "merge":
            merged.setdefault(edge.child, []).append((edge.weight or 0.0, edge.parent))
    return {
        child: [f"{p} {w:.2f}" for w, p in sorted(found, reverse=True)] for child, found in merged.items()
    }


def _merge_confidence(result: RecoveryResult, child: str) -> float:
    return min(edge.confidence for edge in result.edges if edge.child == child)


def _relation(edge: Edge) -> str:
    # Fine-tuning is what an edge is unless said otherwise; only the other relations are named.
    return f"{edge.relation}, " if edge.relation not in (None, "finetune") else ""


def _undetermined(edge: Edge) -> str:
    if edge.direction_determined:
        return ""
    return f", ? direction {edge.direction_probability:.2f}"


def to_dot(result: RecoveryResult) -> str:
    """Graphviz DOT: one cluster per tree, edges coloured by confidence (the HTML report's bands), dashed
    where the direction is undetermined, labelled with distance and confidence."""
    lines = ["digraph model_trees {", "  rankdir=TB;", '  node [shape=box, fontname="Helvetica"];']
    lines.append('  edge [fontname="Helvetica", fontsize=9];')
    for k, tree in enumerate(result.trees):
        lines.append(f"  subgraph cluster_{k} {{")
        label = f"tree {k}" + (f", oriented by: {tree.cue}" if tree.cue else "")
        lines.append(f"    label={json.dumps(label)};")
        for model in tree.models:
            if model == tree.root:
                root_label = json.dumps(f"{model}\nno parent in this collection")
                lines.append(f"    {json.dumps(model)} [label={root_label}, penwidth=2];")
            else:
                lines.append(f"    {json.dumps(model)};")
        lines.append("  }")
    for edge in result.edges:
        style = "" if edge.direction_determined else ", style=dashed"
        label = f"{edge.distance:.3g}, c {edge.confidence:.2f}" + ("" if edge.direction_determined else " ?")
        lines.append(
            f"  {json.dumps(edge.parent)} -> {json.dumps(edge.child)} "
            f'[label="{label}", color="{confidence_colour(edge.confidence)}"{style}];'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _graphviz(dot: str, fmt: str) -> bytes:
    """``dot -T<fmt>`` of a DOT text."""
    program = shutil.which("dot")
    if program is None:
        raise GraphvizNotFoundError(f"`--format {fmt}` is laid out by Graphviz's `dot`, which is not on PATH")
    done = subprocess.run([program, f"-T{fmt}"], input=dot.encode(), capture_output=True, check=False)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()
        raise GraphvizFailedError(f"`dot -T{fmt}` failed (exit code {done.returncode}): {message}")
    return done.stdout


def to_svg(result: RecoveryResult) -> str:
    """The DOT drawing laid out by Graphviz as SVG (needs the `dot` program)."""
    return _graphviz(to_dot(result), "svg").decode()


def to_png(result: RecoveryResult) -> bytes:
    """The DOT drawing laid out by Graphviz as PNG (needs the `dot` program)."""
    return _graphviz(to_dot(result), "png")


_GRAPHML = "{http://graphml.graphdrawing.org/xmlns}"
_GRAPHML_TYPES = {bool: "boolean", int: "int", float: "double", str: "string"}


def _graphml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)  # repr: floats read back bit for bit


def to_graphml(result: RecoveryResult) -> str:
    """GraphML (Gephi, yEd, networkx, igraph): every model a node with ``label``, ``path``, ``tree``,
    ``root`` (and ``dtype``, ``parameters`` where known); every edge parent -> child with the JSON edge's
    fields. A key is declared for every attribute any element has, typed by its first value."""
    roots = set(result.roots)
    nodes = [({"id": m.id}, {"label": m.id, **model_attributes(m, m.id in roots)}) for m in result.models]
    edges = [({"source": e.parent, "target": e.child}, edge_attributes(e)) for e in result.edges]
    ElementTree.register_namespace("", _GRAPHML[1:-1])
    graphml = ElementTree.Element(f"{_GRAPHML}graphml")
    for kind, elements in (("node", nodes), ("edge", edges)):
        declared: dict[str, object] = {}
        for _, values in elements:
            for name, value in values.items():
                declared.setdefault(name, value)
        for name, value in declared.items():
            key = {
                "id": f"{kind}_{name}",
                "for": kind,
                "attr.name": name,
                "attr.type": _GRAPHML_TYPES[type(value)],
            }
            ElementTree.SubElement(graphml, f"{_GRAPHML}key", key)
    graph = ElementTree.SubElement(
        graphml, f"{_GRAPHML}graph", {"id": "model_trees", "edgedefault": "directed"}
    )
    for kind, elements in (("node", nodes), ("edge", edges)):
        for attributes, values in elements:
            element = ElementTree.SubElement(graph, f"{_GRAPHML}{kind}", attributes)
            for name, value in values.items():
                data = ElementTree.SubElement(element, f"{_GRAPHML}data", {"key": f"{kind}_{name}"})
                data.text = _graphml_value(value)
    ElementTree.indent(graphml)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(graphml, encoding="unicode") + "\n"
    )


# Newick leaves a label unquoted only when it holds none of its punctuation, no blank and no underscore
# (which readers turn into a blank); any other label is quoted, with its quotes doubled.
_NEWICK_PLAIN = re.compile(r"[A-Za-z0-9.\-]+")


def _newick_label(model_id: str) -> str:
    if _NEWICK_PLAIN.fullmatch(model_id):
        return model_id
    return "'" + model_id.replace("'", "''") + "'"


def to_newick(result: RecoveryResult) -> str:
    """One Newick string per tree, a line each: every model a named node, branch lengths the distances.
    Newick draws trees: a merge is under the parent of its largest weight only."""
    children = children_of((e.parent, e.child) for e in result.tree_edges)
    length = {e.child: e.distance for e in result.tree_edges}
    lines = []
    for tree in result.trees:
        # Children before their parent, without recursion: a chain may be deeper than Python's stack.
        written: dict[str, str] = {}
        stack = [(tree.root, False)]
        while stack:
            node, kids_done = stack.pop()
            kids = children.get(node, [])
            if kids and not kids_done:
                stack.append((node, True))
                stack.extend((kid, False) for kid in kids)
                continue
            text = _newick_label(node)
            if kids:
                text = "(" + ",".join(written.pop(kid) for kid in kids) + ")" + text
            if node in length:
                text += f":{length[node]!r}"
            written[node] = text
        lines.append(written[tree.root] + ";")
    return "\n".join(lines) + "\n"


def to_json(result: RecoveryResult) -> str:
    return json.dumps(result.to_json(), indent=2) + "\n"


RENDERERS: dict[str, Callable[[RecoveryResult], str]] = {
    "text": to_text,
    "json": to_json,
    "html": to_html,
    "dot": to_dot,
    "svg": to_svg,
    "graphml": to_graphml,
    "newick": to_newick,
}
BINARY_RENDERERS: dict[str, Callable[[RecoveryResult], bytes]] = {"png": to_png}


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
