"""Recovery of the real fine-tuned MiniLM family (tests/family.py) after real magnitude pruning.

Every pruned copy is made the way users make them: ``torch.nn.utils.prune.l1_unstructured`` on each >= 2-D
weight (held as the Parameter of a throwaway module), made permanent with ``prune.remove``, saved with
safetensors. Nothing about the weights is set by hand.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from mothertree.evaluation.truth import load_edges
from mothertree.features.featureset import FeatureSet
from mothertree.pipeline import read_features, recover, recover_trees
from mothertree.tree.recover import TreeRecovery

# Every test here needs the really trained MiniLM family of tests/family.py.
pytestmark = pytest.mark.slow

MODELS = ("root", "ft-colour", "ft-number", "ft-colour-person", "ft-number-water")
LEAF, LEAF_PARENT = "ft-colour-person", "ft-colour"
TRUTH = {("root", "ft-colour"), ("root", "ft-number"), ("ft-colour", LEAF), ("ft-number", "ft-number-water")}


def prune_model(folder: Path, amount: float) -> None:
    """Prune every >= 2-D float weight of the checkpoint(s) in ``folder`` by magnitude, in place."""
    import torch
    from safetensors.torch import load_file, save_file
    from torch.nn.utils import prune

    for path in sorted(folder.glob("*.safetensors")):
        state = load_file(str(path))
        for name, tensor in state.items():
            if tensor.dim() >= 2 and tensor.is_floating_point():
                holder = torch.nn.Module()
                holder.weight = torch.nn.Parameter(tensor.clone())
                prune.l1_unstructured(holder, "weight", amount=amount)
                prune.remove(holder, "weight")
                state[name] = holder.weight.detach().contiguous()
        save_file(state, str(path), metadata={"format": "pt"})


def pruned_copy(family: Path, out: Path, models: tuple[str, ...], amount: float) -> Path:
    shutil.copytree(family, out)
    for model in models:
        prune_model(out / model, amount)
    return out


def features_of(collection: Path) -> FeatureSet:
    (features,), broken = read_features([collection])
    assert broken == []
    return features


def directed_edges(collection: Path) -> set[tuple[str, str]]:
    return {(e.parent, e.child) for e in recover([collection]).edges}


@pytest.fixture(scope="module")
def leaf_pruned(bert_family: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pruned_copy(bert_family, tmp_path_factory.mktemp("leaf_pruned") / "family", (LEAF,), 0.3)


def test_the_unpruned_family_is_recovered(bert_family: Path):
    """The reference the pruned cases are held to."""
    assert load_edges(bert_family / "truth.json") == TRUTH
    assert directed_edges(bert_family) == TRUTH


@pytest.mark.parametrize("amount", [0.3, 0.7])
def test_every_model_pruned_recovers_the_true_tree(bert_family: Path, tmp_path: Path, amount: float):
    collection = pruned_copy(bert_family, tmp_path / "family", MODELS, amount)
    features = features_of(collection)
    assert features.metadata["masked_tensors"] == features.tensor_names
    # Over the common support, pruning leaves the distances where they were (whole tensors: 2.5-5x larger).
    np.testing.assert_allclose(features.distances(), features_of(bert_family).distances(), rtol=0.1)
    weights = load_file(str(collection / LEAF / "model.safetensors"))[features.tensor_names[0]]
    assert np.mean(weights == 0) == pytest.approx(amount, abs=1e-3)  # really pruned
    assert directed_edges(collection) == load_edges(bert_family / "truth.json")


def test_one_pruned_leaf_hangs_under_its_true_parent(bert_family: Path, leaf_pruned: Path):
    result = recover([leaf_pruned])
    edges = {(e.parent, e.child) for e in result.edges}
    assert (LEAF_PARENT, LEAF) in edges
    assert edges == load_edges(bert_family / "truth.json")
    assert result.roots == ["root"]


def test_a_pruned_leaf_is_as_close_to_its_parent_as_before_pruning(bert_family: Path, leaf_pruned: Path):
    dense, pruned = features_of(bert_family), features_of(leaf_pruned)
    assert pruned.metadata["masked_tensors"] == pruned.tensor_names
    i, j = (dense.model_ids.index(m) for m in (LEAF_PARENT, LEAF))
    assert pruned.model_ids == dense.model_ids
    before, after = dense.distances()[i, j], pruned.distances()[i, j]
    assert after == pytest.approx(before, rel=0.05)
    # Over every coordinate (zeros included) the same pair is many fine-tuning steps apart (measured: 8x
    # the longest one, against 1.0x on the common support).
    steps = [dense.distances()[dense.model_ids.index(p), dense.model_ids.index(c)] for p, c in TRUTH]
    plain = np.mean([_plain_rms(leaf_pruned, LEAF_PARENT, LEAF, name) for name in pruned.tensor_names])
    assert plain > 5 * max(steps)
    assert after < 1.5 * max(steps)


def test_whole_tensor_norms_would_orient_the_pruned_leaf_upwards(leaf_pruned: Path):
    """Why the norm direction compares on the common support: the per-model norm reverses the edge."""
    features = features_of(leaf_pruned)
    by_common_support = recover_trees([features], direction="norm")
    assert by_common_support.roots == ["root"]
    whole = TreeRecovery(n_trees="auto", direction="norm").fit_matrices(
        features.distances(),
        features.summed_kurtosis(),
        features.model_ids,
        log_norms=features.log_norms(),
        relative_distances=features.relative_distances(),
    )
    assert whole.roots_ == [LEAF]


def test_dense_features_recover_as_with_per_model_norms(bert_family: Path):
    features = features_of(bert_family)
    assert features.common_support_norms is None
    np.testing.assert_array_equal(
        features.log_norm_pairs(), np.repeat(features.log_norms()[:, None], features.n_models, axis=1)
    )
    pairwise = TreeRecovery().fit(features)
    per_model = TreeRecovery().fit_matrices(
        features.distances(),
        features.summed_kurtosis(),
        features.model_ids,
        log_norms=features.log_norms(),
        relative_distances=features.relative_distances(),
        squared_distances=features.squared_distances(),
        kurtosis_pairs=features.kurtosis_pairs(),
        norm_change_skew=features.norm_change_skew(),
    )
    assert pairwise.edges_ == per_model.edges_


def _plain_rms(collection: Path, a: str, b: str, name: str) -> float:
    x = load_file(str(collection / a / "model.safetensors"))[name].astype(np.float64)
    y = load_file(str(collection / b / "model.safetensors"))[name].astype(np.float64)
    return float(np.sqrt(np.mean((x - y) ** 2)))
