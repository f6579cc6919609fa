"""The answer of ``mothertree recover``: Model Trees, their edges, and the models that could not be used.

``RecoveryResult.to_json`` is the JSON contract of ``recover --format json`` (README: "JSON output"). Its
``format`` key is the contract's version: it is bumped when a key is removed or changes meaning; keys may
be added without a bump, so readers should ignore the keys they do not know.

A result is also a graph: ``to_networkx`` (a ``DiGraph``), ``mothertree.render`` (GraphML, Newick, figures),
and in Jupyter it shows its HTML report inline (``_repr_html_``, ``mothertree.report``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ._json_files import read_json_file
from ._version import __version__
from .errors import InvalidTruthError, MissingDependencyError
from .io.types import BrokenModel
from .tree.recover import Edge as Edge  # re-exported: the edges of a result

# 2: a merge is a model with several parents (an edge from each, ``relation`` "merge", with its ``weight``),
# so ``edges`` is a DAG, not one parent per child. Format 1 results (always one parent) read as they are.
RESULT_FORMAT = 2
READABLE_FORMATS = (1, 2)
T = TypeVar("T")


@dataclass(frozen=True)
class RecoveredModel:
    """A model of the result: where it was read from, its tree (an index into ``trees``), and what its
    checkpoint holds: the storage dtype of most of its parameters and how many float parameters it has
    (None when not known, e.g. in results of older versions). ``aliases`` are the ids of its copies in the
    collection (identical, or re-saved in a coarser dtype: ``features.duplicates``), which are not models
    of their own in the result."""

    id: str
    path: str
    tree: int
    dtype: str | None = None
    parameters: int | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecoveredTree:
    root: str
    models: list[str]
    cue: str | None = None  # what oriented the tree ("norm grows", "kurtosis falls", ...); None for one model


def model_json(model: RecoveredModel) -> dict[str, Any]:
    """A model as the JSON contract writes it."""
    return {
        "id": model.id,
        "path": model.path,
        "tree": model.tree,
        "dtype": model.dtype,
        "parameters": model.parameters,
        "aliases": list(model.aliases),
    }


def edge_json(edge: Edge) -> dict[str, Any]:
    """An edge as the JSON contract writes it."""
    return {
        "parent": edge.parent,
        "child": edge.child,
        "distance": edge.distance,
        "confidence": edge.confidence,
        "known": edge.known,
        "direction_probability": edge.direction_probability,
        "direction": "determined" if edge.direction_determined else "undetermined",
        "placement_margin": edge.placement_margin,
        "relation": edge.relation,
        "weight": edge.weight,
    }


def model_attributes(model: RecoveredModel, is_root: bool) -> dict[str, Any]:
    """A model as a graph node's attributes (networkx, GraphML): what is known of it, no nulls."""
    attributes = {
        "path": model.path,
        "tree": model.tree,
        "root": is_root,
        "dtype": model.dtype,
        "parameters": model.parameters,
        "aliases": ", ".join(model.aliases) or None,  # GraphML has no list type
    }
    return {key: value for key, value in attributes.items() if value is not None}


def edge_attributes(edge: Edge) -> dict[str, Any]:
    """An edge as a graph edge's attributes: the JSON edge's evidence, without its ends and without nulls."""
    return {k: v for k, v in edge_json(edge).items() if k not in ("parent", "child") and v is not None}


@dataclass
class RecoveryResult:
    """The Model Trees of a collection, and the models that could not be used.

    ``params`` records the settings that produced it (``n_trees``, ``lam``, ``direction``, ``distance``,
    the distance each architecture group used, ``layers``), and ``mothertree_version`` the version that
    produced it: a result read back keeps the version that wrote it.
    """

    models: list[RecoveredModel]
    edges: list[Edge]
    trees: list[RecoveredTree]
    broken: list[BrokenModel] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    mothertree_version: str = __version__

    @property
    def roots(self) -> list[str]:
        return [tree.root for tree in self.trees]

    @property
    def tree_edges(self) -> list[Edge]:
        """One edge per child, what draws each tree: a merge hangs from the parent of its largest weight
        (its other edges are in ``edges``, as every view that can draw a DAG shows them)."""
        primary: dict[str, Edge] = {}
        for edge in self.edges:
            held = primary.get(edge.child)
            if held is None or (edge.weight or 0.0) > (held.weight or 0.0):
                primary[edge.child] = edge
        return [edge for edge in self.edges if primary[edge.child] is edge]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT,
            "mothertree_version": self.mothertree_version,
            "models": [model_json(m) for m in self.models],
            "edges": [edge_json(e) for e in self.edges],
            "roots": self.roots,
            "trees": [{"root": t.root, "models": t.models, "cue": t.cue} for t in self.trees],
            "skipped": [{"path": str(b.path), "error": str(b.error)} for b in self.broken],
            "params": self.params,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RecoveryResult:
        """Read back what ``to_json`` wrote (skipped models keep their path and message, not their type).

        Raises:
            InvalidTruthError: ``data`` is not a result of this format.
        """
        if not isinstance(data, Mapping) or data.get("format") not in READABLE_FORMATS:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise InvalidTruthError(
                f"not a mothertree result of format {RESULT_FORMAT} (format: {found!r})",
                hint="give the output of `mothertree recover --format json` of this version",
            )
        try:
            return cls(
                models=[
                    RecoveredModel(
                        str(m["id"]),
                        str(m["path"]),
                        int(m["tree"]),
                        _optional(m.get("dtype"), str),
                        _optional(m.get("parameters"), int),
                        tuple(str(alias) for alias in m.get("aliases", ())),
                    )
                    for m in data["models"]
                ],
                edges=[
                    Edge(
                        str(e["parent"]),
                        str(e["child"]),
                        float(e["distance"]),
                        float(e["confidence"]),
                        bool(e.get("known", False)),
                        float(e.get("direction_probability", 1.0)),
                        _optional(e.get("placement_margin"), float),
                        _optional(e.get("relation"), str),
                        _optional(e.get("weight"), float),
                    )
                    for e in data["edges"]
                ],
                trees=[RecoveredTree(str(t["root"]), list(t["models"]), t.get("cue")) for t in data["trees"]],
                broken=[BrokenModel(Path(s["path"]), ValueError(s["error"])) for s in data["skipped"]],
                params=dict(data["params"]),
                mothertree_version=str(data.get("mothertree_version", "unknown")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidTruthError(
                f"a mothertree result with a missing or malformed field: {exc}",
                hint="give the output of `mothertree recover --format json`, unedited",
            ) from exc

    @classmethod
    def load(cls, path: str | Path) -> RecoveryResult:
        """Read a result file written by ``mothertree recover --format json``.

        Raises:
            CheckpointNotFoundError: there is no file at ``path``.
            InvalidTruthError: the file is not JSON, or not a result of this format.
        """
        data = read_json_file(
            Path(path), missing_hint="give the output of `mothertree recover --format json`"
        )
        return cls.from_json(data)

    def to_networkx(self) -> Any:
        """The trees as one ``networkx.DiGraph``, parent -> child.

        Nodes carry ``path``, ``tree``, ``root`` (no parent in this collection) and, where known, ``dtype``
        and ``parameters``; edges carry the keys of the JSON edges (``distance``, ``confidence``, ``known``,
        ``direction_probability``, ``direction``, ``placement_margin``), none of them null;
        the graph carries ``params`` and ``mothertree_version``. Models in no edge (a tree of one) are nodes.
        """
        try:
            import networkx as nx
        except ImportError as exc:
            raise MissingDependencyError(
                f"`to_networkx` needs networkx: {exc}", hint="pip install networkx"
            ) from exc
        graph = nx.DiGraph(params=dict(self.params), mothertree_version=self.mothertree_version)
        roots = set(self.roots)
        for model in self.models:
            graph.add_node(model.id, **model_attributes(model, model.id in roots))
        for edge in self.edges:
            graph.add_edge(edge.parent, edge.child, **edge_attributes(edge))
        return graph

    def _repr_html_(self) -> str:
        """Jupyter's inline view: the HTML report (``mothertree.report.to_html``) in a sandboxed frame.

        A frame keeps the report's styles and script apart from the notebook's.
        """
        from .report import inline_frame  # report imports this module: imported when first shown

        return inline_frame(self)


def _optional(value: Any, kind: Callable[[Any], T]) -> T | None:
    """A key that results of older versions lack (or hold as null)."""
    return None if value is None else kind(value)
