"""Ground truth: which model was really fine-tuned from which, from a JSON file or from model cards."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._json_files import read_json_file
from ..errors import InvalidTruthError
from ..io import discover

EdgeSet = set[tuple[str, str]]


def load_edges(path: str | Path) -> EdgeSet:
    """``(parent, child)`` pairs from a truth file or a ``mothertree recover --format json`` result.

    Both hold ``{"edges": [{"parent": ID, "child": ID}, ...]}``; other keys are ignored.
    """
    data = read_json_file(Path(path), missing_hint="give the path of a JSON file")
    return edges_from_json(data, source=str(path))


def edges_from_json(data: Any, *, source: str = "truth") -> EdgeSet:
    if not isinstance(data, Mapping) or not isinstance(data.get("edges"), list):
        raise InvalidTruthError(f"`{source}` has no `edges` list")
    edges: EdgeSet = set()
    for k, edge in enumerate(data["edges"]):
        if not isinstance(edge, Mapping) or "parent" not in edge or "child" not in edge:
            raise InvalidTruthError(f"`{source}`: edge {k} needs `parent` and `child`, got {edge!r}")
        edges.add((str(edge["parent"]), str(edge["child"])))
    return edges


def edges_from_model_cards(declared: Mapping[str, Sequence[str]], model_ids: Iterable[str]) -> EdgeSet:
    """Edges declared by model cards (``base_model`` front matter), kept where the base is in the collection.

    A declared name matches a model whose id equals it, or equals its last path component
    (``org/name`` matches a model ``name``).
    """
    ids = set(model_ids)
    by_last_part = {i.rsplit("/", 1)[-1]: i for i in ids}
    edges: EdgeSet = set()
    for child, bases in declared.items():
        for base in bases:
            parent = base if base in ids else by_last_part.get(base.rsplit("/", 1)[-1])
            if parent is not None and parent != child:
                edges.add((parent, child))
    return edges


def declared_edges(folder: str | Path) -> EdgeSet:
    """Edges that the model cards under ``folder`` declare, between models found there.

    Raises:
        InvalidTruthError: no model card there declares a base model of the folder.
    """
    refs, _ = discover(Path(folder))
    edges = edges_from_model_cards(
        {ref.id: ref.declared_base_models for ref in refs}, [ref.id for ref in refs]
    )
    if not edges:
        raise InvalidTruthError(
            f"no model card under `{folder}` declares a `base_model` that is in the folder",
            hint='give a truth file instead: {"edges": [{"parent": ID, "child": ID}]}',
        )
    return edges
