"""Pairs stored at two precisions are compared at the coarser one (synthetic weights: the mechanics)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mothertree.features.reductions import PRECISIONS, rounded
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
    (features,), _ = read_features([tmp_path])
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
