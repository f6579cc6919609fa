"""Pairs stored at two precisions are compared at the coarser one; the skew of norm changes (synthetic
weights and moments: the mechanics)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mothertree.features.extract import extract_features
from mothertree.features.featureset import FeatureSet
from mothertree.features.reductions import PRECISIONS, rounded
from mothertree.features.select import select_tensors
from mothertree.io import open_checkpoint
from mothertree.pipeline import read_features


def test_bf16_rounding_is_to_nearest_even_as_torch_does():
    one = np.float32(1.0)
    halfway_down = one + np.float32(2.0**-8)  # halfway between 1 and 1 + 2^-7: ties go to the even 1
    halfway_up = one + np.float32(3 * 2.0**-8)  # halfway between 1 + 2^-7 and 1 + 2^-6: to 1 + 2^-6
    values = np.array([[halfway_down, halfway_up, -1.7, 3.1e-5]], dtype=np.float32)
    bf16 = rounded(values, PRECISIONS.index("BF16"))
    assert bf16[0, :2].tolist() == [1.0, 1.0 + 2.0**-6]
    np.testing.assert_array_equal(bf16, torch.from_numpy(values).to(torch.bfloat16).float().numpy())
    fp16 = rounded(values, PRECISIONS.index("F16"))
    np.testing.assert_array_equal(fp16, torch.from_numpy(values).half().float().numpy())


def _save(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"))


def test_a_bf16_copy_is_compared_with_its_fp32_parent_in_bf16(tmp_path: Path):
    generator = torch.Generator().manual_seed(0)
    parent = {f"layer{k}.weight": torch.randn(64, 64, generator=generator) ** 3 for k in range(3)}
    _save(tmp_path / "parent", parent)
    _save(tmp_path / "copy-bf16", {k: v.to(torch.bfloat16) for k, v in parent.items()})
    _save(
        tmp_path / "other",
        {k: v + 0.01 * torch.randn(64, 64, generator=generator) for k, v in parent.items()},
    )
    # Recovery keeps a bf16 re-save as an alias of its parent, not a model of its own (features/duplicates):
    (merged,), _ = read_features([tmp_path])
    assert merged.model_ids == ["other", "parent"] and merged.metadata["aliases"] == {"parent": ["copy-bf16"]}
    # The features themselves still compare such a pair at the coarser precision, which is what this checks.
    names = ["copy-bf16", "other", "parent"]
    checkpoints = [open_checkpoint(tmp_path / name) for name in names]
    features, _ = extract_features(checkpoints, names, select_tensors([c.tensors for c in checkpoints], None))
    for checkpoint in checkpoints:
        checkpoint.close()
    index = {m: i for i, m in enumerate(features.model_ids)}
    p, c, o = index["parent"], index["copy-bf16"], index["other"]
    assert features.precisions is not None
    assert features.precisions[:, c].tolist() == [PRECISIONS.index("BF16")] * 3
    pairs = features.kurtosis_pairs()
    # The parent as seen from its bf16 copy is the parent rounded to bf16: the copy itself, exactly.
    assert pairs[p, c] == pytest.approx(pairs[c, p], abs=1e-12)
    assert pairs[p, c] != pytest.approx(features.summed_kurtosis()[p], abs=1e-6)
    # Between two fp32 models nothing is rounded.
    assert pairs[p, o] == pytest.approx(features.summed_kurtosis()[p], abs=1e-12)
    norms = features.log_norm_pairs()
    assert norms[p, c] == pytest.approx(norms[c, p], abs=1e-12)
    # Saved and loaded, the precisions and rounded moments stay.
    features.save(tmp_path / "features.npz")
    again = type(features).load(tmp_path / "features.npz")
    np.testing.assert_array_equal(again.kurtosis_pairs(), pairs)


def _features_with_mean_squares(mean_squares: np.ndarray) -> FeatureSet:
    """A FeatureSet whose tensors have the given per-model mean squares (zero mean), nothing else."""
    n_tensors, n_models = mean_squares.shape
    moments = np.zeros((n_tensors, n_models, 4))
    moments[..., 1] = mean_squares
    return FeatureSet(
        model_ids=[f"m{i}" for i in range(n_models)],
        model_paths=[""] * n_models,
        tensor_names=[f"t{k}" for k in range(n_tensors)],
        numel=np.full(n_tensors, 100, dtype=np.int64),
        rms_distances=np.zeros((n_tensors, n_models, n_models)),
        moments=moments,
    )


def test_norm_changes_skew_right_from_parent_to_child_even_under_weight_decay():
    # Synthetic mean squares. The child: every tensor shrunk by weight decay (x 0.99), and training adding
    # energy unevenly, most of it to one tensor: a long right tail of log changes, read parent -> child.
    parent = np.array([1.0, 2.0, 0.5, 1.5, 1.0])
    child = parent * 0.99 * np.array([1.001, 1.002, 1.001, 1.0, 1.05])
    skew = _features_with_mean_squares(np.column_stack([parent, child])).norm_change_skew()
    assert skew[0, 1] > 1.0 and skew[1, 0] == -skew[0, 1]
    # The norm itself shrank: the norm cue would call the child the parent, the skew does not.
    assert np.log(child.sum()) < np.log(parent.sum())
    # By hand: log changes log(0.99) + log([1.001, 1.002, 1.001, 1, 1.05]); their skewness is that of
    # [0.0010, 0.0020, 0.0010, 0, 0.0488] (a shift changes nothing): m3 / m2^1.5 = 1.4959.
    assert skew[0, 1] == pytest.approx(1.4959, abs=1e-3)
