"""The compiled linear algebra of the feature loop (``features/_linalg.c``) against numpy and scipy, on
synthetic values (pure functions: no model is needed to check arithmetic)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from mothertree.features import _linalg
from mothertree.features.rank import RIGHT_SEED, SKETCH_COLUMNS_PER_ROW, make_sketch, sketch_csr
from mothertree.features.reductions import (
    GRAM_KERNEL_ROWS,
    centred_gram,
    pairwise_squared_distances,
)


def reference_gram(stack: np.ndarray) -> np.ndarray:
    centred = stack.astype(np.float64)
    centred -= centred.mean(axis=0, keepdims=True)
    return centred @ centred.T


def fine_tunes(n_models: int, numel: int, seed: int) -> np.ndarray:
    """A shared base plus small per-model moves: the case centring is for (float32 differences of nearly
    equal weights are mostly rounding)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, 0.05, numel)
    moves = rng.normal(0.0, 1e-4, (n_models, numel))
    return (base + moves).astype(np.float32)


@pytest.mark.parametrize(
    ("n_models", "numel"),
    [(1, 7), (2, 1), (3, 255), (5, 256), (5, 257), (10, 147_456), (GRAM_KERNEL_ROWS, 1_031)],
)
def test_centred_gram_matches_numpy(n_models: int, numel: int) -> None:
    stack = fine_tunes(n_models, numel, seed=n_models * 1000 + numel)
    expected = reference_gram(stack)
    got = centred_gram(stack)
    scale = max(float(np.abs(expected).max()), 1e-300)
    assert np.abs(got - expected).max() <= 1e-12 * scale
    assert np.array_equal(got, got.T)


def test_distances_from_the_kernel_and_from_blas_agree() -> None:
    stack = fine_tunes(GRAM_KERNEL_ROWS + 2, 3_000, seed=7)
    wide = pairwise_squared_distances(stack)  # past GRAM_KERNEL_ROWS: float64 chunks and BLAS
    few = pairwise_squared_distances(stack[:GRAM_KERNEL_ROWS])  # the C kernel
    block = wide[:GRAM_KERNEL_ROWS, :GRAM_KERNEL_ROWS]
    # The sub-stack has another column mean, which distances do not depend on.
    assert np.allclose(few, block, rtol=1e-9, atol=1e-9 * float(block.max()))
    assert np.all(np.diag(few) == 0.0) and np.all(few >= 0.0)


def test_centred_gram_of_float64_stacks_takes_the_numpy_path() -> None:
    stack = fine_tunes(4, 500, seed=3).astype(np.float64)
    assert np.allclose(centred_gram(stack), reference_gram(stack), rtol=1e-12, atol=0.0)


def test_centred_gram_refuses_mismatched_buffers() -> None:
    stack = np.ones((3, 4), dtype=np.float32)
    with pytest.raises(TypeError, match="float32"):
        _linalg.centred_gram(stack.astype(np.float64), np.zeros((3, 3)), 3)
    with pytest.raises(TypeError, match="rows x rows"):
        _linalg.centred_gram(stack, np.zeros((2, 2)), 3)
    with pytest.raises(TypeError):
        _linalg.centred_gram(stack, np.zeros((3, 3)), 0)


def scipy_sketch(matrices: np.ndarray, left: object, right: object) -> np.ndarray:
    """The product the kernel replaces: ``S W T^T`` with scipy's sparse products, model by model."""
    return np.stack([np.asarray(right @ np.asarray(left @ m.astype(np.float64)).T).T for m in matrices])


@pytest.mark.parametrize(
    ("rows", "cols", "sketch_rows"),
    [(384, 384, 40), (1536, 384, 40), (384, 1536, 40), (30, 50, 40), (41, 17, 40), (100, 3, 8), (1, 1, 1)],
)
@pytest.mark.parametrize("seed", [0, 11])
def test_count_sketch_equals_scipy_bit_for_bit(rows: int, cols: int, sketch_rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    matrices = rng.normal(0.0, 0.02, (3, rows, cols)).astype(np.float32)
    left = make_sketch(rows, sketch_rows, seed)
    right = make_sketch(cols, SKETCH_COLUMNS_PER_ROW * sketch_rows, seed + RIGHT_SEED)
    height, width = left.shape[0], right.shape[0]
    out = np.full((3, height, width), np.nan)
    _linalg.count_sketch(
        matrices,
        3,
        rows,
        cols,
        *sketch_csr(rows, sketch_rows, seed),
        *sketch_csr(cols, SKETCH_COLUMNS_PER_ROW * sketch_rows, seed + RIGHT_SEED),
        out,
    )
    # Bit equality, not closeness: each entry is the same signed sum in the same order as scipy's.
    assert np.array_equal(out, scipy_sketch(matrices, left, right))


@pytest.mark.parametrize(("rows", "sketch_rows"), [(384, 128), (1536, 256), (1000, 7), (5, 8)])
def test_the_sketch_is_the_one_scipy_built(rows: int, sketch_rows: int) -> None:
    # How make_sketch built it before sketch_csr: scipy's CSR of the (bucket, row) entries.
    rng = np.random.default_rng(3)
    buckets = rng.permutation(np.arange(rows) % sketch_rows)
    signs = rng.choice(np.array([-1.0, 1.0]), size=rows)
    indptr, indices, values = sketch_csr(rows, sketch_rows, seed=3)
    if rows <= sketch_rows:
        assert np.array_equal(scipy.sparse.csr_array((values, indices, indptr)).toarray(), np.eye(rows))
        return
    before = scipy.sparse.csr_array((signs, (buckets, np.arange(rows))), shape=(sketch_rows, rows))
    assert np.array_equal(indptr, before.indptr) and np.array_equal(indices, before.indices)
    assert np.array_equal(values, before.data)


def test_count_sketch_refuses_bad_sketches() -> None:
    matrices = np.zeros((2, 6, 5), dtype=np.float32)
    left = (np.arange(4), np.arange(3), np.ones(3))  # the first 3 rows of the 6 x 6 identity
    right = sketch_csr(5, 8, seed=0)  # no more columns than the sketch: the identity
    out = np.zeros((2, 3, 5))
    _linalg.count_sketch(matrices, 2, 6, 5, *left, *right, out)
    out_of_range = (left[0], left[1] + 6, left[2])
    with pytest.raises(ValueError, match="CSR"):
        _linalg.count_sketch(matrices, 2, 6, 5, *out_of_range, *right, out)
    decreasing = (left[0][::-1].copy(), left[1], left[2])
    with pytest.raises(ValueError, match="CSR"):
        _linalg.count_sketch(matrices, 2, 6, 5, *decreasing, *right, out)
    with pytest.raises(TypeError, match="stack"):
        _linalg.count_sketch(matrices.astype(np.float64), 2, 6, 5, *left, *right, out)
    with pytest.raises(TypeError, match="out"):
        _linalg.count_sketch(matrices, 2, 6, 5, *left, *right, np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="rows >= 1"):
        _linalg.count_sketch(matrices, 2, 0, 5, *left, *right, out)
