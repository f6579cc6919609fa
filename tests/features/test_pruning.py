"""The common-support (masked) distance and support norms for magnitude-pruned models.

Synthetic random weights throughout: these test the pure functions and the FeatureSet plumbing against
direct numpy loops. The real pruned MiniLM families are in ``tests/tree/test_pruned_trees.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mothertree.features import reductions
from mothertree.features.featureset import FeatureSet
from mothertree.features.reductions import (
    SPARSE_ZERO_SHARE,
    common_support_distances,
    is_sparse,
    pairwise_squared_distances,
    zero_shares,
)


def direct_common_support(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The definition, pair by pair: mean squared difference and model i's squared norm where both != 0."""
    x = stack.astype(np.float64)
    n = len(x)
    mean_squares = np.full((n, n), np.nan)
    norms = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            both = (x[i] != 0) & (x[j] != 0)
            norms[i, j] = np.sum(x[i, both] ** 2)
            if both.any():
                mean_squares[i, j] = np.mean((x[i, both] - x[j, both]) ** 2)
    np.fill_diagonal(mean_squares, 0.0)
    return mean_squares, norms


def magnitude_prune(row: np.ndarray, amount: float) -> np.ndarray:
    """Zero the ``amount`` share of smallest-magnitude entries (what l1_unstructured does, in numpy)."""
    cut = int(round(amount * row.size))
    pruned = row.copy()
    pruned[np.argsort(np.abs(row), kind="stable")[:cut]] = 0
    return pruned


def near_identical_pruned_family(seed: int = 0, numel: int = 20_000) -> np.ndarray:
    """A parent and five fine-tunes ~1e-4 of the weight scale away, each pruned by its own share."""
    rng = np.random.default_rng(seed)
    parent = rng.normal(0, 0.05, size=numel).astype(np.float32)
    rows = [parent] + [parent + rng.normal(0, 5e-6, size=numel).astype(np.float32) for _ in range(5)]
    amounts = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9]
    return np.stack([magnitude_prune(r, a) for r, a in zip(rows, amounts, strict=True)])


def test_masked_distance_matches_the_direct_loop_for_near_identical_models():
    stack = near_identical_pruned_family()
    expected, expected_norms = direct_common_support(stack)
    got, norms = common_support_distances(stack)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(norms, expected_norms, rtol=1e-12)
    assert np.all(np.diag(got) == 0)
    np.testing.assert_array_equal(got, got.T)


def test_uncentred_float32_masked_gram_is_wrong_which_is_why_we_centre():
    stack = near_identical_pruned_family()
    kept = (stack != 0).astype(np.float32)
    spread = (stack * stack) @ kept.T
    cross = stack @ stack.T
    shared = kept @ kept.T
    naive = (spread + spread.T - 2 * cross) / shared
    expected, _ = direct_common_support(stack)
    relative_error = np.abs(naive[0, 1] - expected[0, 1]) / expected[0, 1]
    assert relative_error > 0.1


def test_masked_distance_accumulates_over_chunks(monkeypatch):
    monkeypatch.setattr(reductions, "MASKED_CHUNK_COLUMNS", 7)
    rng = np.random.default_rng(1)
    stack = rng.normal(size=(5, 100)).astype(np.float32)
    stack[rng.random(stack.shape) < 0.4] = 0
    expected, expected_norms = direct_common_support(stack)
    got, norms = common_support_distances(stack)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(norms, expected_norms, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    n_models=st.integers(2, 6),
    numel=st.integers(4, 300),
    seed=st.integers(0, 2**31),
    zero_share=st.floats(0.0, 0.95),
)
def test_masked_distance_properties(n_models, numel, seed, zero_share):
    rng = np.random.default_rng(seed)
    stack = rng.standard_t(df=5, size=(n_models, numel)).astype(np.float32)
    stack[rng.random(stack.shape) < zero_share] = 0
    expected, expected_norms = direct_common_support(stack)
    got, norms = common_support_distances(stack)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(norms, expected_norms, rtol=1e-9, atol=1e-12)


def test_a_pair_without_common_support_is_nan():
    stack = np.array([[1.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]], dtype=np.float32)
    got, norms = common_support_distances(stack)
    assert np.isnan(got[0, 1]) and np.isnan(got[1, 0])
    assert got[0, 2] == pytest.approx((0 + 1) / 2) and got[1, 2] == pytest.approx((4 + 9) / 2)
    assert norms[0, 1] == 0 and norms[0, 2] == 5 and norms[2, 0] == 2
    assert np.all(np.diag(got) == 0)


def test_dense_stacks_get_the_plain_distance_either_way():
    rng = np.random.default_rng(2)
    stack = rng.normal(0, 0.05, size=(4, 5000)).astype(np.float32)
    assert not is_sparse(stack)
    masked, norms = common_support_distances(stack)
    np.testing.assert_allclose(masked, pairwise_squared_distances(stack) / stack.shape[1], rtol=1e-9)
    whole = (stack.astype(np.float64) ** 2).sum(axis=1)
    np.testing.assert_allclose(norms, np.repeat(whole[:, None], 4, axis=1), rtol=1e-12)


def test_sparsity_threshold():
    rng = np.random.default_rng(3)
    stack = rng.normal(size=(3, 10_000)).astype(np.float32)
    assert zero_shares(stack).max() == 0 and not is_sparse(stack)
    at_threshold = int(SPARSE_ZERO_SHARE * stack.shape[1])
    stack[1, :at_threshold] = 0  # exactly 1 %: not more than the threshold
    assert not is_sparse(stack)
    stack[1, at_threshold] = 0
    assert is_sparse(stack)
    pruned = np.stack([magnitude_prune(rng.normal(size=1000).astype(np.float32), 0.1), np.ones(1000)])
    assert is_sparse(pruned)  # one pruned model makes the whole tensor masked
    np.testing.assert_allclose(zero_shares(pruned), [0.1, 0.0])


def features_with_support(n_models: int = 4, n_tensors: int = 3, seed: int = 0) -> FeatureSet:
    rng = np.random.default_rng(seed)
    rms = rng.uniform(0.1, 1.0, size=(n_tensors, n_models, n_models))
    rms = (rms + rms.transpose(0, 2, 1)) / 2
    for t in range(n_tensors):
        np.fill_diagonal(rms[t], 0.0)
    return FeatureSet(
        model_ids=[f"m{i}" for i in range(n_models)],
        model_paths=[f"/x/m{i}" for i in range(n_models)],
        tensor_names=[f"t{t}" for t in range(n_tensors)],
        numel=np.full(n_tensors, 100, dtype=np.int64),
        rms_distances=rms,
        moments=np.abs(rng.normal(size=(n_tensors, n_models, 4))),
        common_support_norms=rng.uniform(1.0, 2.0, size=(n_tensors, n_models, n_models)),
        metadata={"masked_tensors": ["t1"]},
    )


def test_subset_and_save_load_carry_the_common_support_norms(tmp_path: Path):
    features = features_with_support()
    assert features.common_support_norms is not None
    part = features.subset([3, 1])
    assert part.common_support_norms is not None
    np.testing.assert_array_equal(
        part.common_support_norms, features.common_support_norms[:, [3, 1]][:, :, [3, 1]]
    )
    features.save(tmp_path / "f.npz")
    loaded = FeatureSet.load(tmp_path / "f.npz")
    assert loaded.common_support_norms is not None
    np.testing.assert_array_equal(loaded.common_support_norms, features.common_support_norms)
    assert loaded.metadata["masked_tensors"] == ["t1"]
    np.testing.assert_array_equal(loaded.log_norm_pairs(), features.log_norm_pairs())


def test_a_file_of_format_1_still_loads(tmp_path: Path):
    """Written the way mothertree wrote FeatureSets before support norms existed."""
    features = features_with_support()
    header = {
        "format_version": 1,
        "model_ids": features.model_ids,
        "model_paths": features.model_paths,
        "tensor_names": features.tensor_names,
        "metadata": {"layers": None},
    }
    with open(tmp_path / "old.npz", "wb") as handle:
        np.savez_compressed(
            handle,
            header=np.array(json.dumps(header)),
            numel=features.numel,
            rms_distances=features.rms_distances,
            moments=features.moments,
        )
    loaded = FeatureSet.load(tmp_path / "old.npz")
    assert loaded.common_support_norms is None
    np.testing.assert_array_equal(loaded.rms_distances, features.rms_distances)


def test_dense_features_are_still_written_as_format_1(tmp_path: Path):
    features = features_with_support()
    features.common_support_norms = None
    features.save(tmp_path / "f.npz")
    with np.load(tmp_path / "f.npz") as data:
        assert json.loads(str(data["header"]))["format_version"] == 1
        assert "support_norms" not in data


def test_log_norm_pairs_without_masked_tensors_repeat_the_per_model_norms():
    features = features_with_support()
    features.common_support_norms = None
    pairs = features.log_norm_pairs()
    np.testing.assert_array_equal(pairs, np.repeat(features.log_norms()[:, None], 4, axis=1))


def test_log_norm_pairs_sum_the_common_support_norms_over_tensors():
    features = features_with_support()
    assert features.common_support_norms is not None
    np.testing.assert_allclose(features.log_norm_pairs(), np.log(features.common_support_norms.sum(axis=0)))


def test_a_pair_unshared_in_one_tensor_is_averaged_over_the_others():
    features = features_with_support()
    features.numel = np.array([100, 400, 2500][: features.n_tensors], dtype=np.int64)
    weights = np.sqrt(features.numel[[0, 2]].astype(float))
    expected = (features.rms_distances[[0, 2], 0, 1] * weights).sum() / weights.sum()
    features.rms_distances[1, 0, 1] = features.rms_distances[1, 1, 0] = np.nan
    assert features.distances()[0, 1] == pytest.approx(expected)
    assert np.isfinite(features.relative_distances()).all()


def test_a_pair_unshared_everywhere_is_as_far_as_the_farthest_and_unrelated():
    features = features_with_support()
    features.rms_distances[:, 0, 1] = features.rms_distances[:, 1, 0] = np.nan
    d = features.distances()
    others = np.ones_like(d, dtype=bool)
    others[[0, 1], [1, 0]] = False
    assert d[0, 1] == d[1, 0] == d[others].max()
    assert features.relative_distances()[0, 1] == pytest.approx(np.sqrt(2.0))


def test_dense_distances_are_the_sqrt_numel_weighted_mean():
    # = the sum of per-tensor Frobenius distances over the sum of sqrt(numel)
    features = features_with_support()
    features.numel = np.array([100, 400, 2500][: features.n_tensors], dtype=np.int64)
    assert not np.allclose(features.distances(), features.rms_distances.mean(axis=0))
    frobenius = features.rms_distances * np.sqrt(features.numel.astype(float))[:, None, None]
    expected = frobenius.sum(axis=0) / np.sqrt(features.numel.astype(float)).sum()
    np.testing.assert_allclose(features.distances(), expected, rtol=1e-12)
    features.numel[:] = 7  # tensors of one size: the paper's plain mean
    np.testing.assert_allclose(features.distances(), features.rms_distances.mean(axis=0), rtol=1e-12)


@pytest.mark.slow
def test_dense_real_weights_take_the_plain_path_with_the_same_numbers(bert_family: Path):
    """The real fine-tuned MiniLM family is dense: no tensor is masked and the distances are the old ones."""
    from safetensors.numpy import load_file

    from mothertree.features.extract import extract_features
    from mothertree.features.select import select_tensors
    from mothertree.io import discover, open_checkpoint

    refs, _ = discover(bert_family)
    checkpoints = [open_checkpoint(ref) for ref in refs]
    tensors = select_tensors([c.tensors for c in checkpoints])
    features, _ = extract_features(checkpoints, [r.id for r in refs], tensors)
    assert features.metadata["masked_tensors"] == [] and features.common_support_norms is None
    whole = [load_file(str(ref.weights_path / "model.safetensors")) for ref in refs]
    for t, info in enumerate(tensors):
        stack = np.stack([w[info.name].reshape(-1) for w in whole]).astype(np.float32)
        assert not is_sparse(stack)
        before = np.sqrt(pairwise_squared_distances(stack) / info.numel)  # the formula of the dense path
        np.testing.assert_array_equal(features.rms_distances[t], before)


def test_sampled_norms_of_unpruned_pairs_are_the_exact_ones():
    # Synthetic weights (a pure function test): a fingerprint's 1,024 samples estimate a pruned pair's
    # common-support norms; a pair whose partner zeroes nothing shares the whole tensor, and its norm is
    # the exact one from the moments, not the samples' estimate (1 % off: more than a fine-tune moves it).
    from mothertree.features.extract import GroupArrays
    from mothertree.features.fingerprint import sample_positions
    from mothertree.io.types import TensorInfo

    rng = np.random.default_rng(0)
    parent = rng.normal(0, 0.05, 200 * 200).astype(np.float32)
    child = parent + rng.normal(0, 0.001, parent.size).astype(np.float32)
    full = np.stack([parent, child, magnitude_prune(child, 0.3)])
    info = TensorInfo("w", (200, 200), "F32")
    arrays = GroupArrays(1, 3, with_ranks=False)
    arrays.moments[0] = reductions.central_moments(full)
    arrays.add_distances(0, info, [0, 1, 2], full[:, sample_positions(info.shape, 1024)])
    exact = reductions.mean_squares(arrays.moments[0]) * full.shape[1]
    norms = arrays.common_support_norms[0]
    assert norms[0, 1] == exact[0] and norms[1, 0] == exact[1] and norms[2, 1] == exact[2]
    # Over what the pruned model kept: estimated from the samples.
    kept = float(np.sum(parent.astype(np.float64)[full[2] != 0] ** 2))
    assert norms[0, 2] != exact[0] and abs(norms[0, 2] / kept - 1) < 0.05
