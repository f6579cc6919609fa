from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from mothertree.errors import InvalidCheckpointError, MissingShardError
from mothertree.io import SafetensorsCheckpoint, open_checkpoint
from mothertree.io.safetensors_reader import read_header

if TYPE_CHECKING:
    from conftest import HandleTracker, Saved


def _offset_order(file: Path) -> list[str]:
    with safe_open(str(file), framework="np") as handle:
        return list(handle.offset_keys())


@pytest.mark.slow
def test_single_file_values_match_torch(saved: Saved) -> None:
    with SafetensorsCheckpoint(saved.single) as checkpoint:
        assert set(checkpoint.tensors) == set(saved.state)
        for name, expected in saved.state.items():
            array = checkpoint.read(name)
            assert array.dtype == np.float32 and array.flags.c_contiguous
            np.testing.assert_array_equal(array, expected)
            info = checkpoint.tensors[name]
            assert info.shape == expected.shape and info.dtype == "F32"


@pytest.mark.slow
def test_sharded_bf16_values_match_the_bf16_model(saved: Saved) -> None:
    index = saved.sharded_bf16 / "model.safetensors.index.json"
    for path in (saved.sharded_bf16, index):
        with SafetensorsCheckpoint(path) as checkpoint:
            assert len(checkpoint.shards) == 3
            assert {info.dtype for info in checkpoint.tensors.values()} == {"BF16"}
            for name, expected in saved.state_bf16.items():
                np.testing.assert_array_equal(checkpoint.read(name), expected)


@pytest.mark.slow
def test_read_into_a_row_gives_what_read_gives(saved: Saved) -> None:
    # float32 and bf16 are read straight into the row, other layouts through a copy.
    for folder in (saved.single, saved.sharded_bf16):
        with SafetensorsCheckpoint(folder) as checkpoint:
            for name, info in checkpoint.tensors.items():
                expected = checkpoint.read(name).reshape(-1)
                rows = np.full((2, info.numel), np.nan, dtype=np.float32)
                checkpoint.read_into(name, rows[1])
                np.testing.assert_array_equal(rows[1], expected)
                assert np.isnan(rows[0]).all()  # nothing written past the row
                column = np.full((info.numel, 2), np.nan, dtype=np.float32)[:, 0]  # not contiguous
                checkpoint.read_into(name, column)
                np.testing.assert_array_equal(column, expected)


@pytest.mark.slow
def test_tensors_are_in_storage_order(saved: Saved) -> None:
    with SafetensorsCheckpoint(saved.single / "model.safetensors") as checkpoint:
        assert list(checkpoint.tensors) == _offset_order(saved.single / "model.safetensors")
    shards = sorted(saved.sharded_bf16.glob("model-*.safetensors"))
    with SafetensorsCheckpoint(saved.sharded_bf16) as checkpoint:
        assert list(checkpoint.shards) == shards
        assert list(checkpoint.tensors) == [name for shard in shards for name in _offset_order(shard)]


@pytest.mark.slow
def test_at_most_one_shard_handle_is_open(
    saved: Saved, safe_open_tracker: HandleTracker, file_open_tracker: HandleTracker
) -> None:
    checkpoint = SafetensorsCheckpoint(saved.sharded_bf16)
    assert safe_open_tracker.live == 0, "opening validates each shard, then keeps no handle"
    assert file_open_tracker.live == 0

    for name in checkpoint.tensors:  # storage order: each shard is opened once
        checkpoint.read(name)
    assert len(file_open_tracker.opened) == 3

    names = list(checkpoint.tensors)
    random.Random(0).shuffle(names)
    for name in names:
        checkpoint.read(name)
        assert file_open_tracker.live == 1
    checkpoint.close()
    assert file_open_tracker.live == 0
    assert file_open_tracker.peak == 1
    assert safe_open_tracker.live == 0


@pytest.mark.slow
def test_read_returns_a_private_writable_copy(saved: Saved) -> None:
    with SafetensorsCheckpoint(saved.single) as checkpoint:
        name = next(iter(checkpoint.tensors))
        first = checkpoint.read(name)
        first[...] = 0
        np.testing.assert_array_equal(checkpoint.read(name), saved.state[name])


@pytest.mark.slow
def test_unknown_tensor_is_a_key_error(saved: Saved) -> None:
    with (
        SafetensorsCheckpoint(saved.single) as checkpoint,
        pytest.raises(KeyError, match="has no tensor `nope`"),
    ):
        checkpoint.read("nope")


@pytest.mark.slow
def test_truncated_file(saved: Saved, copy_to: Callable[[Path, str], Path]) -> None:
    file = copy_to(saved.single / "model.safetensors", "cut.safetensors")
    data = file.read_bytes()
    file.write_bytes(data[:-1000])
    header_end = 8 + struct.unpack("<Q", data[:8])[0]
    full, kept = len(data) - header_end, len(data) - 1000 - header_end
    with pytest.raises(InvalidCheckpointError) as caught:
        open_checkpoint(file)
    assert (
        str(caught.value)
        == f"`{file}` is truncated: header says {full} bytes of tensor data, file has {kept}"
    )
    assert caught.value.hint == "the file may be truncated or corrupt: download or save it again"


@pytest.mark.slow
def test_file_cut_inside_its_header(saved: Saved, copy_to: Callable[[Path, str], Path]) -> None:
    file = copy_to(saved.single / "model.safetensors", "cut.safetensors")
    data = file.read_bytes()
    file.write_bytes(data[:100])
    length = struct.unpack("<Q", data[:8])[0]
    with pytest.raises(InvalidCheckpointError) as caught:
        open_checkpoint(file)
    assert str(caught.value) == f"`{file}` is truncated: header says it is {length} bytes long, file has 92"


@pytest.mark.slow
def test_trailing_bytes_are_corruption(saved: Saved, copy_to: Callable[[Path, str], Path]) -> None:
    file = copy_to(saved.single / "model.safetensors", "long.safetensors")
    with file.open("ab") as handle:
        handle.write(b"\0" * 16)
    with pytest.raises(InvalidCheckpointError, match=r"is corrupt: header says \d+ bytes of tensor data"):
        open_checkpoint(file)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "it is empty"),
        (b"abc", "it is only 3 bytes long"),
        (
            b"<!DOCTYPE html><html><body>Repository not found</body></html>",
            "it looks like an HTML page (a failed download?)",
        ),
        (
            b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n",
            "it looks like a Git LFS pointer (run `git lfs pull`)",
        ),
        (bytes(range(256)) * 4, "its first 8 bytes are not a plausible header length"),
        (struct.pack("<Q", 4) + b"[1] ", "its header is not a JSON object"),
        (struct.pack("<Q", 4) + b"{1: ", "its header is not valid JSON"),
    ],
)
def test_not_a_safetensors_file(tmp_path: Path, content: bytes, why: str) -> None:
    file = tmp_path / "model.safetensors"
    file.write_bytes(content)
    with pytest.raises(InvalidCheckpointError) as caught:
        open_checkpoint(tmp_path)
    assert str(caught.value) == f"`{file}` is not a safetensors file: {why}"


@pytest.mark.slow
def test_missing_shard_is_reported_before_any_header_is_read(
    saved: Saved, copy_to: Callable[[Path, str], Path]
) -> None:
    folder = copy_to(saved.sharded_bf16, "sharded")
    (folder / "model-00002-of-00003.safetensors").unlink()
    (folder / "model-00001-of-00003.safetensors").write_bytes(b"garbage")  # would fail first if parsed
    with pytest.raises(MissingShardError) as caught:
        open_checkpoint(folder)
    assert str(caught.value) == (
        f"`{folder / 'model-00002-of-00003.safetensors'}` is missing: "
        f"`{folder / 'model.safetensors.index.json'}` names it as a shard"
    )
    assert (
        caught.value.hint == "the download is incomplete: fetch the missing shard again (or remove the model)"
    )


@pytest.mark.slow
def test_several_missing_shards_are_all_named(saved: Saved, copy_to: Callable[[Path, str], Path]) -> None:
    folder = copy_to(saved.sharded_bf16, "sharded")
    (folder / "model-00001-of-00003.safetensors").unlink()
    (folder / "model-00003-of-00003.safetensors").unlink()
    with pytest.raises(MissingShardError) as caught:
        open_checkpoint(folder)
    assert str(caught.value) == (
        f"2 shards named by `{folder / 'model.safetensors.index.json'}` are missing: "
        "`model-00001-of-00003.safetensors`, `model-00003-of-00003.safetensors`"
    )


@pytest.mark.slow
def test_index_naming_a_tensor_its_shard_lacks(saved: Saved, copy_to: Callable[[Path, str], Path]) -> None:
    folder = copy_to(saved.sharded_bf16, "sharded")
    index = folder / "model.safetensors.index.json"
    content = json.loads(index.read_text())
    content["weight_map"]["ghost.weight"] = "model-00001-of-00003.safetensors"
    index.write_text(json.dumps(content))
    with pytest.raises(InvalidCheckpointError) as caught:
        open_checkpoint(folder)
    assert str(caught.value) == (
        f"`{index}` places `ghost.weight` in `model-00001-of-00003.safetensors`, which does not hold it"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not a shard index: invalid JSON at line 1"),
        ('{"metadata": {}}', "is not a shard index: it has no `weight_map` of tensor names to shard files"),
        ('{"weight_map": {}}', "names no tensors: its `weight_map` is empty"),
    ],
)
def test_bad_index(tmp_path: Path, text: str, message: str) -> None:
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(text)
    with pytest.raises(InvalidCheckpointError) as caught:
        open_checkpoint(tmp_path)
    assert str(caught.value) == f"`{index}` {message}"


# The tests below use synthetic values: they check dtype handling, a pure function of the bytes.


def test_every_float_dtype_reads_as_float32(tmp_path: Path) -> None:
    values = np.array([[0.5, -1.25, 3.0], [0.0, 2.0, -0.75]])
    file = tmp_path / "dtypes.safetensors"
    save_file(
        {
            "f64": values.astype(np.float64),
            "f32": values.astype(np.float32),
            "f16": values.astype(np.float16),
            "bf16": values.astype(ml_dtypes.bfloat16),
            "f8_e4m3": values.astype(ml_dtypes.float8_e4m3fn),
            "f8_e5m2": values.astype(ml_dtypes.float8_e5m2),
            "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
        },
        str(file),
    )
    with SafetensorsCheckpoint(file) as checkpoint:
        dtypes = {name: info.dtype for name, info in checkpoint.tensors.items()}
        assert dtypes == {
            "f64": "F64",
            "f32": "F32",
            "f16": "F16",
            "bf16": "BF16",
            "f8_e4m3": "F8_E4M3",
            "f8_e5m2": "F8_E5M2",
            "i64": "I64",
        }
        for name in ("f64", "f32", "f16", "bf16", "f8_e4m3", "f8_e5m2"):
            array = checkpoint.read(name)
            assert array.dtype == np.float32 and array.flags.c_contiguous and array.shape == (2, 3)
            np.testing.assert_array_equal(array, values.astype(np.float32), err_msg=name)
        np.testing.assert_array_equal(checkpoint.read("i64"), np.arange(6, dtype=np.float32).reshape(2, 3))


def test_header_entries_are_checked(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}).encode()
    file = tmp_path / "bad.safetensors"
    file.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 12)
    with pytest.raises(InvalidCheckpointError) as caught:
        read_header(file)
    assert str(caught.value) == (
        f"`{file}` has a malformed header: tensor `w` spans 12 bytes, but F32 [2, 2] needs 16"
    )


def test_empty_checkpoint_has_no_tensors(tmp_path: Path) -> None:
    file = tmp_path / "empty.safetensors"
    save_file({}, str(file))
    with SafetensorsCheckpoint(file) as checkpoint:
        assert dict(checkpoint.tensors) == {}


@pytest.mark.slow
def test_rows_read_by_seeking_equal_the_rows_of_the_whole_tensor(saved: Saved) -> None:
    rows = np.array([0, 3, 17, 63])
    for path in (saved.single, saved.sharded_bf16, saved.state_dict_bin):
        with open_checkpoint(path) as checkpoint:
            for name, info in checkpoint.tensors.items():
                if len(info.shape) != 2 or info.shape[0] <= rows[-1]:
                    continue
                part = checkpoint.read_rows(name, rows)
                assert part.dtype == np.float32 and part.flags.c_contiguous
                np.testing.assert_array_equal(part, checkpoint.read(name)[rows])
