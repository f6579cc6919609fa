"""The result JSON contract (`recover --format json`): its keys, their types, its version, a round trip.

A hand-made result (no weights): this is the contract, not recovery.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mothertree
from mothertree.errors import InvalidTruthError
from mothertree.io.types import BrokenModel
from mothertree.result import RESULT_FORMAT, RecoveredModel, RecoveredTree, RecoveryResult
from mothertree.tree.recover import Edge

SCHEMA = {
    "format": int,
    "mothertree_version": str,
    "models": [
        {
            "id": str,
            "path": str,
            "tree": int,
            "dtype": (str, type(None)),
            "parameters": (int, type(None)),
            "aliases": [str],
        }
    ],
    "edges": [
        {
            "parent": str,
            "child": str,
            "distance": float,
            "confidence": float,
            "known": bool,
            "direction_probability": float,
            "direction": str,
            "placement_margin": (float, type(None)),
            "relation": (str, type(None)),
            "weight": (float, type(None)),
        }
    ],
    "roots": [str],
    "trees": [{"root": str, "models": [str], "cue": (str, type(None))}],
    "skipped": [{"path": str, "error": str}],
    "params": dict,
}


def conforms(value: object, schema: object) -> bool:
    """Whether ``value`` has exactly the keys and types ``schema`` lists (a list: each item's schema)."""
    if isinstance(schema, dict):
        return (
            isinstance(value, dict)
            and set(value) == set(schema)
            and all(conforms(value[k], v) for k, v in schema.items())
        )
    if isinstance(schema, list):
        return isinstance(value, list) and all(conforms(item, schema[0]) for item in value)
    return isinstance(value, schema)  # type: ignore[arg-type]


def example() -> RecoveryResult:
    return RecoveryResult(
        models=[
            RecoveredModel("base", "/m/base", 0, "BF16", 22_700_000, ("base-copy",)),
            RecoveredModel("ft", "/m/ft", 0, "F32", 22_700_000),
            RecoveredModel("lora", "/m/lora", 0),
            RecoveredModel("alone", "/m/alone.safetensors", 1),
        ],
        edges=[
            Edge("base", "ft", 0.0012, 0.5, direction_probability=0.52, placement_margin=0.8),
            Edge("base", "lora", 0.0004, 1.0, known=True, relation="adapter"),
        ],
        trees=[
            RecoveredTree("base", ["base", "ft", "lora"], "norm grows"),
            RecoveredTree("alone", ["alone"]),
        ],
        broken=[BrokenModel(Path("/m/broken"), ValueError("`/m/broken` is truncated"))],
        params={"n_trees": "auto", "lam": 0.3, "direction": "auto", "distance": "auto"},
    )


def test_the_json_has_exactly_the_documented_keys_and_types() -> None:
    data = json.loads(json.dumps(example().to_json()))
    assert conforms(data, SCHEMA)
    assert data["format"] == RESULT_FORMAT == 2
    assert data["mothertree_version"] == mothertree.__version__
    assert data["roots"] == ["base", "alone"]
    assert [e["known"] for e in data["edges"]] == [False, True]
    # A coin-flip direction is marked; a known edge's direction is known.
    assert [e["direction"] for e in data["edges"]] == ["undetermined", "determined"]
    assert data["skipped"] == [{"path": "/m/broken", "error": "`/m/broken` is truncated"}]


def test_a_result_reads_back_as_written() -> None:
    data = json.loads(json.dumps(example().to_json()))
    again = RecoveryResult.from_json(data)
    assert again.to_json() == data
    assert again.edges[1] == Edge("base", "lora", 0.0004, 1.0, known=True, relation="adapter")


@pytest.mark.parametrize("data", [{"edges": []}, {"format": 99, "edges": []}, [1, 2]])
def test_another_format_is_refused(data: object) -> None:
    with pytest.raises(InvalidTruthError, match="not a mothertree result of format 2"):
        RecoveryResult.from_json(data)  # type: ignore[arg-type]


def test_a_malformed_result_names_the_problem() -> None:
    data = example().to_json()
    del data["edges"][0]["child"]
    with pytest.raises(InvalidTruthError, match="missing or malformed field: 'child'"):
        RecoveryResult.from_json(data)


def test_text_output_marks_undetermined_edges_and_says_how_many() -> None:
    from mothertree.render import to_text

    text = to_text(example())
    assert "ft  (d=0.0012, confidence 0.500, ? direction 0.52)" in text
    assert "lora  (adapter, d=0.0004, confidence 1.000)" in text  # a known edge is never undetermined
    assert "direction undetermined on 1 of 2 edges (marked ?)" in text
    assert "oriented by: norm grows" in text


@pytest.mark.parametrize("text", ["[" * 100_000, '{"edges": [], "n": 1' + "0" * 5000 + "}", "\xff"])
def test_a_hostile_result_or_truth_file_is_a_named_error(tmp_path: Path, text: str) -> None:
    from mothertree.evaluation.truth import load_edges

    path = tmp_path / "result.json"
    path.write_bytes(text.encode("latin-1"))
    for read in (RecoveryResult.load, load_edges):
        with pytest.raises(InvalidTruthError, match="is not valid JSON"):
            read(path)


def test_a_format_1_result_still_reads() -> None:
    data = json.loads(json.dumps(example().to_json()))
    data["format"] = 1
    for edge in data["edges"]:
        del edge["weight"]  # format 1 had no merges
    again = RecoveryResult.from_json(data)
    assert [e.weight for e in again.edges] == [None, None]
