"""Integer-quantised checkpoints: bitsandbytes int8 and 4-bit read back dequantised, other schemes refused.

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


FOUR_BIT_OPTIONS = [
    {},
    {"bnb_4bit_quant_type": "nf4"},
    {"bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True},
]
FOUR_BIT_IDS = ["fp4-default", "nf4", "nf4-double-quant"]


def _four_bit_weights(stored: dict[str, Any]) -> list[str]:
    return sorted(name.removesuffix(".quant_map") for name in stored if name.endswith(".quant_map"))


@pytest.mark.slow
@pytest.mark.parametrize("options", FOUR_BIT_OPTIONS, ids=FOUR_BIT_IDS)
def test_4bit_weights_read_as_bitsandbytes_dequantises_them(
    bert_family: Path, tmp_path: Path, options: dict[str, Any]
):
    import torch as t
    from bitsandbytes.functional import QuantState, dequantize_4bit

    # MiniLM's 384-wide matrices. (On matrices of a thousand weights, bitsandbytes 0.50's CPU
    # dequantize_4bit scales every block by the first block's absmax, twice as far from the original
    # weights as the format's own formula, which this reader follows: see the next test.)
    folder = _quantised_copy(bert_family / "ft-number", tmp_path / "ft-4bit", load_in_4bit=True, **options)
    stored = _stored(folder)
    weights = _four_bit_weights(stored)
    assert weights
    source = open_checkpoint(bert_family / "ft-number")
    with open_checkpoint(folder) as checkpoint:
        kind = "NF4" if options.get("bnb_4bit_quant_type") == "nf4" else "FP4"  # transformers' default: fp4
        assert {checkpoint.tensors[name].dtype for name in weights} == {kind}
        assert not any(".absmax" in name or "quant_state" in name for name in checkpoint.tensors)
        for name in weights:
            # bitsandbytes' own reading of the saved tensors: its QuantState from the state dict.
            parts = {
                key[len(name) + 1 :]: value for key, value in stored.items() if key.startswith(name + ".")
            }
            state = QuantState.from_dict(parts, device=t.device("cpu"))
            values = checkpoint.read(name)
            assert values.shape == source.tensors[name].shape
            np.testing.assert_array_equal(values, dequantize_4bit(stored[name], state).float().numpy())


@pytest.mark.slow
@pytest.mark.parametrize("options", FOUR_BIT_OPTIONS, ids=FOUR_BIT_IDS)
def test_4bit_weights_are_within_a_step_of_the_original(saved: Any, tmp_path: Path, options: dict[str, Any]):
    from mothertree.features.quantized import within_one_step

    folder = _quantised_copy(saved.single, tmp_path / "bert-4bit", load_in_4bit=True, **options)
    source = open_checkpoint(saved.single)
    with open_checkpoint(folder) as checkpoint:
        weights = [name for name, info in checkpoint.tensors.items() if info.dtype in ("NF4", "FP4")]
        assert weights
        for name in weights:
            assert within_one_step(checkpoint.read(name), source.read(name), checkpoint.tensors[name].dtype)


@pytest.mark.slow
def test_int8_and_4bit_copies_are_quantized_leaves_of_their_source(
    saved: Any, int8_single: Path, four_bit: Path, tmp_path
):
    from mothertree.pipeline import recover

    for folder in (saved.single, int8_single, four_bit):
        shutil.copytree(folder, tmp_path / folder.name)
    result = recover([tmp_path])
    assert result.broken == []
    assert result.roots == ["bert-single"]
    assert {(e.parent, e.child, e.relation) for e in result.edges} == {
        ("bert-single", "bert-int8", "quantized"),
        ("bert-single", "bert-nf4", "quantized"),
    }


def test_4bit_helpers_without_their_state_are_refused(tmp_path):
    path = _write(
        tmp_path / "m.safetensors",
        {
            "lin.weight": np.zeros((16, 1), dtype=np.uint8),
            "lin.weight.absmax": np.ones(1, dtype=np.float32),
            "lin.weight.quant_map": np.linspace(-1, 1, 16, dtype=np.float32),
        },
    )
    with pytest.raises(UnsupportedQuantizationError, match="without its quantisation state"):
        open_checkpoint(path)


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
