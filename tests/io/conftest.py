"""Real checkpoints for the io tests, written by the libraries users save models with.

One tiny BERT (transformers), trained a few steps so its weights are not an initialisation, saved every way
the readers must handle. Built once per session; tests copy what they need into their own tmp folders.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_bert import TINY_BERT, train_tiny

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

README_WITH_BASE = """---
license: apache-2.0
base_model:
- google-bert/bert-base-uncased
- org/other-base
tags: [test]
---
# tiny bert
"""


@dataclass(frozen=True)
class Saved:
    """Where each artifact of the session was written, and what torch says its tensors are."""

    single: Path  # save_pretrained: model.safetensors + config.json + README.md
    sharded_bf16: Path  # save_pretrained in bfloat16, max_shard_size="20KB": index + 3 shards
    state_dict_bin: Path  # torch.save(model.state_dict(), ...bin)
    legacy_pt: Path  # the same, in torch's pre-1.6 (non-zip) format
    sharded_bin: Path  # pytorch_model-0000k-of-0000n.bin + pytorch_model.bin.index.json, built by hand
    adapter: Path  # a peft LoRA adapter saved with save_pretrained
    module_pt: Path  # torch.save(model) - a pickled nn.Module
    state: dict[str, np.ndarray]  # float32 values, in state_dict order
    state_bf16: dict[str, np.ndarray]  # the bfloat16 model's values, widened to float32


def _save_sharded_bin(state_dict: dict[str, Any], folder: Path, n_shards: int) -> None:
    # transformers 5 no longer writes .bin checkpoints; this writes what transformers 4 wrote with
    # safe_serialization=False and a max_shard_size.
    folder.mkdir(parents=True)
    names = list(state_dict)
    chunks = [names[i::n_shards] for i in range(n_shards)]
    weight_map = {}
    for number, chunk in enumerate(chunks, start=1):
        shard = f"pytorch_model-{number:05d}-of-{n_shards:05d}.bin"
        torch.save({name: state_dict[name].clone() for name in chunk}, folder / shard)
        weight_map.update(dict.fromkeys(chunk, shard))
    total = sum(t.numel() * t.element_size() for t in state_dict.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))


@pytest.fixture(scope="session")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Saved:
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(**TINY_BERT))
    train_tiny(model)
    base = tmp_path_factory.mktemp("saved")

    single = base / "bert-single"
    model.save_pretrained(single)
    (single / "README.md").write_text(README_WITH_BASE)

    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    sharded_bf16 = base / "bert-sharded-bf16"
    bf16.save_pretrained(sharded_bf16, max_shard_size="20KB")

    state_dict = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    state_dict_bin = base / "bert-state-dict.bin"
    torch.save(state_dict, state_dict_bin)
    legacy_pt = base / "bert-legacy.pt"
    torch.save(state_dict, legacy_pt, _use_new_zipfile_serialization=False)
    sharded_bin = base / "bert-sharded-bin"
    _save_sharded_bin(state_dict, sharded_bin, n_shards=3)
    module_pt = base / "whole-module.pt"
    torch.save(torch.nn.Linear(4, 3), module_pt)

    peft = pytest.importorskip("peft")
    adapter = base / "bert-lora"
    with warnings.catch_warnings():
        # peft 0.21 calls a transformers 5 method that is deprecated; not ours to fix.
        warnings.simplefilter("ignore", FutureWarning)
        lora = peft.get_peft_model(
            copy.deepcopy(model), peft.LoraConfig(r=2, target_modules=["query", "value"])
        )
        lora.save_pretrained(adapter)

    return Saved(
        single=single,
        sharded_bf16=sharded_bf16,
        state_dict_bin=state_dict_bin,
        legacy_pt=legacy_pt,
        sharded_bin=sharded_bin,
        adapter=adapter,
        module_pt=module_pt,
        state={name: tensor.float().numpy().copy() for name, tensor in state_dict.items()},
        state_bf16={name: tensor.float().numpy().copy() for name, tensor in bf16.state_dict().items()},
    )


def _make_cache_entry(
    cache_root: Path,
    repo_id: str,
    files: dict[str, Path],
    *,
    commit: str = "0123456789abcdef0123456789abcdef01234567",
    symlinks: bool = True,
    write_ref: bool = True,
) -> Path:
    """A ``models--org--name`` entry laid out as huggingface_hub lays it out (blobs named by sha256,
    snapshot files linking to them); with ``symlinks=False``, plain copies as on Windows."""
    entry = cache_root / ("models--" + repo_id.replace("/", "--"))
    snapshot = entry / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (entry / "blobs").mkdir(exist_ok=True)
    for name, source in files.items():
        data = source.read_bytes()
        blob = entry / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        target = snapshot / name
        if symlinks:
            target.symlink_to(os.path.relpath(blob, target.parent))
        else:
            shutil.copyfile(blob, target)
    if write_ref:
        (entry / "refs").mkdir(exist_ok=True)
        (entry / "refs" / "main").write_text(commit)
    return entry


def folder_files(folder: Path) -> dict[str, Path]:
    return {path.name: path for path in sorted(folder.iterdir()) if path.is_file()}


@pytest.fixture
def make_cache_entry() -> Callable[..., Path]:
    """``make_cache_entry(cache_root, "org/name", folder_or_files, symlinks=..., ...)`` (see above)."""

    def make(cache_root: Path, repo_id: str, files: Path | dict[str, Path], **options: Any) -> Path:
        return _make_cache_entry(
            cache_root, repo_id, folder_files(files) if isinstance(files, Path) else files, **options
        )

    return make


@pytest.fixture
def copy_to(tmp_path: Path) -> Callable[[Path, str], Path]:
    """Copy a saved artifact (file or folder) to ``tmp_path / relative``; tests may then damage it."""

    def copy_it(source: Path, relative: str) -> Path:
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copyfile(source, target)
        return target

    return copy_it


class HandleTracker:
    """Counts file handles: how many were opened, how many are open now, and the most at once.

    Wraps an opener (``safe_open`` or the reader's plain ``open``); a handle counts as closed on
    ``close()`` or on leaving its ``with`` block.
    """

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.opened: list[str] = []
        self.live = 0
        self.peak = 0

    def __call__(self, filename: Any, *args: Any, **kwargs: Any) -> _TrackedHandle:
        handle = self.real(filename, *args, **kwargs)
        self.opened.append(Path(filename).name)
        self.live += 1
        self.peak = max(self.peak, self.live)
        return _TrackedHandle(handle, self)


class _TrackedHandle:
    def __init__(self, handle: Any, tracker: HandleTracker) -> None:
        self._handle = handle
        self._tracker = tracker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _TrackedHandle:
        return self

    def close(self) -> None:
        self._tracker.live -= 1
        self._handle.close()

    def __exit__(self, *exc: object) -> None:
        self._tracker.live -= 1
        self._handle.__exit__(*exc)


@pytest.fixture
def safe_open_tracker(monkeypatch: pytest.MonkeyPatch) -> Iterator[HandleTracker]:
    from mothertree.io import safetensors_reader

    tracker = HandleTracker(safetensors_reader.safe_open)
    monkeypatch.setattr(safetensors_reader, "safe_open", tracker)
    yield tracker


@pytest.fixture
def file_open_tracker(monkeypatch: pytest.MonkeyPatch) -> Iterator[HandleTracker]:
    """Tracks the shard files the safetensors reader opens to read tensor data."""
    from mothertree.io import safetensors_reader

    tracker = HandleTracker(safetensors_reader.open_shard_file)
    monkeypatch.setattr(safetensors_reader, "open_shard_file", tracker)
    yield tracker
