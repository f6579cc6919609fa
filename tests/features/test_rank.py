"""Rank of weight differences on matrices of known rank (synthetic weights: these are pure functions)."""

import ml_dtypes
import numpy as np
import pytest

from mothertree.features.low_rank import LowRankRule, in_every_tensor, neighbour_pairs
from mothertree.features.rank import (
    CLEAR_FACTOR,
    clearly_full_rank,
    counts_above,
    gram_matrices,
    nearest_pairs,
    pairwise_ranks,
    sketched_ranks,
)

RULE = LowRankRule()

ROWS, COLS = 300, 200
STORAGE = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}


def stored(weights: np.ndarray, dtype: str) -> np.ndarray:
    """What a checkpoint in ``dtype`` holds, read back as float32."""
    return weights.astype(STORAGE[dtype]).astype(np.float32)


def lora_family(rng, ranks, scale=0.02):
    """A parent plus LoRA children: W + (B @ A) with B @ A of the given ranks, ~2% of the weight scale."""
    parent = rng.normal(0, 0.05, size=(ROWS, COLS))
    children = []
    for r in ranks:
        b = rng.normal(size=(ROWS, r))
        a = rng.normal(size=(r, COLS))
        delta = b @ a
        delta *= scale * np.sqrt(np.mean(parent**2)) / np.sqrt(np.mean(delta**2))
        children.append(parent + delta)
    return [parent, *children]


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
@pytest.mark.parametrize("sketch_rows", [128, 512])  # 512 >= ROWS: exact, no sketch
def test_parent_child_is_the_lora_rank_and_siblings_add_up(dtype, sketch_rows):
    rng = np.random.default_rng(0)
    models = [stored(w, dtype) for w in lora_family(rng, [4, 8, 16])]
    stack = np.stack([m.ravel() for m in models])
    ranks, clear_ranks, cap = sketched_ranks(
        stack, (ROWS, COLS), [dtype] * len(stack), seed=0, sketch_rows=sketch_rows
    )
    assert cap == min(sketch_rows, ROWS, COLS)
    assert list(ranks[0, 1:]) == [4, 8, 16]
    assert ranks[1, 2] == 12 and ranks[1, 3] == 20 and ranks[2, 3] == 24
    np.testing.assert_array_equal(ranks, ranks.T)
    # These updates' singular values are all far above the rounding of any dtype: all of the rank is clear.
    assert in_every_tensor(RULE.judge_tensors(ranks[None], clear_ranks[None], np.array([cap]))).sum() == 4 * 3


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
@pytest.mark.parametrize("change", [0.01, 0.05])
def test_a_full_fine_tune_is_far_from_low_rank(dtype, change):
    # A dense update of 1% of the weight scale (our MiniLM fine-tunes moved 0.7-1.1%): in bf16, whose
    # rounding is 0.2-0.4% of each weight, its smaller singular values sink under the rounding noise (59 of
    # 128 measured at 1%), yet the rank stays above the low-rank line of the `auto` distance rule.
    rng = np.random.default_rng(1)
    parent = rng.normal(0, 0.05, size=(ROWS, COLS))
    child = parent + rng.normal(0, 0.05 * change, size=parent.shape)
    stack = np.stack([stored(parent, dtype).ravel(), stored(child, dtype).ravel()])
    ranks, clear_ranks, cap = sketched_ranks(stack, (ROWS, COLS), [dtype] * len(stack), seed=0)
    if dtype != "BF16":
        assert ranks[0, 1] == cap
    else:  # full, or below the cap but not clear: most of the count is gone at 4x the tolerance
        assert ranks[0, 1] == cap or clear_ranks[0, 1] < 0.75 * ranks[0, 1]
    assert not in_every_tensor(RULE.judge_tensors(ranks[None], clear_ranks[None], np.array([cap]))).any()


@pytest.mark.parametrize("dtype", ["F16", "BF16"])
def test_rounding_alone_is_not_rank(dtype):
    rng = np.random.default_rng(2)
    parent = rng.normal(0, 0.05, size=(ROWS, COLS))
    # The same weights stored twice, once after a float32 round trip: differences are rounding only.
    again = parent.astype(np.float32).astype(np.float64)
    stack = np.stack([stored(parent, dtype).ravel(), stored(again, dtype).ravel()])
    ranks, _, _ = sketched_ranks(stack, (ROWS, COLS), [dtype] * len(stack), seed=0)
    assert ranks[0, 1] == 0


def test_each_pair_is_judged_by_its_own_coarser_dtype():
    # A full fine-tune in float32 stays full rank beside a bf16 model in the same collection.
    rng = np.random.default_rng(3)
    parent = rng.normal(0, 0.05, size=(ROWS, COLS))
    child = parent + rng.normal(0, 0.05 * 0.003, size=parent.shape)
    stack = np.stack(
        [stored(parent, "F32").ravel(), stored(child, "F32").ravel(), stored(child, "BF16").ravel()]
    )
    ranks, _, cap = sketched_ranks(stack, (ROWS, COLS), ["F32", "F32", "BF16"], seed=0)
    assert ranks[0, 1] == cap
    assert ranks[0, 2] < ranks[0, 1]  # a 0.3% update is under bf16's rounding


def test_only_the_asked_pairs_are_computed():
    # Synthetic weights (as above): a parent and LoRA children of ranks 4 and 8.
    rng = np.random.default_rng(1)
    stack = np.stack([m.ravel() for m in lora_family(rng, [4, 8])]).astype(np.float32)
    full, _, _ = sketched_ranks(stack, (ROWS, COLS), ["F32"] * 3, seed=0)
    some, clear_ranks, _ = sketched_ranks(stack, (ROWS, COLS), ["F32"] * 3, seed=0, pairs=[(1, 0), (2, 0)])
    assert some[0, 1] == some[1, 0] == full[0, 1] == 4 and some[0, 2] == full[0, 2] == 8
    assert some[1, 2] == some[2, 1] == -1 and list(np.diag(some)) == [0, 0, 0]
    assert (
        clear_ranks[1, 2] == -1
        and not RULE.judge_tensors(some[None], clear_ranks[None], np.array([128]))[0, 1, 2]
    )


def test_equal_rows_are_rank_zero_without_a_sketch(monkeypatch):
    # Synthetic weights (as above): a parent, a LoRA child of rank 4, and an exact copy of the parent.
    from mothertree.features import rank

    rng = np.random.default_rng(2)
    parent, child = lora_family(rng, [4])
    stack = np.stack([parent.ravel(), child.ravel(), parent.ravel()]).astype(np.float32)
    full, full_clear, cap = sketched_ranks(stack, (ROWS, COLS), ["F32"] * 3, seed=0)
    assert full[0, 2] == full_clear[0, 2] == 0 and full[0, 1] == 4  # what the sketch says of them
    some, some_clear, _ = sketched_ranks(stack, (ROWS, COLS), ["F32"] * 3, seed=0, pairs=[(0, 2), (1, 0)])
    assert some[0, 2] == some[2, 0] == some_clear[0, 2] == 0 and some[0, 1] == 4 and some[1, 2] == -1

    def no_sketch(*args):
        raise AssertionError("only equal rows were asked for")

    monkeypatch.setattr(rank._linalg, "count_sketch", no_sketch)
    equal, equal_clear, equal_cap = sketched_ranks(stack, (ROWS, COLS), ["F32"] * 3, seed=0, pairs=[(2, 0)])
    assert equal[0, 2] == equal[2, 0] == equal_clear[2, 0] == 0 and equal[0, 1] == -1
    assert equal_cap == cap


def test_nearest_pairs_are_each_models_closest_other():
    d = np.array([[0.0, 1.0, 5.0], [1.0, 0.0, 2.0], [5.0, 2.0, 0.0]])
    assert nearest_pairs(d) == [(0, 1), (1, 0), (2, 1)]
    assert nearest_pairs(np.zeros((1, 1))) == []


@pytest.mark.parametrize("dtype", ["F32", "BF16"])
def test_a_lora_update_with_a_decaying_spectrum_is_low_rank_only_where_stored_finely(dtype):
    # Trained LoRA updates are not flat: their singular values decay (here by 100x over the rank; in our
    # rank-32 merges by ~300x; ~3% of the weight scale in all). In fp32 the spectrum ends in a cliff; a
    # bf16 merge of the same update loses its smaller singular values in rounding and can no longer be told
    # from a dense update.
    rng = np.random.default_rng(4)
    parent = rng.normal(0, 0.05, size=(ROWS, COLS))
    r = 32
    u, _ = np.linalg.qr(rng.normal(size=(ROWS, r)))
    v, _ = np.linalg.qr(rng.normal(size=(COLS, r)))
    delta = (u * np.geomspace(1.0, 0.01, r)) @ v.T
    delta *= 0.03 * np.sqrt(np.mean(parent**2)) / np.sqrt(np.mean(delta**2))
    stack = np.stack([stored(parent, dtype).ravel(), stored(parent + delta, dtype).ravel()])
    ranks, clear_ranks, cap = sketched_ranks(stack, (ROWS, COLS), [dtype] * 2, seed=0)
    clear = in_every_tensor(RULE.judge_tensors(ranks[None], clear_ranks[None], np.array([cap])))[0, 1]
    if dtype == "F32":
        assert ranks[0, 1] == clear_ranks[0, 1] == r and clear
    else:
        assert ranks[0, 1] < r and not clear


def test_a_pair_is_low_rank_only_if_every_tensor_is():
    # Pure function on hand-written counts: tensor 0 (cap 16) is a LoRA-targeted matrix, tensor 1 untouched
    # (rank 0), tensor 2 (cap 8) dense for pair (0, 2): at its cap.
    ranks = np.array(
        [
            [[0, 4, 4], [4, 0, 8], [4, 8, 0]],
            [[0, 0, 0], [0, 0, 0], [0, 0, 0]],
            [[0, 2, 8], [2, 0, 2], [8, 2, 0]],
        ]
    )
    clear_ranks = ranks.copy()
    clear_ranks[0, 1, 2] = clear_ranks[0, 2, 1] = 3  # pair (1, 2) keeps 3 of 8 clear: not clearly low-rank
    clear = in_every_tensor(RULE.judge_tensors(ranks, clear_ranks, np.array([16, 8, 8])))
    assert clear.tolist() == [[False, True, False], [True, False, False], [False, False, False]]


def test_neighbour_pairs_join_each_model_to_its_k_nearest():
    # Points on a line at 0, 1, 3, 7, 15: each one's nearest is its left or right neighbour.
    x = np.array([0.0, 1.0, 3.0, 7.0, 15.0])
    d = np.abs(x[:, None] - x[None, :])
    assert neighbour_pairs(d, k=1) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert (0, 2) in neighbour_pairs(d, k=2) and (0, 4) not in neighbour_pairs(d, k=2)
    assert len(neighbour_pairs(d, k=10)) == 10  # k beyond n: every pair once


def test_rank_zero_is_clear_only_for_equal_tensors():
    # Hand-written counts: pair (0, 1) differs in tensor 1 by less than the rounding noise (rank 0, RMS
    # distance > 0, e.g. a small update stored in bf16): nothing is known of its rank. Pair (0, 2) is
    # equal there (a layer LoRA left alone).
    ranks = np.array([[[0, 4, 4], [4, 0, 8], [4, 8, 0]], [[0, 0, 0], [0, 0, 0], [0, 0, 0]]])
    distances = np.array(
        [[[0, 1, 1], [1, 0, 1], [1, 1, 0]], [[0, 1e-3, 0], [1e-3, 0, 1e-3], [0, 1e-3, 0]]], dtype=float
    )
    clear = in_every_tensor(RULE.judge_tensors(ranks, ranks.copy(), np.array([16, 16]), distances == 0))
    assert not clear[0, 1] and clear[0, 2] and not clear[1, 2]
    trusted = in_every_tensor(RULE.judge_tensors(ranks, ranks.copy(), np.array([16, 16])))
    assert trusted[0, 1]  # without distances: trusted


def _svd_counts(matrices: np.ndarray, floors: np.ndarray) -> np.ndarray:
    singular_values = np.linalg.svd(matrices, compute_uv=False)
    return (singular_values > floors[:, None]).sum(axis=1)


@pytest.mark.parametrize("shape", [(128, 256), (48, 48), (32, 27)])
def test_a_cholesky_proof_of_full_rank_agrees_with_the_singular_values(shape):
    # Synthetic matrices, their smallest singular value set on either side of the floor.
    rng = np.random.default_rng(7)
    cap = min(shape)
    u, _ = np.linalg.qr(rng.normal(size=(shape[0], shape[0])))
    v, _ = np.linalg.qr(rng.normal(size=(shape[1], shape[1])))
    spectra = [np.geomspace(10.0, smallest, cap) for smallest in (1e-1, 1.5e-3, 0.9e-3, 1e-9)]
    spectra.append(np.r_[np.ones(cap - 8), np.zeros(8)])  # rank cap - 8: a LoRA-like difference
    matrices = np.stack([(u[:, :cap] * s) @ v[:, :cap].T for s in spectra])
    floors = np.full(len(matrices), 1e-3)
    proven = clearly_full_rank(*gram_matrices(matrices), floors)
    assert proven.tolist() == [True, True, False, False, False]
    # Where it proves full rank, the singular values say so too; it is never wrong, only sometimes unsure.
    assert (_svd_counts(matrices, floors)[proven] == cap).all()


@pytest.mark.parametrize("shape", [(128, 256), (48, 48), (256, 128)])
def test_counts_from_the_gram_are_the_singular_values_counts(shape, monkeypatch):
    # Synthetic matrices of known spectra, spread across both floors; the last has a singular value on
    # the floor to within rounding, which only the SVD may count.
    rng = np.random.default_rng(11)
    cap = min(shape)
    u, _ = np.linalg.qr(rng.normal(size=(shape[0], shape[0])))
    v, _ = np.linalg.qr(rng.normal(size=(shape[1], shape[1])))
    spectra = [np.geomspace(10.0, smallest, cap) for smallest in (1e-1, 1e-4, 1e-8)]
    spectra.append(np.r_[np.ones(8), np.full(cap - 8, 2e-4)])  # rank 8 over noise: a LoRA-like one
    spectra.append(np.r_[np.ones(cap - 1), 1e-3 * (1 + 1e-13)])
    matrices = np.stack([(u[:, :cap] * s) @ v[:, :cap].T for s in spectra])
    floors = np.full(len(matrices), 1e-3)
    svds = []
    svd = np.linalg.svd
    monkeypatch.setattr(np.linalg, "svd", lambda m, **kw: svds.append(len(m)) or svd(m, **kw))
    ranks, clear = counts_above(matrices, *gram_matrices(matrices), floors)
    monkeypatch.undo()
    assert ranks.tolist() == _svd_counts(matrices, floors).tolist()
    assert clear.tolist() == _svd_counts(matrices, CLEAR_FACTOR * floors).tolist()
    assert ranks[3] == 8 and clear[3] == 8
    assert svds == [1]  # only the one on the floor needed its singular values


def test_pairwise_ranks_count_as_the_singular_values_do():
    rng = np.random.default_rng(3)
    family = lora_family(rng, ranks=(4, 40))
    dense = family[0] + rng.normal(0, 1e-3, size=(ROWS, COLS))  # a full fine-tune of the parent
    sketched = np.stack([*family, dense])[:, :128, :]
    tolerances = np.full((4, 4), 1e-6)
    ranks, clear = pairwise_ranks(sketched, tolerances)
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    differences = np.stack([sketched[i] - sketched[j] for i, j in pairs])
    expected = _svd_counts(differences, np.full(len(pairs), 1e-6))
    expected_clear = _svd_counts(differences, np.full(len(pairs), CLEAR_FACTOR * 1e-6))
    assert [ranks[i, j] for i, j in pairs] == expected.tolist()
    assert [clear[i, j] for i, j in pairs] == expected_clear.tolist()
    assert ranks[0, 1] == 4 and ranks[0, 3] == 128  # the LoRA child, and the dense one at the cap
