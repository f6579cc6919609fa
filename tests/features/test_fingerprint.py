"""Fingerprints as pure functions: sampling, blocks, serialisation, copies.

Weights here are synthetic (seeded Gaussian matrices, written with safetensors where a file is needed):
these tests check arithmetic with known answers. Fingerprints of really trained models are tested in
tests/test_store.py against the exact path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mothertree.errors import InvalidFeatureSetError
from mothertree.features.fingerprint import (
    DEFAULT_PARAMS,
    MAGIC,
    MAGIC_V1,
    Fingerprint,
    FingerprintParams,
    block_positions,
    fingerprint,
    is_copy,
    sample_positions,
    sampled_block,
)
from mothertree.features.rank import CLEAR_FACTOR, pairwise_ranks, sketched_noise_tolerance
from mothertree.features.reductions import central_moments
from mothertree.io import open_checkpoint


def _weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "layer.0.weight": torch.randn(96, 96, generator=g) * 0.05,
        "layer.1.weight": torch.randn(96, 96, generator=g) * 0.05,
        "head.weight": torch.randn(3, 96, generator=g) * 0.05,
        "head.bias": torch.randn(3, generator=g) * 0.05,
    }


def _fingerprint_of(tensors: dict[str, torch.Tensor], path: Path, params=DEFAULT_PARAMS) -> Fingerprint:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    with open_checkpoint(path) as checkpoint:
        return fingerprint(checkpoint, params)


def test_positions_depend_on_shape_only_and_cover_small_tensors():
    a = sample_positions((200, 300), 1024)
    assert np.array_equal(a, sample_positions((200, 300), 1024))
    assert len(a) == 1024 and len(np.unique(a)) == 1024 and a.max() < 60_000
    assert not np.array_equal(a, sample_positions((300, 200), 1024))
    assert np.array_equal(sample_positions((10, 20), 1024), np.arange(200))
    rows, cols = block_positions((200, 300), 48)
    assert len(rows) == len(cols) == 48 and rows.max() < 200 and cols.max() < 300


def test_a_low_rank_difference_keeps_its_rank_in_the_sampled_block():
    rng = np.random.default_rng(0)
    parent = rng.normal(0, 0.05, (400, 300)).astype(np.float32)
    update = (rng.normal(0, 0.01, (400, 8)) @ rng.normal(0, 0.01, (8, 300))).astype(np.float32)
    child = parent + update
    sibling = parent + rng.normal(0, 1e-3, parent.shape).astype(np.float32)
    blocks = np.stack(
        [sampled_block(m.reshape(-1), (400, 300), 48).astype(np.float64) for m in (parent, child, sibling)]
    )
    tolerance = sketched_noise_tolerance((48, 48), (48, 48), float(np.sqrt(np.mean(parent**2))), "F32")
    ranks, clear = pairwise_ranks(blocks, np.full((3, 3), tolerance))
    assert ranks[0, 1] == 8 and clear[0, 1] == 8  # the LoRA-like update
    assert ranks[0, 2] == 48  # a dense update: full rank, at the cap
    assert CLEAR_FACTOR > 1


def test_moments_are_exact_and_samples_estimate_the_distance(tmp_path: Path):
    a, b = _weights(0), _weights(0)
    b["layer.0.weight"] = b["layer.0.weight"] + 0.01 * torch.randn(
        96, 96, generator=torch.Generator().manual_seed(5)
    )
    fa, fb = _fingerprint_of(a, tmp_path / "a.safetensors"), _fingerprint_of(b, tmp_path / "b.safetensors")
    k = fa.weights.index("layer.0.weight")
    exact = central_moments(a["layer.0.weight"].numpy().reshape(1, -1))[0]
    assert np.allclose(fa.moments[k], exact, rtol=1e-12)
    true_rms = float(torch.sqrt(torch.mean((a["layer.0.weight"] - b["layer.0.weight"]) ** 2)))
    sampled_rms = float(np.sqrt(np.mean((fa.samples[k] - fb.samples[k]) ** 2.0)))
    # 1024 samples of 9216 Gaussian differences: relative error about sqrt(1 / 2048) = 2 %.
    assert sampled_rms == pytest.approx(true_rms, rel=0.1)
    assert fa.content_id != fb.content_id
    assert "head.bias" not in fa.weights and "head.bias" in fa.digests


def test_a_fingerprint_survives_its_bytes(tmp_path: Path):
    original = _fingerprint_of(_weights(1), tmp_path / "m.safetensors")
    again = Fingerprint.from_bytes(original.to_bytes())
    assert again.content_id == original.content_id and again.weights == original.weights
    assert all(np.array_equal(x, y) for x, y in zip(again.samples, original.samples, strict=True))
    assert all(np.array_equal(x, y) for x, y in zip(again.sketches, original.sketches, strict=True))
    assert again.params == original.params
    assert again.maxima is not None and original.maxima is not None
    assert np.array_equal(again.maxima, original.maxima)
    weights = _weights(1)
    assert again.maxima.tolist() == [float(weights[n].abs().max()) for n in again.weights]
    with pytest.raises(InvalidFeatureSetError):
        Fingerprint.from_bytes(original.to_bytes()[:200])


def test_a_fingerprint_of_blob_version_1_still_reads(tmp_path: Path):
    # Version 1 blobs (stores written before the maxima) are the same bytes without the trailing maxima.
    original = _fingerprint_of(_weights(2), tmp_path / "m.safetensors")
    blob = original.to_bytes()
    old = MAGIC_V1 + blob[len(MAGIC) : len(blob) - 8 * len(original.weights)]
    again = Fingerprint.from_bytes(old)
    assert again.maxima is None and again.content_id == original.content_id
    assert all(np.array_equal(x, y) for x, y in zip(again.samples, original.samples, strict=True))
    assert Fingerprint.from_bytes(again.to_bytes()).maxima is not None  # NaN maxima: "not known"


def test_copies_are_told_by_digests_even_across_dtypes(tmp_path: Path):
    weights = _weights(2)
    original = _fingerprint_of(weights, tmp_path / "a.safetensors")
    same = _fingerprint_of(weights, tmp_path / "b.safetensors")
    resaved = _fingerprint_of(
        {k: v.to(torch.bfloat16) for k, v in weights.items()}, tmp_path / "c.safetensors"
    )
    tuned = dict(weights)
    tuned["head.bias"] = tuned["head.bias"] + 1e-3  # a tensor outside the weights compared
    changed = _fingerprint_of(tuned, tmp_path / "d.safetensors")
    assert same.content_id == original.content_id
    assert is_copy(original, same) and is_copy(original, resaved) and is_copy(resaved, original)
    assert not is_copy(original, changed)
    assert resaved.content_id != original.content_id  # other values on disk: another content
    half = _fingerprint_of({k: v.to(torch.float16) for k, v in weights.items()}, tmp_path / "e.safetensors")
    assert not is_copy(half, resaved)  # fp16 and bf16: neither is the other rounded


def test_parameters_shape_the_fingerprint(tmp_path: Path):
    small = _fingerprint_of(_weights(3), tmp_path / "m.safetensors", FingerprintParams(samples=64, sketch=8))
    assert small.weights == ["head.weight", "layer.0.weight", "layer.1.weight"]
    assert [len(s) for s in small.samples] == [64, 64, 64]
    assert [block.shape for block in small.sketches] == [(3, 8), (8, 8), (8, 8)]
    assert small.nbytes < _fingerprint_of(_weights(3), tmp_path / "n.safetensors").nbytes
