"""The whole pipeline on a collection mixing two architectures: each becomes its own tree, unasked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mothertree.features.low_rank import LowRankRule
from mothertree.pipeline import recover

# Every test here needs really trained models: the MiniLM families of tests/family.py, the tiny demo.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mixed_collection(bert_family: Path, tiny_demo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    shutil.copytree(tiny_demo.path, root / "vision", ignore=shutil.ignore_patterns("truth.json"))
    shutil.copytree(bert_family, root / "text")
    return root


def test_architectures_are_separate_trees(mixed_collection: Path):
    result = recover([mixed_collection])
    assert len(result.trees) == 2
    trees = [set(t.models) for t in result.trees]
    text = {"root", "ft-colour", "ft-number", "ft-colour-person", "ft-number-water"}
    assert text in trees
    vision = next(t for t in trees if t != text)
    assert "mobilenetv2-imagenet" in vision and len(vision) == 4
    for edge in result.edges:  # no edge crosses architectures
        assert (edge.parent in text) == (edge.child in text)


def test_trees_count_across_groups(mixed_collection: Path):
    assert len(recover([mixed_collection], n_trees=3).trees) == 3


@pytest.fixture(scope="module")
def two_text_trees(bert_family: Path, second_family: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("two_trees")
    shutil.copytree(bert_family, root / "a", ignore=shutil.ignore_patterns("*.json"))
    shutil.copytree(second_family, root / "b", ignore=shutil.ignore_patterns("*.json"))
    return root


def test_unrelated_trees_of_one_architecture_are_split_without_k(two_text_trees: Path):
    result = recover([two_text_trees], n_trees="auto", direction="norm")
    assert len(result.trees) == 2
    first = {"root", "ft-colour", "ft-number", "ft-colour-person", "ft-number-water"}
    assert {frozenset(t.models) for t in result.trees} == {
        frozenset(first),
        frozenset("b-" + m for m in first),
    }
    assert sorted(result.roots) == ["b-root", "root"]


def test_a_missing_root_leaves_its_children_in_their_own_tree(two_text_trees: Path, tmp_path: Path):
    collection = tmp_path / "collection"
    shutil.copytree(two_text_trees, collection)
    shutil.rmtree(collection / "a" / "root")
    result = recover([collection], n_trees="auto", direction="norm")
    orphans = {"ft-colour", "ft-number", "ft-colour-person", "ft-number-water"}
    for edge in result.edges:  # no orphan is hung under the unrelated tree, nor the other way round
        assert (edge.parent in orphans) == (edge.child in orphans)
    assert len(result.trees) == 2


def test_a_bare_chain_is_placed_right_and_no_wrong_direction_is_called_sure(pretraining_chain: Path):
    """A chain of continued pre-training stages with no side branch: both signs of every cue explain it,
    so which end came first is not in the weights. The placement must be right, and any edge pointing the
    wrong way must say so: undetermined, confidence at most 0.75."""
    from mothertree.evaluation.metrics import score_edges
    from mothertree.evaluation.truth import load_edges

    result = recover([pretraining_chain])
    truth = load_edges(pretraining_chain / "truth.json")
    assert score_edges({(e.parent, e.child) for e in result.edges}, truth).undirected == 1.0
    wrong = [e for e in result.edges if (e.parent, e.child) not in truth]
    assert all(not e.direction_determined and e.confidence <= 0.75 for e in wrong), wrong


def test_lora_differences_have_the_adapters_rank(lora_family: Path):
    from family import LORA_TREE

    from mothertree.pipeline import read_features

    (features,), _ = read_features([lora_family], ranks=True)
    index = {model: i for i, model in enumerate(features.model_ids)}
    assert features.ranks is not None
    attention = [t for t, name in enumerate(features.tensor_names) if "attention" in name]
    pooler = [t for t, name in enumerate(features.tensor_names) if "pooler" in name]
    for node in LORA_TREE[1:]:
        parent, child = index[node.parent], index[node.id]
        assert all(features.ranks[t, parent, child] == node.lora_rank for t in attention)
        assert all(features.ranks[t, parent, child] == 0 for t in pooler)  # LoRA leaves it untouched
    assert features.ranks[0, index["l1"], index["l4"]] == 8 + 16  # siblings: the ranks add up


def test_auto_distance_picks_rank_for_lora_and_l2_for_full_fine_tunes(lora_family: Path, bert_family: Path):
    from mothertree.evaluation.metrics import score_edges
    from mothertree.evaluation.truth import load_edges

    lora = recover([lora_family], distance="auto")
    assert lora.params["distances_used"] == ["rank"]
    score = score_edges({(e.parent, e.child) for e in lora.edges}, load_edges(lora_family / "truth.json"))
    assert score.directed == 1.0
    assert recover([bert_family], distance="auto").params["distances_used"] == ["l2"]


def test_auto_ranks_read_every_pair_only_for_low_rank_groups(lora_family: Path, bert_family: Path):
    from mothertree.pipeline import read_features

    (lora,), _ = read_features([lora_family], ranks="auto")
    assert lora.metadata["ranks"] == "all" and lora.has_all_ranks
    (full,), _ = read_features([bert_family], ranks="auto")
    assert full.metadata["ranks"] == "nearest" and not full.has_all_ranks
    assert full.ranks is not None and ((full.ranks >= 0).sum(axis=(1, 2)) < full.n_models**2).all()
    (everything,), _ = read_features([bert_family], ranks=True)
    assert not LowRankRule().pairs(full).any() and not LowRankRule().pairs(everything).any()
    assert recover([bert_family], distance="auto").params["distances_used"] == ["l2"]


def test_peft_adapters_are_read_on_their_base_and_placed(mixed_family: Path):
    from mothertree.evaluation.metrics import score_edges
    from mothertree.evaluation.truth import load_edges

    assert (mixed_family / "x3" / "adapter_config.json").exists()
    assert not (mixed_family / "x3" / "model.safetensors").exists()
    from mothertree.pipeline import read_features

    (features,), broken = read_features([mixed_family])
    assert broken == []
    assert features.known_parents == {"x3": "x0", "x1": "x4"}
    result = recover([mixed_family])
    score = score_edges({(e.parent, e.child) for e in result.edges}, load_edges(mixed_family / "truth.json"))
    assert score.directed == 1.0
    # The adapters read on their bases are `adapter` edges; the full and merged-LoRA fine-tunes are not.
    relations = {(e.parent, e.child): e.relation for e in result.edges}
    assert relations[("x0", "x3")] == relations[("x4", "x1")] == "adapter"
    assert {r for pair, r in relations.items() if pair not in {("x0", "x3"), ("x4", "x1")}} == {"finetune"}


def test_an_adapter_without_its_base_is_skipped_with_a_hint(mixed_family: Path, tmp_path: Path):
    shutil.copytree(mixed_family / "x3", tmp_path / "x3")
    shutil.copytree(mixed_family / "x4", tmp_path / "x4")
    shutil.copytree(mixed_family / "x2", tmp_path / "x2")
    result = recover([tmp_path])  # x3's base, x0, is not here
    assert [b.path.name for b in result.broken] == ["x3"]
    assert "is a LoRA adapter of" in str(result.broken[0].error)
    assert "which is not in this collection" in str(result.broken[0].error)


def test_auto_distance_joins_lora_relations_by_rank_and_the_rest_by_l2(mixed_family: Path):
    from family import MIXED_TREE

    from mothertree.evaluation.metrics import score_edges
    from mothertree.evaluation.truth import load_edges
    from mothertree.pipeline import read_features

    (features,), _ = read_features([mixed_family], ranks="auto")
    assert features.has_all_ranks  # some nearest difference was low-rank: every pair was read
    # Two models differ by a low-rank update when the path between them in the tree is made of LoRA edges
    # only (a full fine-tune on the way makes it dense): x2-x4-x1 and x0-x3 here.
    lora_parent = {n.id: n.parent for n in MIXED_TREE if n.lora_rank}

    def lora_ancestors(model: str) -> set[str]:
        chain = {model}
        while model in lora_parent:
            model = lora_parent[model]
            chain.add(model)
        return chain

    expected = {
        frozenset((a, b))
        for a in features.model_ids
        for b in features.model_ids
        if a != b and lora_ancestors(a) & lora_ancestors(b)  # they meet climbing LoRA edges only
    }
    low = LowRankRule().pairs(features)
    found = {
        frozenset((a, b))
        for i, a in enumerate(features.model_ids)
        for j, b in enumerate(features.model_ids)
        if low[i, j]
    }
    assert found == expected
    result = recover([mixed_family], distance="auto", direction="auto")
    assert result.params["distances_used"] == ["rank+l2"]
    score = score_edges({(e.parent, e.child) for e in result.edges}, load_edges(mixed_family / "truth.json"))
    assert score.directed == 1.0


def test_ranks_can_be_read_for_chosen_pairs_only(lora_family: Path):
    from mothertree.features.extract import extract_features
    from mothertree.features.select import select_tensors
    from mothertree.io import discover, open_checkpoint

    refs, _ = discover(lora_family)
    checkpoints = [open_checkpoint(ref) for ref in refs]
    tensors = select_tensors([c.tensors for c in checkpoints])
    features, _ = extract_features(
        checkpoints, [r.id for r in refs], tensors, ranks=True, rank_pairs=[(0, 1)]
    )
    for checkpoint in checkpoints:
        checkpoint.close()
    assert features.metadata["ranks"] == "pairs" and not features.has_all_ranks
    assert features.ranks is not None and (features.ranks[:, 0, 1] >= 0).all()
    assert (features.ranks[:, 0, 2] == -1).all() and (features.ranks[:, 2, 3] == -1).all()
    assert not LowRankRule().pairs(features)[0, 2]  # unknown is never low-rank
