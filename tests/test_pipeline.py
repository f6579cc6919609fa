"""The whole pipeline on a collection mixing two architectures: each becomes its own tree, unasked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mothertree.pipeline import recover


@pytest.fixture(scope="module")
def mixed_collection(bert_family: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mothertree.zoo.demo import DemoConfig, build_demo_graph

    root = tmp_path_factory.mktemp("mixed")
    mobilenets = build_demo_graph(root / "vision", quiet=True, config=DemoConfig.tiny())
    (mobilenets / "truth.json").unlink()
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


def test_a_continued_pretraining_chain_is_oriented_from_its_start(pretraining_chain: Path):
    """Measured, not guaranteed: the weight norm grew at every stage (kurtosis rose at only 2 of 4)."""
    from mothertree.evaluation.metrics import score_edges
    from mothertree.evaluation.truth import load_edges

    result = recover([pretraining_chain])
    score = score_edges(
        {(e.parent, e.child) for e in result.edges}, load_edges(pretraining_chain / "truth.json")
    )
    assert score.directed == 1.0
    assert result.roots == ["s3"]
