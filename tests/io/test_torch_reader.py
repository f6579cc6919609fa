from __future__ import annotations

import builtins
import json
import random
import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from mothertree.errors import InvalidCheckpointError, MissingDependencyError, MissingShardError
from mothertree.io import TorchCheckpoint, open_checkpoint
from mothertree.io.torch_reader import dtype_name

if TYPE_CHECKING:
    from conftest import Saved

torch = pytest.importorskip("torch")

HINT_STATE_DICT = "save the weights with `torch.save(model.state_dict(), path)` and pass that file"


def _assert_matches(checkpoint: TorchCheckpoint, expected: dict[str, np.ndarray]) -> None:
    assert list(checkpoint.tensors) == list(expected), "tensors come in the order the file holds them"
    for name, values in expected.items():
        array = checkpoint.read(name)
        assert array.dtype == np.float32 and array.flags.c_contiguous and array.flags.writeable
        np.testing.assert_array_equal(array, values)
        array[...] = 7  # a private copy: the mmap'ed file behind the checkpoint must not change
        np.testing.assert_array_equal(checkpoint.read(name), values)
        assert checkpoint.tensors[name].shape == values.shape


@pytest.mark.slow
@pytest.mark.parametrize("which", ["state_dict_bin", "legacy_pt"])
def test_state_dict_file_values_match_torch(saved: Saved, which: str) -> None:
    with TorchCheckpoint(getattr(saved, which)) as checkpoint:
        assert {info.dtype for info in checkpoint.tensors.values()} == {"F32"}
        _assert_matches(checkpoint, saved.state)


@pytest.mark.slow
def test_sharded_bin_values_and_shard_order(saved: Saved) -> None:
    index = saved.sharded_bin / "pytorch_model.bin.index.json"
    for path in (saved.sharded_bin, index):
        with TorchCheckpoint(path) as checkpoint:
            assert [shard.name for shard in checkpoint.shards] == [
                f"pytorch_model-0000{k}-of-00003.bin" for k in (1, 2, 3)
            ]
            by_shard = [torch.load(shard, weights_only=True) for shard in checkpoint.shards]
            expected_order = [name for state in by_shard for name in state]
            _assert_matches(checkpoint, {name: saved.state[name] for name in expected_order})


@pytest.mark.slow
def test_one_shard_loaded_at_a_time(saved: Saved, monkeypatch: pytest.MonkeyPatch) -> None:
    real_load = torch.load
    live: set[int] = set()
    loads: list[str] = []

    def counting_load(path: Path, *args: Any, **kwargs: Any) -> Any:
        assert not live, "a shard was loaded while another one was still held"
        state = real_load(path, *args, **kwargs)
        loads.append(Path(path).name)
        token = len(loads)
        live.add(token)
        # The shard counts as held while any of its tensors is alive.
        remaining = [len(state)]

        def dropped() -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                live.discard(token)

        for tensor in state.values():
            weakref.finalize(tensor, dropped)
        return state

    monkeypatch.setattr(torch, "load", counting_load)
    checkpoint = TorchCheckpoint(saved.sharded_bin)
    assert len(loads) == 3 and not live, "opening lists every shard and keeps none"
    for name in checkpoint.tensors:
        checkpoint.read(name)
    assert len(loads) == 6, "reading in storage order loads each shard once"
    names = list(checkpoint.tensors)
    random.Random(0).shuffle(names)
    for name in names:
        checkpoint.read(name)
        assert len(live) == 1 and checkpoint._loaded_shard is not None
    checkpoint.close()
    assert not live


@pytest.mark.slow
def test_wrapped_and_nested_state_dicts(saved: Saved, tmp_path: Path) -> None:
    state = torch.load(saved.state_dict_bin, weights_only=True)
    first, second = list(state)[:2]
    torch.save(
        {"model_state_dict": state, "optimizer_state_dict": {"lr": 0.1}, "epoch": 3}, tmp_path / "a.pt"
    )
    torch.save({"state_dict": state, "step": 10}, tmp_path / "b.pt")
    torch.save({"model": state, "args": "--lr 1e-3"}, tmp_path / "c.pth")
    torch.save({"encoder": {"layer": {"w": state[first]}}, "head": state[second]}, tmp_path / "d.pt")
    for name in ("a.pt", "b.pt", "c.pth"):
        with TorchCheckpoint(tmp_path / name) as checkpoint:
            assert list(checkpoint.tensors) == list(state), name
    with TorchCheckpoint(tmp_path / "d.pt") as checkpoint:
        assert list(checkpoint.tensors) == ["encoder.layer.w", "head"]
        np.testing.assert_array_equal(checkpoint.read("encoder.layer.w"), saved.state[first])


@pytest.mark.slow
def test_pickled_module_is_refused(saved: Saved) -> None:
    with pytest.raises(InvalidCheckpointError) as caught:
        open_checkpoint(saved.module_pt)
    assert str(caught.value) == (
        f"`{saved.module_pt}` holds a pickled `torch.nn.modules.linear.Linear`, which "
        "`torch.load(weights_only=True)` refuses to load: it is not a state_dict"
    )
    assert caught.value.hint == f"mothertree never runs code from checkpoint files; {HINT_STATE_DICT}"


@pytest.mark.parametrize(
    ("content", "what"),
    [
        ([torch.ones(2)], "a `list`"),
        ({"epoch": 3, "name": "run"}, "a dict without tensors"),
        ({}, "an empty dict"),
    ],
)
def test_file_without_a_state_dict(tmp_path: Path, content: object, what: str) -> None:
    file = tmp_path / "x.pt"
    torch.save(content, file)
    with pytest.raises(InvalidCheckpointError) as caught:
        TorchCheckpoint(file)
    assert str(caught.value) == f"`{file}` holds no tensors: it contains {what}, not a state_dict"
    assert caught.value.hint == HINT_STATE_DICT


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "is not a PyTorch checkpoint: it is empty"),
        (
            b"<html>Not Found</html>",
            "is not a PyTorch checkpoint: it looks like an HTML page (a failed download?)",
        ),
        (b"\x00\x01garbage", "is not a PyTorch checkpoint: it is neither a zip archive nor a pickle"),
        (
            b"\x80\x02garbage",
            "could not be loaded with `torch.load(weights_only=True)`: Unsupported operand 103",
        ),
    ],
)
def test_not_a_pytorch_checkpoint(tmp_path: Path, content: bytes, why: str) -> None:
    file = tmp_path / "model.bin"
    file.write_bytes(content)
    with pytest.raises(InvalidCheckpointError) as caught:
        open_checkpoint(file)
    assert str(caught.value) == f"`{file}` {why}"


@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning"
)  # torch 2.13 deprecates torch.jit, users still have files
def test_torchscript_archive(tmp_path: Path) -> None:
    file = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 3)), file)
    with pytest.raises(InvalidCheckpointError) as caught:
        open_checkpoint(file)
    assert str(caught.value) == f"`{file}` is a TorchScript archive (`torch.jit.save`), not a state_dict"


@pytest.mark.slow
def test_truncated_zip_checkpoint(saved: Saved, copy_to: Callable[[Path, str], Path]) -> None:
    file = copy_to(saved.state_dict_bin, "cut.bin")
    file.write_bytes(file.read_bytes()[:-200])
    with pytest.raises(InvalidCheckpointError) as caught:
        open_checkpoint(file)
    assert str(caught.value) == (
        f"`{file}` is truncated or corrupt: PytorchStreamReader failed reading zip archive: "
        "failed finding central directory"
    )


@pytest.mark.slow
def test_missing_bin_shard(saved: Saved, copy_to: Callable[[Path, str], Path]) -> None:
    folder = copy_to(saved.sharded_bin, "sharded")
    (folder / "pytorch_model-00003-of-00003.bin").unlink()
    with pytest.raises(MissingShardError) as caught:
        open_checkpoint(folder)
    assert str(caught.value) == (
        f"`{folder / 'pytorch_model-00003-of-00003.bin'}` is missing: "
        f"`{folder / 'pytorch_model.bin.index.json'}` names it as a shard"
    )


@pytest.mark.slow
def test_index_placing_a_tensor_in_the_wrong_shard(
    saved: Saved, copy_to: Callable[[Path, str], Path]
) -> None:
    folder = copy_to(saved.sharded_bin, "sharded")
    index = folder / "pytorch_model.bin.index.json"
    content = json.loads(index.read_text())
    weight_map = content["weight_map"]
    moved = [name for name, shard in weight_map.items() if shard.startswith("pytorch_model-00001")][:2]
    for name in moved:
        weight_map[name] = "pytorch_model-00002-of-00003.bin"
    index.write_text(json.dumps(content))
    with pytest.raises(InvalidCheckpointError) as caught:
        open_checkpoint(folder)
    assert str(caught.value) == (
        f"`{index}` places `{moved[0]}` in `pytorch_model-00002-of-00003.bin`, which does not hold it "
        "(1 more tensors likewise)"
    )


def test_dtype_names_follow_safetensors() -> None:
    assert dtype_name(torch.bfloat16) == "BF16"
    assert dtype_name(torch.float16) == "F16"
    assert dtype_name(torch.float8_e4m3fn) == "F8_E4M3"
    assert dtype_name(torch.int64) == "I64"
    assert dtype_name(torch.bool) == "BOOL"


def test_bf16_and_noncontiguous_tensors(tmp_path: Path) -> None:
    # Synthetic values: this checks conversion and memory layout, a pure function of the tensor.
    # Negative values too: bf16 is widened by shifting its bits, the sign bit with them.
    weight = (torch.arange(12, dtype=torch.float32).reshape(3, 4) - 6) / 8
    other_dtypes = {
        "bf16": weight.to(torch.bfloat16),
        "fp16": weight.to(torch.float16),
        "f64": weight.double(),
    }
    torch.save({"t": weight.t(), **other_dtypes}, tmp_path / "x.pt")
    with TorchCheckpoint(tmp_path / "x.pt") as checkpoint:
        assert checkpoint.tensors["t"].shape == (4, 3)
        assert checkpoint.tensors["bf16"].dtype == "BF16"
        transposed = checkpoint.read("t")
        assert transposed.flags.c_contiguous
        np.testing.assert_array_equal(transposed, weight.t().numpy())
        np.testing.assert_array_equal(checkpoint.read("bf16"), weight.numpy())
        # Into a caller's array and row by row: the same values, converted on the way.
        for name, expected in (("t", weight.t().numpy()), *((name, weight.numpy()) for name in other_dtypes)):
            out = np.full(expected.size, np.nan, dtype=np.float32)
            checkpoint.read_into(name, out)
            np.testing.assert_array_equal(out.reshape(expected.shape), expected)
            rows = np.array([0, 2])
            np.testing.assert_array_equal(checkpoint.read_rows(name, rows), expected[rows])
        with pytest.raises(ValueError, match="12 values"):
            checkpoint.read_into("t", np.zeros(5, dtype=np.float32))


@pytest.mark.parametrize(("zipped", "loads"), [(True, 1), (False, 2)])
def test_a_lone_mapped_file_is_loaded_once_for_listing_and_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zipped: bool, loads: int
) -> None:
    # A legacy (not zip) pickle is not memory-mapped: its listing is dropped, and it is loaded again.
    torch.save({"w": torch.ones(2, 3)}, tmp_path / "m.bin", _use_new_zipfile_serialization=zipped)
    real_load = torch.load
    seen: list[Path] = []

    def counting_load(path: Path, *args: Any, **kwargs: Any) -> Any:
        seen.append(Path(path))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    with TorchCheckpoint(tmp_path / "m.bin") as checkpoint:
        for _ in range(2):
            np.testing.assert_array_equal(checkpoint.read("w"), np.ones((2, 3), dtype=np.float32))
    assert len(seen) == loads


@pytest.mark.slow
def test_missing_torch_is_a_dependency_error(saved: Saved, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_torch(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(MissingDependencyError) as caught:
        open_checkpoint(saved.state_dict_bin)
    assert (
        str(caught.value)
        == "reading `.bin`, `.pt` and `.pth` checkpoints needs PyTorch, which is not installed"
    )
    assert caught.value.hint == "pip install 'mothertree[torch]'"
