"""Integer-quantised checkpoints: bitsandbytes int8 read back dequantised, other schemes refused.

The int8 and 4-bit checkpoints are written the way users get them: transformers loads the session's tiny
BERT with a ``BitsAndBytesConfig`` (bitsandbytes quantises on the CPU) and ``save_pretrained`` writes it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from mothertree.errors import InvalidCheckpointError, UnsupportedQuantizationError
from mothertree.io import INT8_ROWWISE, SafetensorsCheckpoint, TorchCheckpoint, open_checkpoint
from mothertree.io.quantized import dequantize_int8
from mothertree.io.safetensors_reader import read_header

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
bnb = pytest.importorskip("bitsandbytes")


def _quantised_copy(source: Path, out: Path, **options: Any) -> Path:
    config = transformers.BitsAndBytesConfig(**options)
    model = transformers.AutoModel.from_pretrained(source, quantization_config=config, device_map="cpu")
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def int8_single(saved: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _quantised_copy(saved.single, tmp_path_factory.mktemp("int8") / "bert-int8", load_in_8bit=True)


@pytest.fixture(scope="module")
def int8_sharded(saved: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = transformers.BitsAndBytesConfig(load_in_8bit=True)
    model = transformers.AutoModel.from_pretrained(saved.single, quantization_config=config, device_map="cpu")
    out = tmp_path_factory.mktemp("int8-sharded") / "bert-int8-sharded"
    model.save_pretrained(out, max_shard_size="20KB")
    return out


@pytest.fixture(scope="module")
def four_bit(saved: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _quantised_copy(saved.single, tmp_path_factory.mktemp("nf4") / "bert-nf4", load_in_4bit=True)


def _stored(folder: Path) -> dict[str, Any]:
    """The tensors as saved (torch, own dtypes), from every safetensors file of a folder."""
    from safetensors.torch import load_file

    tensors: dict[str, Any] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def _int8_weights(stored: dict[str, Any]) -> list[str]:
    return sorted(name for name, tensor in stored.items() if tensor.dtype == torch.int8)


@pytest.mark.slow
def test_the_int8_files_are_what_bitsandbytes_writes(int8_single: Path):
    stored = _stored(int8_single)
    weights = _int8_weights(stored)
    assert len(weights) == 13  # 2 layers x (q, k, v, attention out, intermediate, output) + pooler
    for name in weights:
        module = name.removesuffix("weight")
        assert stored[module + "SCB"].dtype == torch.float32
        assert stored[module + "SCB"].shape == stored[name].shape[:1]
        assert stored[module + "weight_format"].dtype == torch.uint8
        assert int(stored[module + "weight_format"]) == 0  # row-major


@pytest.mark.slow
def test_int8_weights_are_listed_under_their_names_helpers_are_not(saved: Any, int8_single: Path):
    int8 = _int8_weights(_stored(int8_single))
    with open_checkpoint(int8_single) as quantised, open_checkpoint(saved.single) as original:
        assert not any(name.endswith((".SCB", ".weight_format")) for name in quantised.tensors)
        assert set(quantised.tensors) == set(original.tensors)
        for name, info in quantised.tensors.items():
            assert info.shape == original.tensors[name].shape
            if name in int8:
                assert info.dtype == INT8_ROWWISE and info.is_float
            else:
                assert info.dtype == original.tensors[name].dtype


@pytest.mark.slow
def test_dequantisation_is_bitsandbytes_own_bit_for_bit(int8_single: Path):
    stored = _stored(int8_single)
    with open_checkpoint(int8_single) as checkpoint:
        for name in _int8_weights(stored):
            theirs = bnb.functional.int8_vectorwise_dequant(
                stored[name], stored[name.removesuffix("weight") + "SCB"]
            )
            ours = checkpoint.read(name)
            assert ours.dtype == np.float32 and ours.flags.c_contiguous
            np.testing.assert_array_equal(ours, theirs.numpy())


@pytest.mark.slow
def test_int8_reads_back_within_the_quantisation_error_of_the_original(saved: Any, int8_single: Path):
    stored = _stored(int8_single)
    with open_checkpoint(int8_single) as checkpoint:
        for name in _int8_weights(stored):
            original = saved.state[name]
            scales = stored[name.removesuffix("weight") + "SCB"].numpy()
            read = checkpoint.read(name)
            # Rounding to int8 moves an entry by at most half a step, SCB/254, after fp16 rounding (2^-11).
            bound = scales[:, None] / 254 + np.abs(original) * 2.0**-11
            assert np.all(np.abs(read - original) <= bound * 1.0001 + 1e-7)
            relative = np.linalg.norm(read - original) / np.linalg.norm(original)
            assert 0 < relative < 0.02
            assert not np.array_equal(read, original)
        # Tensors that were not quantised read exactly as before.
        table = "embeddings.word_embeddings.weight"
        np.testing.assert_array_equal(checkpoint.read(table), saved.state[table])


@pytest.mark.slow
def test_sharded_and_pickled_int8_checkpoints_read_the_same(int8_single: Path, int8_sharded: Path, tmp_path):
    assert len(list(int8_sharded.glob("*.safetensors"))) > 1
    pickled = tmp_path / "bert-int8.bin"
    torch.save(_stored(int8_single), pickled)
    with (
        SafetensorsCheckpoint(int8_single) as single,
        SafetensorsCheckpoint(int8_sharded) as sharded,
        TorchCheckpoint(pickled) as pickle,
    ):
        assert set(sharded.tensors) == set(single.tensors) == set(pickle.tensors)
        assert dict(pickle.tensors) == dict(single.tensors)
        for name, info in single.tensors.items():
            assert sharded.tensors[name] == info
            np.testing.assert_array_equal(sharded.read(name), single.read(name))
            np.testing.assert_array_equal(pickle.read(name), single.read(name))


@pytest.mark.slow
def test_bitsandbytes_4bit_is_refused_with_a_hint(four_bit: Path):
    with pytest.raises(UnsupportedQuantizationError, match="4-bit") as caught:
        open_checkpoint(four_bit)
    assert "dequantise" in (caught.value.hint or "")


@pytest.mark.slow
def test_a_collection_goes_on_without_a_4bit_model(saved: Any, int8_single: Path, four_bit: Path, tmp_path):
    from mothertree.pipeline import recover

    for folder in (saved.single, int8_single, four_bit):
        shutil.copytree(folder, tmp_path / folder.name)
    result = recover([tmp_path])
    assert sorted(m.id for m in result.models) == ["bert-int8", "bert-single"]
    assert [b.path.name for b in result.broken] == ["bert-nf4"]
    assert isinstance(result.broken[0].error, UnsupportedQuantizationError)
    assert len(result.edges) == 1


def _write(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def _int8_layer(rows: int = 4, cols: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "lin.weight": rng.integers(-127, 128, (rows, cols), dtype=np.int8),
        "lin.SCB": rng.uniform(0.1, 1.0, rows).astype(np.float32),
        "lin.weight_format": np.zeros((), dtype=np.uint8),
        "lin.bias": np.zeros(rows, dtype=np.float32),
    }


def test_dequantize_int8_is_the_documented_formula():
    layer = _int8_layer()
    expected = layer["lin.weight"].astype(np.float64) * layer["lin.SCB"][:, None].astype(np.float64) / 127
    np.testing.assert_allclose(dequantize_int8(layer["lin.weight"], layer["lin.SCB"]), expected, rtol=1e-6)


def test_an_int8_weight_without_scales_is_refused(tmp_path):
    layer = _int8_layer()
    del layer["lin.SCB"]
    path = _write(tmp_path / "lone.safetensors", layer)
    with pytest.raises(UnsupportedQuantizationError, match="`lin.weight` as int8 without the `lin.SCB`"):
        open_checkpoint(path)


def test_gptq_packed_weights_are_refused(tmp_path):
    path = _write(
        tmp_path / "gptq" / "model.safetensors",
        {
            "lin.qweight": np.zeros((2, 8), dtype=np.int32),
            "lin.qzeros": np.zeros((1, 1), dtype=np.int32),
            "lin.scales": np.ones((1, 8), dtype=np.float16),
        },
    )
    with pytest.raises(UnsupportedQuantizationError, match="GPTQ/AWQ"):
        open_checkpoint(path.parent)


def test_scales_that_do_not_fit_the_weight_are_an_error(tmp_path):
    layer = _int8_layer()
    layer["lin.SCB"] = layer["lin.SCB"][:3]
    with pytest.raises(InvalidCheckpointError, match="one float scale per row"):
        open_checkpoint(_write(tmp_path / "bad.safetensors", layer))


def test_a_gpu_tile_layout_is_refused_when_read(tmp_path):
    layer = _int8_layer()
    layer["lin.weight_format"] = np.ones((), dtype=np.uint8)  # "col32"
    with open_checkpoint(_write(tmp_path / "tiled.safetensors", layer)) as checkpoint:
        assert checkpoint.tensors["lin.weight"].dtype == INT8_ROWWISE
        with pytest.raises(UnsupportedQuantizationError, match="not row-major"):
            checkpoint.read("lin.weight")


def test_without_weight_format_the_layout_is_rows(tmp_path):
    layer = _int8_layer()
    del layer["lin.weight_format"]
    with open_checkpoint(_write(tmp_path / "rows.safetensors", layer)) as checkpoint:
        assert set(checkpoint.tensors) == {"lin.weight", "lin.bias"}
        np.testing.assert_array_equal(
            checkpoint.read("lin.weight"), dequantize_int8(layer["lin.weight"], layer["lin.SCB"])
        )


def test_a_one_dimensional_int8_tensor_is_listed_as_stored(tmp_path):
    path = _write(tmp_path / "flags.safetensors", {"mask.weight": np.ones(5, dtype=np.int8)})
    with open_checkpoint(path) as checkpoint:
        info = checkpoint.tensors["mask.weight"]
        assert info.dtype == "I8" and not info.is_float


@pytest.mark.slow
def test_an_unquantised_checkpoint_lists_exactly_what_it_stores(saved: Any):
    header = read_header(saved.single / "model.safetensors")
    with SafetensorsCheckpoint(saved.single) as checkpoint:
        assert {name: info.dtype for name, info in checkpoint.tensors.items()} == {
            entry.name: entry.dtype for entry in header
        }
