"""The streaming loop against direct whole-model computation, on the real fine-tuned MiniLM family."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from safetensors.numpy import load_file

from mothertree.features.extract import extract_features
from mothertree.features.featureset import FeatureSet
from mothertree.features.low_rank import LowRankRule
from mothertree.features.select import select_tensors
from mothertree.io import discover, open_checkpoint


@pytest.fixture(scope="module")
def family_features(bert_family: Path):
    refs, _ = discover(bert_family)
    checkpoints = [open_checkpoint(ref) for ref in refs]
    tensors = select_tensors([c.tensors for c in checkpoints])
    features, broken = extract_features(checkpoints, [r.id for r in refs], tensors)
    assert broken == []
    whole = [load_file(str(ref.weights_path / "model.safetensors")) for ref in refs]
    return features, whole


@pytest.mark.slow
def test_distances_equal_direct_subtraction(family_features):
    features, whole = family_features
    n = features.n_models
    for t, name in enumerate(features.tensor_names):
        for i in range(n):
            for j in range(n):
                diff = whole[i][name].astype(np.float64) - whole[j][name]
                assert features.rms_distances[t, i, j] == pytest.approx(np.sqrt(np.mean(diff**2)), rel=1e-6)


@pytest.mark.slow
def test_kurtosis_equals_scipy(family_features):
    features, whole = family_features
    expected = np.array(
        [
            [scipy.stats.kurtosis(m[name].astype(np.float64).ravel()) for m in whole]
            for name in features.tensor_names
        ]
    )
    np.testing.assert_allclose(features.kurtosis(), expected, rtol=1e-9)


@pytest.mark.slow
def test_default_selection_is_the_square_attention_matrices(family_features):
    features, _ = family_features
    assert len(features.tensor_names) == 2 * 4 + 1  # q, k, v, attention output per layer, plus the pooler
    assert all(name.endswith(".weight") for name in features.tensor_names)


@pytest.mark.slow
def test_featureset_round_trip(family_features, tmp_path: Path):
    features, _ = family_features
    features.save(tmp_path / "f.npz")
    loaded = FeatureSet.load(tmp_path / "f.npz")
    assert loaded.model_ids == features.model_ids
    np.testing.assert_array_equal(loaded.rms_distances, features.rms_distances)
    np.testing.assert_array_equal(loaded.moments, features.moments)


def test_featureset_load_errors(tmp_path: Path):
    from mothertree.errors import InvalidFeatureSetError

    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InvalidFeatureSetError, match="is not a mothertree FeatureSet"):
        FeatureSet.load(bad)


@pytest.mark.slow
def test_ranks_and_clear_ranks_survive_save_and_subset(bert_family: Path, tmp_path: Path):
    refs, _ = discover(bert_family)
    checkpoints = [open_checkpoint(ref) for ref in refs]
    tensors = select_tensors([c.tensors for c in checkpoints])
    features, _ = extract_features(checkpoints, [r.id for r in refs], tensors, ranks=True)
    for checkpoint in checkpoints:
        checkpoint.close()
    assert features.clear_ranks is not None and (features.clear_ranks <= features.ranks).all()
    features.save(tmp_path / "f.npz")
    loaded = FeatureSet.load(tmp_path / "f.npz")
    np.testing.assert_array_equal(loaded.clear_ranks, features.clear_ranks)
    np.testing.assert_array_equal(LowRankRule().pairs(loaded), LowRankRule().pairs(features))
    part = features.subset([2, 0])
    np.testing.assert_array_equal(part.clear_ranks, features.clear_ranks[:, [2, 0]][:, :, [2, 0]])
