"""Derived models in specs (``derive``): validation and truth (pure), and real tiny builds of each kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch_threads import one_thread

from mothertree.errors import InvalidParameterError
from mothertree.evaluation.relations import RelationScore, score_relations
from mothertree.pipeline import recover
from mothertree.zoo.build import build_graph, truth_edges
from mothertree.zoo.files import WEIGHT_FILES, load_state_dict
from mothertree.zoo.spec import GraphSpec, NodePlan, load_spec, plan_graph

TINY = {"steps": 6, "batch_size": 8, "image_size": 16, "eval_samples": 256}


def vision(*nodes: NodePlan, **fields: object) -> GraphSpec:
    return GraphSpec(name="derived", family="vision", nodes=nodes, **{**TINY, **fields})  # type: ignore[arg-type]


ROOT = NodePlan("r", root="imagenet")
A = NodePlan("a", "r", task="colour", lr=2e-3, seed=1)
B = NodePlan("b", "r", task="orientation", lr=2e-3, seed=2)


# --- the spec (pure) --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (NodePlan("d", "a", derive="gguf-q8_0"), "unknown vision derivation"),
        (NodePlan("d", "a", derive="prune"), "unknown vision derivation"),
        (NodePlan("d", "a", derive="prune:2"), "pruning amount"),
        (NodePlan("d", "a", derive="copy", task="colour", lr=1e-3), "no task"),
        (NodePlan("d", "a", derive="linear"), "merge_with"),
        (NodePlan("d", "a", derive="slerp", merge_with=("b", "r")), "two models"),
        (NodePlan("d", "a", derive="linear", merge_with=("b",), merge_weights=(1.0,)), "one weight"),
        (NodePlan("d", "a", derive="copy", merge_with=("b",)), "only a merge"),
        (NodePlan("d", "a", derive="linear", merge_with=("zz",)), "missing"),
        (NodePlan("d", "a", task="colour", lr=1e-3, merge_with=("b",)), "only a merge"),
        (NodePlan("d", derive="copy", root="imagenet"), "parent"),
    ],
)
def test_a_wrong_derived_node_is_refused_with_the_reason(node: NodePlan, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        vision(ROOT, A, B, node)


def test_derived_models_are_leaves() -> None:
    copy = NodePlan("c", "a", derive="copy")
    with pytest.raises(InvalidParameterError, match="leaves"):
        vision(ROOT, A, copy, NodePlan("d", "c", task="colour", lr=1e-3))


def test_truth_edges_carry_relations_and_merge_weights() -> None:
    spec = vision(
        ROOT,
        A,
        B,
        NodePlan("c", "r", derive="safetensors"),
        NodePlan("p", "a", derive="prune:0.4"),
        NodePlan("m", "a", derive="linear", merge_with=("b",), merge_weights=(3.0, 1.0)),
    )
    edges = truth_edges(spec, plan_graph(spec))
    assert {(e["parent"], e["child"], e["relation"]) for e in edges} == {
        ("r", "a", "finetune"),
        ("r", "b", "finetune"),
        ("r", "c", "duplicate"),
        ("a", "p", "pruned"),
        ("a", "m", "merge"),
        ("b", "m", "merge"),
    }
    assert sorted(e.get("weight", 0) for e in edges if e["child"] == "m") == [0.25, 0.75]
    # A spec without derived models fingerprints as before (its folders still resume).
    nodes = vision(ROOT, A).to_json()["nodes"]
    assert not {"derive", "merge_with", "merge_weights"} & {key for node in nodes for key in node}


@pytest.mark.parametrize("name", ["hub", "hub-vision"])
def test_hub_splits_mix_every_relation(name: str) -> None:
    for size in ("small", "heldout"):
        spec = load_spec(name).sized(size)
        relations = {e["relation"] for e in truth_edges(spec, plan_graph(spec))}
        expected = {"finetune", "duplicate", "pruned", "merge"}
        if name == "hub":
            expected |= {"adapter", "quantized"}
        assert relations == expected
        assert spec.fine_tuning == ("mixed" if name == "hub" else "full")  # LoRA and full fine-tunes


# --- real tiny builds -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_vision_copies_prunes_and_merges_are_built_and_recovered(tmp_path: Path) -> None:
    spec = vision(
        ROOT,
        A,
        B,
        NodePlan("c", "r", derive="safetensors"),
        NodePlan("h", "a", derive="fp16"),
        NodePlan("p", "b", derive="prune:0.3"),
        NodePlan("m", "a", derive="linear", merge_with=("b",), merge_weights=(0.5, 0.5)),
        NodePlan("t", "a", derive="ties", merge_with=("b",), merge_weights=(0.5, 0.5)),
    )
    with one_thread():
        graph = build_graph(spec, tmp_path / "g", quiet=True).path
    read = {m: _state(graph / m) for m in ("r", "a", "b", "c", "h", "p", "m")}
    name = "features.0.0.weight"
    assert torch.equal(read["c"][name], read["r"][name])
    assert read["h"][name].dtype == torch.float16
    assert (read["p"][name] == 0).float().mean() >= 0.29
    assert torch.allclose(read["m"][name], (read["a"][name] + read["b"][name]) / 2)
    truth = json.loads((graph / "truth.json").read_text())
    assert truth["models"]["t"]["derive"] == "ties" and truth["models"]["t"]["merge_with"] == ["b"]
    score = score_relations(recover([graph]), truth)
    assert score.of("duplicate") == (2, 2) and score.of("pruned") == (1, 1)
    assert score.of("merge")[0] >= 2  # the linear merge at least: TIES is found by reading
    # From fingerprints alone (the store), the same relations.
    from_store = _from_store(graph, tmp_path / "store.db", truth)
    assert from_store.of("duplicate") == (2, 2) and from_store.of("pruned") == (1, 1)
    assert from_store.of("merge") == score.of("merge")


def _from_store(graph: Path, store_path: Path, truth: dict[str, Any]) -> RelationScore:
    from mothertree.indexing import index, recover_store
    from mothertree.store import FingerprintStore

    with FingerprintStore(store_path, create=True) as store:
        index([graph], store)
        return score_relations(recover_store(store), truth)


def _state(folder: Path) -> dict[str, torch.Tensor]:
    safetensors_file = folder / WEIGHT_FILES["safetensors"]
    return load_state_dict(safetensors_file if safetensors_file.is_file() else folder / WEIGHT_FILES["bin"])


@pytest.mark.slow
def test_text_exports_are_written_by_the_real_tools(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("gguf")
    spec = GraphSpec(
        name="derived-text",
        family="text",
        layers=1,
        steps=5,
        nodes=(
            NodePlan("r", root="minilm@0"),
            NodePlan("a", "r", task="colour", lr=3e-4, seed=1),
            NodePlan("b", "r", task="water", lr=3e-4, seed=2, save="bf16"),
            NodePlan("q", "a", derive="onnx-int8"),
            # Q8_0 of a bf16 model: its unquantised tensors are float32, the source's values as they are.
            NodePlan("g", "b", derive="gguf-q8_0"),
            NodePlan("h", "a", derive="bf16"),
        ),
    )
    with one_thread():
        graph = build_graph(spec, tmp_path / "g", quiet=True).path
    assert (graph / "q" / "model.onnx").is_file() and (graph / "g" / "model.gguf").is_file()
    truth = json.loads((graph / "truth.json").read_text())
    score = score_relations(recover([graph]), truth)
    assert score.of("quantized") == (2, 2) and score.of("duplicate") == (1, 1)
    assert score.copies_as_roots == 0
    from_store = _from_store(graph, tmp_path / "store.db", truth)
    assert from_store.of("quantized") == (2, 2) and from_store.of("duplicate") == (1, 1)
    assert from_store.copies_as_roots == 0
