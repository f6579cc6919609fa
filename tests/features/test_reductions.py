"""Reductions against direct computation. Synthetic random weights: these are pure functions."""

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from mothertree.features import reductions
from mothertree.features.reductions import (
    RELATEDNESS_QUANTILE,
    central_moments,
    excess_kurtosis,
    pairwise_squared_distances,
    relatedness,
)
from mothertree.tree.cluster import UNRELATED_ABOVE


def direct_squared_distances(stack: np.ndarray) -> np.ndarray:
    x = stack.astype(np.float64)
    return ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1)


def test_distances_match_direct_subtraction_for_near_identical_models():
    # Fine-tunes differ from their parent by ~1e-4 of the weight scale: the case where the uncentred
    # float32 Gram trick fails.
    rng = np.random.default_rng(0)
    parent = rng.normal(0, 0.05, size=20_000).astype(np.float32)
    stack = np.stack([parent + rng.normal(0, 5e-6, size=parent.size).astype(np.float32) for _ in range(6)])
    expected = direct_squared_distances(stack)
    got = pairwise_squared_distances(stack)
    off = ~np.eye(6, dtype=bool)
    np.testing.assert_allclose(got[off], expected[off], rtol=1e-6)
    assert np.all(np.diag(got) == 0)


def test_uncentred_float32_gram_is_wrong_which_is_why_we_centre():
    rng = np.random.default_rng(0)
    parent = rng.normal(0, 0.05, size=20_000).astype(np.float32)
    stack = np.stack([parent + rng.normal(0, 5e-6, size=parent.size).astype(np.float32) for _ in range(4)])
    gram = stack @ stack.T
    naive = np.diag(gram)[:, None] + np.diag(gram)[None, :] - 2 * gram
    expected = direct_squared_distances(stack)
    relative_error = np.abs(naive[0, 1] - expected[0, 1]) / expected[0, 1]
    assert relative_error > 0.1


def test_distances_accumulate_over_chunks(monkeypatch):
    monkeypatch.setattr(reductions, "CHUNK_COLUMNS", 7)
    rng = np.random.default_rng(1)
    stack = rng.normal(size=(5, 100)).astype(np.float32)
    np.testing.assert_allclose(
        pairwise_squared_distances(stack), direct_squared_distances(stack), rtol=1e-9, atol=1e-9
    )
    np.testing.assert_allclose(
        excess_kurtosis(central_moments(stack)),
        scipy.stats.kurtosis(stack.astype(np.float64), axis=1),
        rtol=1e-9,
    )


@settings(max_examples=40, deadline=None)
@given(
    n_models=st.integers(2, 6),
    numel=st.integers(4, 300),
    seed=st.integers(0, 2**31),
    scale=st.floats(1e-3, 1e3),
)
def test_distance_properties(n_models, numel, seed, scale):
    rng = np.random.default_rng(seed)
    stack = (rng.standard_t(df=5, size=(n_models, numel)) * scale).astype(np.float32)
    d = pairwise_squared_distances(stack)
    np.testing.assert_allclose(d, d.T)
    assert np.all(d >= 0)
    np.testing.assert_allclose(d, direct_squared_distances(stack), rtol=1e-6, atol=1e-9 * scale**2 * numel)


def test_kurtosis_matches_scipy():
    rng = np.random.default_rng(2)
    stack = np.stack(
        [rng.normal(size=5000), rng.laplace(size=5000), rng.uniform(size=5000), rng.standard_t(3, size=5000)]
    ).astype(np.float32)
    np.testing.assert_allclose(
        excess_kurtosis(central_moments(stack)),
        scipy.stats.kurtosis(stack.astype(np.float64), axis=1),
        rtol=1e-10,
    )


def test_kurtosis_of_constant_tensor_is_nan():
    assert np.isnan(excess_kurtosis(central_moments(np.ones((1, 10), dtype=np.float32))))[0]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_any_float_dtype_is_accumulated_in_float64(dtype):
    stack = np.array([[1, 2, 3, 4], [1, 2, 3, 5]], dtype=dtype)
    assert pairwise_squared_distances(stack)[0, 1] == pytest.approx(1.0)


def test_relatedness_keeps_a_heavy_lora_with_its_parent_and_unrelated_weights_apart():
    # Per-tensor relative distances of the rank-64 LoRA child t09 to its parent in the rebuilt held-out
    # text-lora-v split (attention matrices, pooler last): the mean (0.56) crossed the cut.
    lora = np.array([0.8996, 0.5236, 0.3447, 1.0706, 0.3592, 0.4756, 0.6019, 0.7206, 0.0])
    unrelated = np.full(9, np.sqrt(2.0)) + np.linspace(-0.01, 0.01, 9)
    assert lora.mean() > UNRELATED_ABOVE
    got = relatedness(np.stack([lora, unrelated], axis=1))
    assert got[0] == pytest.approx(np.quantile(lora, 0.25)) and got[0] < UNRELATED_ABOVE
    assert got[1] > 1.4


def test_relatedness_skips_missing_tensors_and_is_nan_where_all_are():
    # A masked tensor a pair shares nothing of is NaN for that pair (synthetic values).
    per_tensor = np.array([[0.1, np.nan], [np.nan, np.nan], [0.3, np.nan]])
    got = relatedness(per_tensor)
    assert got[0] == pytest.approx(0.15) and np.isnan(got[1])
    assert relatedness(np.zeros((0, 3))).shape == (3,)


def test_relatedness_is_numpys_nan_skipping_quartile_pair_by_pair():
    # Synthetic distances: pairs with every tensor, with some missing, with none.
    rng = np.random.default_rng(5)
    per_tensor = rng.random((5, 40, 40)) * 2
    per_tensor[rng.random(per_tensor.shape) < 0.15] = np.nan
    per_tensor[:, 2, 3] = np.nan
    got = relatedness(per_tensor)
    for i, j in [(0, 0), (2, 3), *zip(rng.integers(0, 40, 50), rng.integers(0, 40, 50), strict=True)]:
        column = per_tensor[:, i, j]
        kept = column[~np.isnan(column)]
        expected = np.quantile(kept, RELATEDNESS_QUANTILE) if kept.size else np.nan
        assert np.array_equal(got[i, j], expected, equal_nan=True), (i, j)
