"""Merges are models with two or three parents (issue 13): found, weighted, and the tree left as it was.

``bert_family``'s tiny BERTs (really fine-tuned, tests/family.py) merged with mergekit's arithmetic
(``zoo.merges``): linear and SLERP (found from distances, tree/merges.py), TIES and DARE-TIES (read from
the weights, features/sparse_merges.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from family import linked

from mothertree.pipeline import recover
from mothertree.render import to_newick, to_text
from mothertree.result import RecoveryResult

pytest.importorskip("mergekit")

FAMILY = ["root", "ft-colour", "ft-number", "ft-colour-person", "ft-number-water"]


def _merge_weights(result: RecoveryResult) -> dict[str, dict[str, float]]:
    """Each merge's parents with their weights, from the result's merge edges."""
    merged: dict[str, dict[str, float]] = {}
    for edge in result.edges:
        if edge.relation == "merge":
            assert edge.weight is not None
            merged.setdefault(edge.child, {})[edge.parent] = edge.weight
    return merged


def _assert_weights(merged: dict[str, dict[str, float]], expected: dict[str, dict[str, float]]) -> None:
    for child, parents in expected.items():
        assert set(merged[child]) == set(parents), child
        assert all(abs(merged[child][p] - w) < 0.02 for p, w in parents.items()), (child, merged[child])


@pytest.mark.slow
def test_merges_have_an_edge_from_each_parent_and_leave_the_tree_as_it_was(
    bert_family: Path, tmp_path: Path
) -> None:
    from mothertree.zoo.merges import merge_models

    without = recover([linked(bert_family, tmp_path / "without", FAMILY)])
    folder = linked(bert_family, tmp_path / "with", FAMILY)
    f = bert_family
    merge_models(
        "linear", [f / "ft-colour-person", f / "ft-number-water"], folder / "m-linear", weights=[0.6, 0.4]
    )
    merge_models("slerp", [f / "ft-colour", f / "ft-number-water"], folder / "m-slerp", t=0.3)
    merge_models(
        "ties", [f / "ft-colour", f / "ft-number"], folder / "m-ties", weights=[0.5, 0.5], base=f / "root"
    )
    merge_models(
        "dare_ties",
        [f / "ft-colour-person", f / "ft-number"],
        folder / "m-dare",
        weights=[0.7, 0.3],
        base=f / "root",
    )
    result = recover([folder])

    merged = _merge_weights(result)
    assert set(merged) == {"m-linear", "m-slerp", "m-ties", "m-dare"}
    expected = {
        "m-linear": {"ft-colour-person": 0.6, "ft-number-water": 0.4},
        "m-slerp": {"ft-colour": 0.7, "ft-number-water": 0.3},
        "m-ties": {"ft-colour": 0.5, "ft-number": 0.5},
        "m-dare": {"ft-colour-person": 0.7, "ft-number": 0.3},
    }
    _assert_weights(merged, expected)
    # The fine-tunes' tree is the one recovered without the merges, edge for edge.
    assert [(e.parent, e.child, e.confidence) for e in result.edges if e.relation == "finetune"] == [
        (e.parent, e.child, e.confidence) for e in without.edges
    ]
    assert result.roots == without.roots
    # Views that draw trees hang a merge from its heavier parent; JSON keeps every edge.
    assert "m-linear  (merge of ft-colour-person 0.60 + ft-number-water 0.40" in to_text(result)
    assert to_newick(result).count("m-linear") == 1
    data = json.loads(json.dumps(result.to_json()))
    assert data["format"] == 2
    assert sum(e["child"] == "m-ties" for e in data["edges"]) == 2


@pytest.mark.slow
def test_merges_of_three_models_have_three_parents(bert_family: Path, tmp_path: Path) -> None:
    from mothertree.zoo.merges import merge_models

    without = recover([linked(bert_family, tmp_path / "without", FAMILY)])
    folder = linked(bert_family, tmp_path / "with", FAMILY)
    f = bert_family
    merge_models(
        "linear",
        [f / "ft-colour-person", f / "ft-number-water", f / "ft-number"],
        folder / "m-soup",
        weights=[0.5, 0.3, 0.2],
    )
    # Task arithmetic onto the root, root + 0.4 (tau_colour + tau_number), written as the linear merge it is.
    merge_models(
        "linear",
        [f / "root", f / "ft-colour", f / "ft-number"],
        folder / "m-arithmetic",
        weights=[0.2, 0.4, 0.4],
    )
    result = recover([folder])

    merged = _merge_weights(result)
    expected = {
        "m-soup": {"ft-colour-person": 0.5, "ft-number-water": 0.3, "ft-number": 0.2},
        "m-arithmetic": {"root": 0.2, "ft-colour": 0.4, "ft-number": 0.4},
    }
    assert set(merged) == set(expected)
    _assert_weights(merged, expected)
    assert [(e.parent, e.child) for e in result.edges if e.relation == "finetune"] == [
        (e.parent, e.child) for e in without.edges
    ]
    assert "m-soup  (merge of ft-colour-person 0.50 + ft-number-water 0.30 + ft-number 0.20" in to_text(
        result
    )


@pytest.mark.slow
def test_fine_tunes_and_a_chain_hold_no_merge(bert_family: Path, pretraining_chain: Path) -> None:
    for folder in (bert_family, pretraining_chain):
        result = recover([folder])
        assert not any(e.relation == "merge" for e in result.edges), folder


@pytest.mark.slow
def test_the_cli_can_leave_relations_out(bert_family: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mothertree.cli import main
    from mothertree.zoo.merges import merge_models

    folder = linked(bert_family, tmp_path / "with", FAMILY)
    f = bert_family
    merge_models(
        "linear", [f / "ft-colour-person", f / "ft-number-water"], folder / "m-linear", weights=[0.6, 0.4]
    )
    relations = {}
    for option in ("duplicate,quantized,merge", "none"):
        done = CliRunner().invoke(
            main, ["recover", str(folder), "--relations", option, "--format", "json", "-q"]
        )
        assert done.exit_code == 0, done.output
        relations[option] = {
            e["relation"] for e in json.loads(done.stdout)["edges"] if e["child"] == "m-linear"
        }
    assert relations == {"duplicate,quantized,merge": {"merge"}, "none": {"finetune"}}
    refused = CliRunner().invoke(main, ["recover", str(folder), "--relations", "merges"])
    assert refused.exit_code == 2 and "choose among duplicate, quantized, pruned, merge" in refused.output
