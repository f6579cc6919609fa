"""Copies of a model are one model with aliases (features/duplicates.py).

The pure candidate rule on hand-made features (synthetic numbers, said so below), then real tiny BERTs
(trained a few steps, saved with ``save_pretrained``): a byte copy and a bfloat16 re-save of a root become
its aliases and leave its fine-tunes' edges as they were without them; a model that differs only in tensors
the comparison does not read is no copy.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from mothertree.features.duplicates import candidate_pairs
from mothertree.features.featureset import FeatureSet
from mothertree.pipeline import recover
from mothertree.render import to_text


def _features(rms: np.ndarray, precisions: np.ndarray | None = None) -> FeatureSet:
    # Synthetic: one tensor, three models of RMS weight 1 (mean 0, variance 1).
    return FeatureSet(
        model_ids=["a", "b", "c"],
        model_paths=["a", "b", "c"],
        tensor_names=["w"],
        numel=np.array([100]),
        rms_distances=rms[None],
        moments=np.tile([0.0, 1.0, 0.0, 3.0], (1, 3, 1)),
        precisions=precisions,
    )


def test_identical_copies_are_candidates_only_at_distance_zero() -> None:
    rms = np.array([[0.0, 0.0, 1e-7], [0.0, 0.0, 1e-7], [1e-7, 1e-7, 0.0]])
    assert candidate_pairs(_features(rms)) == [(0, 1)]


def test_a_coarser_copy_may_differ_by_its_rounding_and_no_more() -> None:
    # b is stored in bf16 (index 2), a and c in f32: a-b within bf16's rounding of a's scale, c-b beyond.
    rms = np.array([[0.0, 2.0**-9, 0.5], [2.0**-9, 0.0, 2.0**-5], [0.5, 2.0**-5, 0.0]])
    assert candidate_pairs(_features(rms, np.array([[0, 2, 0]], dtype=np.int8))) == [(0, 1)]
    # Stored alike, the same distance is a real difference.
    assert candidate_pairs(_features(rms, np.array([[2, 2, 0]], dtype=np.int8))) == []


torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert_and_copies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_bert import save_tiny_tree, train_tiny

    folder = tmp_path_factory.mktemp("copies")
    root = save_tiny_tree(folder, n_children=2)
    shutil.copytree(folder / "root", folder / "root-copy")
    copy.deepcopy(root).to(torch.bfloat16).save_pretrained(folder / "root-bf16")
    # Trained on its embedding LayerNorm alone: 1-D tensors the comparison never reads.
    layer_norm_only = copy.deepcopy(root)
    for name, parameter in layer_norm_only.named_parameters():
        parameter.requires_grad = name.startswith("embeddings.LayerNorm")
    train_tiny(layer_norm_only, seed=3, steps=3)
    layer_norm_only.save_pretrained(folder / "ft-layernorm")
    return folder


def _collection(bert_and_copies: Path, target: Path, names: list[str]) -> Path:
    for name in names:  # hard links: the same files, no copying
        shutil.copytree(bert_and_copies / name, target / name, copy_function=os.link)
    return target


@pytest.mark.slow
def test_copies_are_aliases_and_leave_the_tree_as_it_was(bert_and_copies: Path, tmp_path: Path) -> None:
    without = recover([_collection(bert_and_copies, tmp_path / "without", ["root", "ft-1", "ft-2"])])
    names = ["root", "root-copy", "root-bf16", "ft-1", "ft-2"]
    with_copies = recover([_collection(bert_and_copies, tmp_path / "with", names)])
    models = {m.id: m for m in with_copies.models}
    assert set(models) == {"root", "ft-1", "ft-2"}
    assert models["root"].aliases == ("root-copy", "root-bf16")  # the finest-stored first
    assert [(e.parent, e.child, e.confidence) for e in with_copies.edges] == [
        (e.parent, e.child, e.confidence) for e in without.edges
    ]
    assert "root (= root-copy, root-bf16)" in to_text(with_copies)


@pytest.mark.slow
def test_a_model_that_differs_outside_the_comparison_is_no_copy(
    bert_and_copies: Path, tmp_path: Path
) -> None:
    result = recover([_collection(bert_and_copies, tmp_path / "c", ["root", "ft-layernorm", "ft-1"])])
    assert {m.id for m in result.models} == {"root", "ft-layernorm", "ft-1"}
    assert all(not m.aliases for m in result.models)
