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
