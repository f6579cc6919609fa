"""The answer of ``mothertree recover``: Model Trees, their edges, and the models that could not be used.

``RecoveryResult.to_json`` is the JSON contract of ``recover --format json`` (README: "JSON output"). Its
``format`` key is the contract's version: it is bumped when a key is removed or changes meaning; keys may
be added without a bump, so readers should ignore the keys they do not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._version import __version__
from .errors import InvalidTruthError
from .io.types import BrokenModel
from .tree.recover import Edge as Edge  # re-exported: the edges of a result

RESULT_FORMAT = 1


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

    ``params`` records the settings that produced it (``n_trees``, ``lam``, ``direction``, ``distance``,
    the distance each architecture group used, ``layers``).
    """

    models: list[RecoveredModel]
    edges: list[Edge]
    trees: list[RecoveredTree]
    broken: list[BrokenModel] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def roots(self) -> list[str]:
        return [tree.root for tree in self.trees]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT,
            "mothertree_version": __version__,
            "models": [{"id": m.id, "path": m.path, "tree": m.tree} for m in self.models],
            "edges": [
                {
                    "parent": e.parent,
                    "child": e.child,
                    "distance": e.distance,
                    "confidence": e.confidence,
                    "known": e.known,
                    "direction_probability": e.direction_probability,
                    "direction": "determined" if e.direction_determined else "undetermined",
                }
                for e in self.edges
            ],
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
        if not isinstance(data, Mapping) or data.get("format") != RESULT_FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise InvalidTruthError(
                f"not a mothertree result of format {RESULT_FORMAT} (format: {found!r})",
                hint="give the output of `mothertree recover --format json` of this version",
            )
        try:
            return cls(
                models=[RecoveredModel(str(m["id"]), str(m["path"]), int(m["tree"])) for m in data["models"]],
                edges=[
                    Edge(
                        str(e["parent"]),
                        str(e["child"]),
                        float(e["distance"]),
                        float(e["confidence"]),
                        bool(e.get("known", False)),
                        float(e.get("direction_probability", 1.0)),
                    )
                    for e in data["edges"]
                ],
                trees=[RecoveredTree(str(t["root"]), list(t["models"]), t.get("cue")) for t in data["trees"]],
                broken=[BrokenModel(Path(s["path"]), ValueError(s["error"])) for s in data["skipped"]],
                params=dict(data["params"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidTruthError(
                f"a mothertree result with a missing or malformed field: {exc}",
                hint="give the output of `mothertree recover --format json`, unedited",
            ) from exc
