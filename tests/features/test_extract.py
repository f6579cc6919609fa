"""The streaming loop against direct whole-model computation, on the real fine-tuned MiniLM family."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from safetensors.numpy import load_file

from mothertree.errors import InvalidCheckpointError
from mothertree.features import extract
from mothertree.features.decay import clock_tensors
from mothertree.features.extract import extract_features
from mothertree.features.featureset import FeatureSet
from mothertree.features.low_rank import LowRankRule
from mothertree.features.select import select_tensors
from mothertree.io import discover, open_checkpoint
from mothertree.io.types import Checkpoint


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


class Sabotaged(Checkpoint):
    """A real checkpoint whose tensor ``nan_in`` reads as NaN and whose tensor ``broken_in`` cannot be
    read at all: a model that breaks twice, the second time in a tensor the loop may read before the
    comparing threads have found the first."""

    def __init__(self, inner: Checkpoint, nan_in: str, broken_in: str) -> None:
        self.inner, self.path, self.nan_in, self.broken_in = inner, inner.path, nan_in, broken_in

    @property
    def tensors(self):
        return self.inner.tensors

    def read(self, name: str) -> np.ndarray:
        if name == self.broken_in:
            raise InvalidCheckpointError(f"`{self.path}` is truncated", path=self.path)
        values = self.inner.read(name)
        return np.full_like(values, np.nan) if name == self.nan_in else values

    def read_into(self, name: str, out: np.ndarray) -> None:
        np.copyto(out.reshape(-1), self.read(name).reshape(-1))


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [False, "nearest"])
def test_a_model_that_breaks_is_left_out_from_its_first_failure_as_read_in_turn(
    bert_family: Path, ranks, caplog: pytest.LogCaptureFixture
):
    refs, _ = discover(bert_family)
    checkpoints = [open_checkpoint(ref) for ref in refs]
    tensors = select_tensors([c.tensors for c in checkpoints])
    ids = [r.id for r in refs]
    broken = Sabotaged(checkpoints[2], nan_in=tensors[1].name, broken_in=tensors[3].name)
    with caplog.at_level("WARNING", logger="mothertree.features.extract"):
        features, failed = extract_features(
            [*checkpoints[:2], broken, *checkpoints[3:]], ids, tensors, ranks=ranks
        )
    others = [c for k, c in enumerate(checkpoints) if k != 2]
    expected, _ = extract_features(others, [i for k, i in enumerate(ids) if k != 2], tensors, ranks=ranks)
    # The NaN came first: that is the failure kept and the one warning, as reading in turn would find.
    assert [b.error.__class__.__name__ for b in failed] == ["NonFiniteWeightsError"]
    assert f"`{tensors[1].name}`" in str(failed[0].error)
    assert len([r for r in caplog.records if str(broken.path) in r.getMessage()]) == 1
    # The others as if the broken model had never been given, from its NaN on; before, its row was in
    # the stack (the Gram products' column means hold it: the same distances to rounding).
    assert features.model_ids == expected.model_ids
    np.testing.assert_array_equal(features.rms_distances[1:], expected.rms_distances[1:])
    np.testing.assert_allclose(features.rms_distances[0], expected.rms_distances[0], rtol=1e-12)
    np.testing.assert_array_equal(features.moments, expected.moments)
    if ranks:
        np.testing.assert_array_equal(features.ranks[1:], expected.ranks[1:])  # 0: its nearest too


@pytest.mark.slow
def test_the_clock_read_before_a_model_is_found_broken_is_the_others_clock(
    bert_family: Path, monkeypatch: pytest.MonkeyPatch
):
    refs, _ = discover(bert_family)
    checkpoints = [open_checkpoint(ref) for ref in refs]
    tensors = select_tensors([c.tensors for c in checkpoints])
    clock = clock_tensors([c.tensors for c in checkpoints])
    ids = [r.id for r in refs]
    early_models: list[list[int]] = []
    read_early = extract._early_clock

    def spy(*args):
        found = read_early(*args)
        early_models.extend(read.models for read in found)
        return found

    monkeypatch.setattr(extract, "_early_clock", spy)
    # NaN in the last compared tensor: found once every stack is read, after the clock is read early.
    broken = Sabotaged(checkpoints[2], nan_in=tensors[-1].name, broken_in="")
    features, failed = extract_features(
        [*checkpoints[:2], broken, *checkpoints[3:]], ids, tensors, clock=clock
    )
    others = [c for k, c in enumerate(checkpoints) if k != 2]
    expected, _ = extract_features(others, [i for k, i in enumerate(ids) if k != 2], tensors, clock=clock)
    assert clock and [b.error.__class__.__name__ for b in failed] == ["NonFiniteWeightsError"]
    assert early_models[0] == list(range(len(checkpoints)))  # the broken model's clock was read too
    assert features.decay_log_factors is not None and expected.decay_log_factors is not None
    off_diagonal = ~np.eye(len(others), dtype=bool)
    assert np.isfinite(expected.decay_log_factors[off_diagonal]).all()  # every pair measured
    np.testing.assert_array_equal(features.decay_log_factors, expected.decay_log_factors)


class Interrupted(Sabotaged):
    """A real checkpoint whose tensor ``at`` is never read: Ctrl-C comes first."""

    def __init__(self, inner: Checkpoint, at: str) -> None:
        super().__init__(inner, nan_in="", broken_in="")
        self.at = at

    def read(self, name: str) -> np.ndarray:
        if name == self.at:
            raise KeyboardInterrupt
        return self.inner.read(name)


@pytest.mark.slow
def test_ctrl_c_mid_loop_stops_it_without_waiting_on_the_compare_threads(bert_family: Path):
    refs, _ = discover(bert_family)
    checkpoints = [open_checkpoint(ref) for ref in refs]
    tensors = select_tensors([c.tensors for c in checkpoints])
    # Ctrl-C while reading the fifth tensor: the four before it are being compared, taking their turns.
    checkpoints[-1] = Interrupted(checkpoints[-1], at=tensors[4].name)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            extract_features(checkpoints, [r.id for r in refs], tensors, ranks="nearest")
        except KeyboardInterrupt as exc:
            raised.append(exc)

    loop = threading.Thread(target=run, daemon=True)  # a hung loop must not hang the test run
    loop.start()
    loop.join(timeout=60)
    assert not loop.is_alive() and len(raised) == 1
