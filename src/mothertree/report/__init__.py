"""The HTML report of a result: one self-contained page that draws every Model Tree.

``to_html(result, truth)`` writes one file that needs nothing at view time: its style and its script
(``page.css``, ``page.js``, written for this page) are inlined, the result travels inside it as JSON, and
a Content-Security-Policy forbids the page any request. The script lays the trees out top-down when the
page opens and again when a subtree is collapsed (a subtree's width is the sum of its children's, a parent
sits over its first and last child), so a collapsed subtree gives its room back.

What the page shows of an edge or a model is what the result holds (``RecoveryResult.to_json``), plus any
field a newer ``Edge`` or ``RecoveredModel`` carries (a ``relation`` styles its edge); nothing is derived
that the result does not say, except the truth overlay, which ``edge_status`` computes.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
from importlib.resources import files
from typing import Any

from ..evaluation.metrics import score_edges
from ..evaluation.truth import EdgeSet
from ..result import Edge, RecoveryResult, edge_json, model_json

# (lowest confidence, colour, legend): the bands edges are coloured by, here and in the DOT figures. A
# colour-blind-safe diverging scale: blue is sure, orange to red is doubtful.
CONFIDENCE_BANDS: tuple[tuple[float, str, str], ...] = (
    (0.99, "#2166ac", "≥ 0.99"),
    (0.9, "#67a9cf", "0.90–0.99"),
    (0.75, "#b8a04a", "0.75–0.90"),
    (0.5, "#ef8a62", "0.50–0.75"),
    (0.0, "#b2182b", "< 0.50"),
)

EdgeStatus = str  # "right" | "reversed" | "misplaced"


def confidence_colour(confidence: float) -> str:
    return next(colour for low, colour, _ in CONFIDENCE_BANDS if confidence >= low)


def edge_status(edges: list[Edge], truth: EdgeSet) -> dict[tuple[str, str], EdgeStatus]:
    """Each recovered edge against the truth: ``right`` (that parent -> child is true), ``reversed`` (the
    true edge points the other way) or ``misplaced`` (the two models are not parent and child)."""
    status = {}
    for edge in edges:
        pair = (edge.parent, edge.child)
        if pair in truth:
            status[pair] = "right"
        elif (edge.child, edge.parent) in truth:
            status[pair] = "reversed"
        else:
            status[pair] = "misplaced"
    return status


def missing_edges(edges: list[Edge], truth: EdgeSet) -> list[tuple[str, str]]:
    """True edges between two models the result does not join, in either direction."""
    joined = {frozenset((e.parent, e.child)) for e in edges}
    return sorted(pair for pair in truth if frozenset(pair) not in joined)


def report_data(result: RecoveryResult, truth: EdgeSet | None = None) -> dict[str, Any]:
    """What the page's script reads: the result's JSON, each edge's truth status, missing edges, scores."""
    status = edge_status(result.edges, truth) if truth is not None else {}
    edges = []
    for edge in result.edges:
        # Fields a newer Edge carries (a relation, ...) come along; the contract's keys take precedence.
        record = {**dataclasses.asdict(edge), **edge_json(edge)}
        if truth is not None:
            record["truth"] = status[(edge.parent, edge.child)]
        edges.append(record)
    data: dict[str, Any] = {
        "mothertree_version": result.mothertree_version,
        "params": result.params,
        "models": [{**dataclasses.asdict(model), **model_json(model)} for model in result.models],
        "edges": edges,
        "trees": [{"root": t.root, "models": t.models, "cue": t.cue} for t in result.trees],
        "skipped": [{"path": str(b.path), "error": str(b.error)} for b in result.broken],
        "bands": [{"low": low, "colour": colour, "label": label} for low, colour, label in CONFIDENCE_BANDS],
        "truth": None,
    }
    if truth is not None:
        score = score_edges({(e.parent, e.child) for e in result.edges}, truth)
        true_parent = {child: parent for parent, child in truth}
        data["truth"] = {
            "score": score.to_dict(),
            "n_directed_correct": score.n_directed_correct,
            "n_undirected_correct": score.n_undirected_correct,
            "missing": [list(pair) for pair in missing_edges(result.edges, truth)],
            "parent": {model.id: true_parent.get(model.id) for model in result.models},
        }
    return data


def _asset(name: str) -> str:
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


def to_html(result: RecoveryResult, truth: EdgeSet | None = None, *, title: str = "Model Trees") -> str:
    """The report page of ``result``; with ``truth``, each edge marked right / reversed / misplaced."""
    # JSON never holds "<" outside its strings, and inside them "\u003c" is the same character: so no
    # model id can close the script element that carries the data.
    payload = json.dumps(report_data(result, truth), separators=(",", ":")).replace("<", "\\u003c")
    parts = {
        "title": html.escape(title),
        "style": _asset("page.css"),
        "data": payload,
        "script": _asset("page.js"),
    }
    # One pass: text put in (a model id, the script) is never searched for markers again.
    return re.sub(r"\{\{(\w+)\}\}", lambda marker: parts[marker.group(1)], _asset("page.html"))


def inline_frame(result: RecoveryResult, *, height: int = 640) -> str:
    """The report inside a sandboxed ``<iframe srcdoc>``: for Jupyter, where a page's own styles and
    script would otherwise mix with the notebook's."""
    page = html.escape(to_html(result), quote=True)
    return (
        f'<iframe srcdoc="{page}" sandbox="allow-scripts" title="mothertree report" '
        f'style="width: 100%; height: {height}px; border: 1px solid #ccc"></iframe>'
    )
