from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mothertree.errors import (
    CheckpointNotFoundError,
    InvalidCheckpointError,
    NoModelsFoundError,
    UnsupportedFormatError,
)
from mothertree.io import Checkpoint, ModelRef, discover, open_checkpoint

if TYPE_CHECKING:
    from conftest import Saved

CopyTo = Callable[[Path, str], Path]


@pytest.fixture
def mixed(saved: Saved, copy_to: CopyTo, tmp_path: Path) -> Path:
    """A folder as users have them: model folders, nested runs, loose files, clutter."""
    root = tmp_path / "zoo"
    copy_to(saved.single, "zoo/bert-single")
    copy_to(saved.sharded_bf16, "zoo/bert-sharded-bf16")
    copy_to(saved.sharded_bin, "zoo/runs/bert-sharded-bin")
    copy_to(saved.state_dict_bin, "zoo/runs/final/weights.pt")
    copy_to(saved.module_pt, "zoo/runs/final/optimizer.pt")  # training state, not a model
    copy_to(saved.module_pt, "zoo/runs/final/training_args.bin")
    (root / "runs" / "final" / "tokenizer.json").write_text("{}")
    copy_to(saved.state_dict_bin, "zoo/runs/seed-1.pt")
    copy_to(saved.legacy_pt, "zoo/runs/seed-2.pth")
    copy_to(saved.single / "model.safetensors", "zoo/group-1/bert/model.safetensors")
    copy_to(saved.state_dict_bin, "zoo/group-2/bert/pytorch_model.bin")
    copy_to(saved.state_dict_bin, "zoo/bert.pt")
    copy_to(saved.adapter, "zoo/lora")
    for shard in sorted(saved.sharded_bf16.glob("model-0000[12]-*")):
        copy_to(shard, f"zoo/no-index/{shard.name}")
    copy_to(saved.single, "zoo/.git/lfs/objects/bert")
    copy_to(saved.single, "zoo/.cache/bert")
    (root / "notes.json").write_text('{"a": 1}')
    (root / "README.md").write_text("# my models\n")
    (root / "diagram.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "tokenizer.model").write_bytes(b"\0")
    return root


@pytest.mark.slow
def test_mixed_folder(mixed: Path) -> None:
    models, broken = discover(mixed)
    assert [(m.id, m.path.relative_to(mixed).as_posix()) for m in models] == [
        ("bert-sharded-bf16", "bert-sharded-bf16"),
        ("bert-sharded-bin", "runs/bert-sharded-bin"),
        ("bert-single", "bert-single"),
        ("bert.pt", "bert.pt"),  # `bert` clashed three times: each clashing model gets its relative path
        ("final", "runs/final"),
        ("group-1/bert", "group-1/bert"),
        ("group-2/bert", "group-2/bert"),
        ("lora", "lora"),
        ("seed-1", "runs/seed-1.pt"),
        ("seed-2", "runs/seed-2.pth"),
    ]
    by_id = {m.id: m for m in models}
    assert by_id["bert-single"].declared_base_models == ("google-bert/bert-base-uncased", "org/other-base")
    assert by_id["bert-sharded-bf16"].declared_base_models == ()
    assert by_id["seed-1"].weights_path == mixed / "runs" / "seed-1.pt"
    assert by_id["final"].weights_path == mixed / "runs" / "final"

    # The fixture's adapter was built in code, so peft recorded no base model name.
    assert by_id["lora"].adapter_base == ""
    assert by_id["bert-single"].adapter_base is None

    assert [b.path for b in broken] == [mixed / "no-index"]
    (no_index,) = (b.error for b in broken)
    assert isinstance(no_index, InvalidCheckpointError)
    assert str(no_index) == (
        f"`{mixed / 'no-index'}` holds shard files (`model-00001-of-00003.safetensors`, "
        "`model-00002-of-00003.safetensors`) but no index naming their tensors"
    )

    def base(_: str) -> Checkpoint:
        return open_checkpoint(mixed / "bert-single")

    for model in models:  # everything discovered opens, and as what the user knows it by
        with open_checkpoint(model, resolve_base=base) as checkpoint:
            assert checkpoint.path == model.path
            assert len(checkpoint.tensors) == 39


@pytest.mark.slow
def test_discovery_reads_no_tensor_data(mixed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from mothertree.io import safetensors_reader

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("discovery must not open checkpoints")

    monkeypatch.setattr(safetensors_reader, "safe_open", forbidden)
    monkeypatch.setattr(safetensors_reader, "read_header", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    (mixed / "bert-single" / "model.safetensors").write_bytes(b"garbage")  # found; fails only when opened
    models, _ = discover(mixed)
    assert len(models) == 10


@pytest.mark.slow
def test_ids_are_sorted_and_unique_for_cache_entries_too(
    saved: Saved, copy_to: CopyTo, tmp_path: Path, make_cache_entry: Callable[..., Path]
) -> None:
    make_cache_entry(tmp_path / "root" / "hub", "org/bert", saved.single)
    copy_to(saved.single, "root/org/bert")
    copy_to(saved.single, "root/other/bert")
    models, _ = discover(tmp_path / "root")
    # `org/bert` (cache id) and `org/bert` (relative path of a clashing `bert`) clash in turn.
    assert [m.id for m in models] == ["hub/models--org--bert", "org/bert", "other/bert"]


@pytest.mark.slow
def test_root_is_one_model_folder(saved: Saved, copy_to: CopyTo) -> None:
    folder = copy_to(saved.sharded_bf16, "bert")
    assert discover(folder) == ([ModelRef("bert", folder, folder)], [])


@pytest.mark.slow
def test_root_is_a_file(saved: Saved, copy_to: CopyTo) -> None:
    file = copy_to(saved.state_dict_bin, "tuned.bin")
    assert discover(file) == ([ModelRef("tuned", file, file)], [])
    index = copy_to(saved.sharded_bin, "sharded") / "pytorch_model.bin.index.json"
    assert discover(index) == ([ModelRef("sharded", index, index)], [])


@pytest.mark.slow
def test_relative_root(saved: Saved, copy_to: CopyTo, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = copy_to(saved.single, "mine")
    monkeypatch.chdir(folder)
    models, _ = discover(Path("."))
    assert [m.id for m in models] == ["mine"]


@pytest.mark.slow
def test_folder_with_one_file_and_model_subfolders_is_a_collection(saved: Saved, copy_to: CopyTo) -> None:
    root = copy_to(saved.state_dict_bin, "run/last.pt").parent
    copy_to(saved.single, "run/checkpoint-1")
    models, _ = discover(root)
    assert [(m.id, m.path) for m in models] == [
        ("checkpoint-1", root / "checkpoint-1"),
        ("last", root / "last.pt"),
    ]


@pytest.mark.slow
def test_folder_with_one_file_and_other_subfolders_is_a_model(saved: Saved, copy_to: CopyTo) -> None:
    root = copy_to(saved.state_dict_bin, "model/weights.bin").parent
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    assert discover(root) == ([ModelRef("model", root, root)], [])


@pytest.mark.slow
def test_model_folder_is_not_searched_further(saved: Saved, copy_to: CopyTo) -> None:
    root = copy_to(saved.single, "trainer-output")
    copy_to(saved.single / "model.safetensors", "trainer-output/checkpoint-500/model.safetensors")
    assert [m.id for m in discover(root)[0]] == ["trainer-output"]


@pytest.mark.slow
def test_adapter_root(saved: Saved) -> None:
    models, broken = discover(saved.adapter)
    assert [m.path for m in models] == [saved.adapter] and broken == []
    with pytest.raises(CheckpointNotFoundError) as caught:
        open_checkpoint(saved.adapter)
    assert str(caught.value) == (
        f"`{saved.adapter}` is a LoRA adapter whose `adapter_config.json` names no base model"
    )
    assert caught.value.hint == "name the base model's folder with `--base PATH`"


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError) as caught:
        discover(tmp_path / "nope")
    assert str(caught.value) == f"`{tmp_path / 'nope'}` does not exist"
    assert caught.value.hint == (
        "check the path; `mothertree recover` takes a folder of model folders or checkpoint files"
    )


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(NoModelsFoundError) as caught:
        discover(tmp_path)
    assert str(caught.value) == f"no models found in `{tmp_path}`"
    assert caught.value.hint is not None and caught.value.hint.startswith("a model is a folder with")


def test_folder_of_clutter(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "model.safetensors").write_bytes(b"")
    with pytest.raises(NoModelsFoundError, match="no models found in"):
        discover(tmp_path)


def test_root_file_that_is_no_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(NoModelsFoundError) as caught:
        discover(tmp_path / "config.json")
    assert str(caught.value) == f"`{tmp_path / 'config.json'}` is not a checkpoint file"


@pytest.mark.slow
def test_models_in_formats_not_read_are_listed_not_lost(
    saved: Saved, copy_to: CopyTo, tmp_path: Path
) -> None:
    # Discovery reads names only, so empty files stand in for the Keras and TFLite exports here.
    root = copy_to(saved.single, "zoo/bert").parent
    (root / "bert" / "tf_model.h5").write_bytes(b"")  # beside a readable model: the same model, not listed
    (root / "bert.tflite").write_bytes(b"")
    (root / "keras").mkdir()
    (root / "keras" / "model.keras").write_bytes(b"")
    (root / "keras" / "config.json").write_text("{}")

    models, broken = discover(root)
    assert [m.id for m in models] == ["bert"]
    assert [(b.path.name, str(b.error)) for b in broken] == [
        (
            "bert.tflite",
            f"`{root / 'bert.tflite'}` is a TensorFlow Lite model, which mothertree does not read",
        ),
        (
            "model.keras",
            f"`{root / 'keras' / 'model.keras'}` is a Keras model, which mothertree does not read",
        ),
    ]
    assert all(isinstance(b.error, UnsupportedFormatError) for b in broken)
    assert discover(root / "bert.tflite")[1][0].path == root / "bert.tflite"


def test_onnx_and_gguf_files_are_models(tmp_path: Path) -> None:
    # Names only: empty files stand in for the exports (tests/io/test_formats.py reads real ones).
    (tmp_path / "bert-q8.gguf").write_bytes(b"")
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"")
    (tmp_path / "onnx" / "model_quantized.onnx").write_bytes(b"")
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "model.onnx").write_bytes(b"")
    (tmp_path / "alone" / "config.json").write_text("{}")

    models, broken = discover(tmp_path)
    assert broken == []
    assert {m.id: m.weights_path for m in models} == {
        "alone": tmp_path / "alone",
        "bert-q8": tmp_path / "bert-q8.gguf",
        "model": tmp_path / "onnx" / "model.onnx",
        "model_quantized": tmp_path / "onnx" / "model_quantized.onnx",
    }


@pytest.mark.slow
def test_symlink_loop_is_searched_once(saved: Saved, copy_to: CopyTo) -> None:
    root = copy_to(saved.single, "zoo/a").parent
    (root / "loop").symlink_to(root, target_is_directory=True)
    assert [m.id for m in discover(root)[0]] == ["a"]


@pytest.mark.slow
def test_open_checkpoint_on_folders_that_are_not_one_model(tmp_path: Path, saved: Saved) -> None:
    with pytest.raises(NoModelsFoundError) as caught:
        open_checkpoint(tmp_path)
    assert str(caught.value) == f"`{tmp_path}` holds no weights file"
    shutil.copyfile(saved.state_dict_bin, tmp_path / "a.pt")
    shutil.copyfile(saved.state_dict_bin, tmp_path / "b.pt")
    with pytest.raises(NoModelsFoundError) as caught:
        open_checkpoint(tmp_path)
    assert str(caught.value) == f"`{tmp_path}` holds 2 weight files and no index, so it is not one model"
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        open_checkpoint(tmp_path / "gone.safetensors")
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(UnsupportedFormatError) as unsupported:
        open_checkpoint(tmp_path / "notes.txt")
    assert str(unsupported.value) == f"`{tmp_path / 'notes.txt'}` is not a checkpoint file mothertree reads"


def test_ids_clashing_across_roots_become_their_paths_from_the_shared_folder(tmp_path: Path) -> None:
    from mothertree.io import with_unique_ids

    refs = [
        ModelRef("model", tmp_path / "runs" / "a" / "model", tmp_path / "runs" / "a" / "model"),
        ModelRef("model", tmp_path / "runs" / "b" / "model", tmp_path / "runs" / "b" / "model"),
        ModelRef("other", tmp_path / "other", tmp_path / "other"),
    ]
    assert [ref.id for ref in with_unique_ids(refs)] == ["a/model", "b/model", "other"]
    assert with_unique_ids(refs[1:]) == refs[1:]  # nothing clashes: nothing renamed
