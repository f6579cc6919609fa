"""The weight-decay clock (``features/decay.py``): rows no gradient reached, shrunk by decay, downstream.

The unit tests use synthetic arrays (a row scaled by hand stands for a row AdamW only decayed); the
others train a real 2-layer MiniLM chain whose fine-tunes train their embeddings, as real fine-tunes do,
and read the clock from the weights and from fingerprints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mothertree.features.decay import (
    MIN_DECAY,
    clock_tensors,
    combined_log_factors,
    decay_evidence,
    pair_log_factors,
    row_factors,
)
from mothertree.features.reductions import rounded
from mothertree.io.types import TensorInfo


def _rows(seed: int, rows: int = 48, cols: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.05, (rows, cols)).astype(np.float32)


def test_rows_only_decayed_are_found_with_their_factor_and_updated_rows_are_not() -> None:
    parent = _rows(0)
    child = parent.copy()
    child[:40] = (parent[:40].astype(np.float64) * (1 - 2e-5)).astype(np.float32)  # decayed, untouched
    child[40:] += np.random.default_rng(1).normal(0, 1e-4, (8, 48)).astype(np.float32)  # updated
    factors = row_factors(parent, child)
    assert np.isnan(factors[40:]).all()
    assert np.allclose(factors[:40], 1 - 2e-5, rtol=0, atol=1e-6)


def test_the_smaller_rows_are_downstream_whichever_order_the_pair_comes_in() -> None:
    parent = _rows(2)
    child = (parent.astype(np.float64) * (1 - 3e-5)).astype(np.float32)
    logs = pair_log_factors(np.stack([parent, child]))
    assert logs[0, 1] < -MIN_DECAY and logs[1, 0] == -logs[0, 1]
    assert decay_evidence(logs[0, 1]) == 1.0 and decay_evidence(logs[1, 0]) == -1.0


def test_equal_rows_and_rows_compared_across_precisions_are_no_evidence() -> None:
    parent = _rows(3)
    same = pair_log_factors(np.stack([parent, parent.copy()]))
    assert decay_evidence(same[0, 1]) == 0.0  # no weight decay: related, no direction
    decayed = (parent.astype(np.float64) * (1 - 3e-5)).astype(np.float32)
    across = pair_log_factors(np.stack([parent, rounded(decayed, 2)]))  # the child saved in bf16
    assert np.isnan(across[0, 1]) and decay_evidence(across[0, 1]) == 0.0


def test_too_few_scaled_rows_measure_nothing_and_tensors_combine_by_their_median() -> None:
    parent = _rows(4)
    child = parent + np.random.default_rng(5).normal(0, 1e-3, parent.shape).astype(np.float32)
    child[:3] = parent[:3] * np.float32(0.9999)  # three scaled rows: fewer than MIN_ROWS
    assert np.isnan(pair_log_factors(np.stack([parent, child]))[0, 1])
    a = np.array([[0.0, -2e-5], [2e-5, 0.0]])
    b = np.array([[0.0, np.nan], [np.nan, 0.0]])
    assert np.array_equal(combined_log_factors([a, b], 2), a)
    assert np.isnan(combined_log_factors([], 2)).all()


def test_the_clock_is_read_on_embedding_matrices_every_model_holds() -> None:
    one = {
        "embeddings.word_embeddings.weight": TensorInfo("embeddings.word_embeddings.weight", (100, 8), "F32"),
        "embeddings.position_embeddings.weight": TensorInfo(
            "embeddings.position_embeddings.weight", (64, 8), "F32"
        ),
        "encoder.layer.0.attention.self.query.weight": TensorInfo(
            "encoder.layer.0.attention.self.query.weight", (8, 8), "F32"
        ),
        "embeddings.LayerNorm.weight": TensorInfo("embeddings.LayerNorm.weight", (8,), "F32"),
    }
    other = {k: v for k, v in one.items() if "position" not in k}
    assert [t.name for t in clock_tensors([one, other])] == ["embeddings.word_embeddings.weight"]


# --- real training -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clock_chain(tmp_path_factory) -> Path:
    """A 2-layer MiniLM, two stages of masked-token training and a fine-tune, all training their embedding
    table with AdamW's weight decay (0.01), and a fine-tune of the root without weight decay."""
    from torch_threads import one_thread

    from mothertree.zoo.build import build_graph
    from mothertree.zoo.spec import GraphSpec, NodePlan
    from mothertree.zoo.text import CONTINUED_PRETRAINING

    spec = GraphSpec(
        name="clock-chain",
        family="text",
        layers=2,
        steps=12,
        freeze_embeddings=False,
        nodes=(
            NodePlan("k2", root="minilm@0"),
            NodePlan("k0", "k2", task=CONTINUED_PRETRAINING, lr=1e-4, seed=1),
            NodePlan("k3", "k0", task=CONTINUED_PRETRAINING, lr=1e-4, seed=2),
            NodePlan("k1", "k3", task="colour", lr=1e-4, seed=3),
            NodePlan("k4", "k2", task="has-number", lr=1e-4, seed=4, weight_decay=0.0),
        ),
    )
    with one_thread():
        return build_graph(spec, tmp_path_factory.mktemp("clock") / "graph", quiet=True).path


TRUE_EDGES = [("k2", "k0"), ("k0", "k3"), ("k3", "k1")]


@pytest.mark.slow
def test_the_clock_points_down_every_decayed_edge_and_is_silent_without_decay(clock_chain: Path) -> None:
    from mothertree.pipeline import read_features

    (features,), _ = read_features([clock_chain])
    at = {model: i for i, model in enumerate(features.model_ids)}
    evidence = features.clock_evidence()
    assert evidence is not None
    for parent, child in TRUE_EDGES:
        assert evidence[at[parent], at[child]] == 1.0, (parent, child)
    assert evidence[at["k2"], at["k4"]] == 0.0  # no weight decay: the rows did not move


@pytest.mark.slow
def test_a_saved_feature_set_keeps_its_clock(clock_chain: Path, tmp_path: Path) -> None:
    from mothertree.features.featureset import FeatureSet
    from mothertree.pipeline import read_features

    (features,), _ = read_features([clock_chain])
    features.save(tmp_path / "features.npz")
    loaded = FeatureSet.load(tmp_path / "features.npz")
    assert features.decay_log_factors is not None
    assert np.array_equal(loaded.decay_log_factors, features.decay_log_factors, equal_nan=True)


@pytest.mark.slow
def test_recovery_orients_the_chain_by_the_clock_and_says_so(clock_chain: Path) -> None:
    from mothertree.pipeline import recover

    result = recover([clock_chain])
    edges = {(e.parent, e.child): e for e in result.edges}
    for edge in TRUE_EDGES:
        assert edge in edges and edges[edge].direction_probability > 0.99, edge
    assert "weight-decay clock (3 of 4 edges)" in result.trees[0].cue


@pytest.mark.slow
def test_fingerprints_read_the_same_clock_as_the_weights(clock_chain: Path, tmp_path: Path) -> None:
    from mothertree.indexing import index, store_feature_sets
    from mothertree.pipeline import read_features
    from mothertree.store import FingerprintStore

    (exact,), _ = read_features([clock_chain])
    with FingerprintStore(tmp_path / "prints.sqlite") as store:
        index([clock_chain], store)
        (estimated,) = store_feature_sets(store)
    order = [estimated.model_ids.index(model) for model in exact.model_ids]
    assert exact.decay_log_factors is not None and estimated.decay_log_factors is not None
    # The same blocks, so the same factors; a pair met in the other order is computed the other way
    # round (1 / c), which rounds differently in the last digit.
    np.testing.assert_allclose(
        exact.decay_log_factors, estimated.decay_log_factors[np.ix_(order, order)], rtol=1e-9, atol=1e-15
    )
    assert np.array_equal(exact.clock_evidence(), estimated.clock_evidence()[np.ix_(order, order)])


def test_large_groups_read_the_clock_on_each_models_nearest_pairs_only() -> None:
    from mothertree.features.decay import ALL_PAIRS_UP_TO, CLOCK_NEIGHBOURS, clock_pairs

    # Synthetic: models on a line, each at distance 1 from the next.
    small = np.abs(np.subtract.outer(np.arange(10.0), np.arange(10.0)))
    assert clock_pairs(small) is None  # every pair
    n = ALL_PAIRS_UP_TO + 36
    line = np.abs(np.subtract.outer(np.arange(float(n)), np.arange(float(n))))
    pairs = clock_pairs(line)
    assert pairs is not None and (0, 1) in pairs and (0, n - 1) not in pairs
    assert all(j - i <= CLOCK_NEIGHBOURS for i, j in pairs)
    base = _rows(6)
    blocks = np.stack([(base.astype(np.float64) * (1 - 1e-5) ** k).astype(np.float32) for k in range(n)])
    logs = pair_log_factors(blocks, pairs)
    assert logs[0, 1] < -MIN_DECAY and logs[1, 0] > MIN_DECAY and np.isnan(logs[0, n - 1])
