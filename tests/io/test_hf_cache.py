from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from mothertree.errors import InvalidCheckpointError, MissingShardError
from mothertree.io import (
    ModelRef,
    discover,
    is_cache_entry,
    open_checkpoint,
    repo_id,
    resolve_snapshot,
)

if TYPE_CHECKING:
    from conftest import Saved

MakeEntry = Callable[..., Path]
OLD = "1111111111111111111111111111111111111111"
NEW = "2222222222222222222222222222222222222222"


@pytest.mark.slow
@pytest.mark.parametrize("symlinks", [True, False], ids=["links", "copies"])
def test_cache_entry_reads_like_its_snapshot(
    saved: Saved, tmp_path: Path, make_cache_entry: MakeEntry, symlinks: bool
) -> None:
    entry = make_cache_entry(tmp_path, "org/tiny-bert", saved.sharded_bf16, symlinks=symlinks)
    snapshot = entry / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    assert (snapshot / "model.safetensors.index.json").is_symlink() == symlinks
    assert is_cache_entry(entry)
    assert repo_id(entry) == "org/tiny-bert"
    assert resolve_snapshot(entry) == snapshot

    assert discover(entry) == ([ModelRef("org/tiny-bert", entry, snapshot)], [])
    with open_checkpoint(entry) as checkpoint:
        assert checkpoint.path == entry
        for name, expected in saved.state_bf16.items():
            np.testing.assert_array_equal(checkpoint.read(name), expected)


def test_repo_id_without_org(tmp_path: Path) -> None:
    assert repo_id(tmp_path / "models--gpt2") == "gpt2"
    assert repo_id(tmp_path / "models--my-org--my-model") == "my-org/my-model"


@pytest.mark.slow
def test_refs_main_picks_the_snapshot(saved: Saved, tmp_path: Path, make_cache_entry: MakeEntry) -> None:
    entry = make_cache_entry(tmp_path, "org/m", saved.single, commit=OLD)
    make_cache_entry(tmp_path, "org/m", saved.sharded_bf16, commit=NEW, write_ref=False)
    os.utime(entry / "snapshots" / OLD, (1, 1))  # OLD is the older on disk: only refs/main can choose it
    assert resolve_snapshot(entry) == entry / "snapshots" / OLD
    (entry / "refs" / "main").write_text(NEW + "\n")
    assert resolve_snapshot(entry) == entry / "snapshots" / NEW


@pytest.mark.slow
def test_without_refs_the_newest_snapshot_wins(
    saved: Saved, tmp_path: Path, make_cache_entry: MakeEntry
) -> None:
    entry = make_cache_entry(tmp_path, "org/m", saved.single, commit=OLD, write_ref=False)
    assert resolve_snapshot(entry) == entry / "snapshots" / OLD, "the only snapshot"
    make_cache_entry(tmp_path, "org/m", saved.single, commit=NEW, write_ref=False)
    os.utime(entry / "snapshots" / OLD, (1_000, 1_000))
    os.utime(entry / "snapshots" / NEW, (2_000, 2_000))
    assert resolve_snapshot(entry) == entry / "snapshots" / NEW
    os.utime(entry / "snapshots" / OLD, (3_000, 3_000))
    assert resolve_snapshot(entry) == entry / "snapshots" / OLD


@pytest.mark.slow
def test_a_ref_to_a_missing_snapshot_is_an_error_not_another_revision(
    saved: Saved, tmp_path: Path, make_cache_entry: MakeEntry
) -> None:
    entry = make_cache_entry(tmp_path, "org/m", saved.single, commit=OLD)
    (entry / "refs" / "main").write_text("3333333333333333333333333333333333333333")  # not downloaded
    with pytest.raises(InvalidCheckpointError) as caught:
        resolve_snapshot(entry)
    assert str(caught.value) == (
        f"`{entry / 'refs' / 'main'}` names commit `3333333333333333333333333333333333333333`, whose "
        f"snapshot is not in the cache (snapshots present: `{OLD}`)"
    )
    assert "hf download org/m" in (caught.value.hint or "")


def test_entry_without_snapshot(tmp_path: Path) -> None:
    entry = tmp_path / "models--org--half"
    (entry / "blobs").mkdir(parents=True)
    with pytest.raises(InvalidCheckpointError) as caught:
        open_checkpoint(entry)
    assert str(caught.value) == f"`{entry}` has no snapshot: the download did not finish"
    assert caught.value.hint == "download it again, e.g. `hf download org/half`"


@pytest.mark.slow
def test_broken_symlink_names_the_missing_blob(
    saved: Saved, tmp_path: Path, make_cache_entry: MakeEntry
) -> None:
    entry = make_cache_entry(tmp_path, "org/tiny-bert", saved.single)
    link = entry / "snapshots" / "0123456789abcdef0123456789abcdef01234567" / "model.safetensors"
    blob = Path(os.path.normpath(link.parent / os.readlink(link)))
    blob.unlink()
    expected = f"`{link}` is a broken link: its target `{blob}` is missing"

    with pytest.raises(MissingShardError) as caught:
        open_checkpoint(entry)
    assert str(caught.value) == expected

    models, broken = discover(tmp_path)
    assert models == []
    assert [(b.path, str(b.error)) for b in broken] == [(entry, expected)]


@pytest.mark.slow
def test_broken_shard_link(saved: Saved, tmp_path: Path, make_cache_entry: MakeEntry) -> None:
    entry = make_cache_entry(tmp_path, "org/tiny-bert", saved.sharded_bf16)
    link = (
        entry / "snapshots" / "0123456789abcdef0123456789abcdef01234567" / "model-00003-of-00003.safetensors"
    )
    blob = Path(os.path.normpath(link.parent / os.readlink(link)))
    blob.unlink()
    with pytest.raises(MissingShardError) as caught:
        open_checkpoint(entry)
    assert str(caught.value) == f"`{link}` is a broken link: its target `{blob}` is missing"


@pytest.mark.slow
def test_cache_root_is_a_collection(saved: Saved, tmp_path: Path, make_cache_entry: MakeEntry) -> None:
    hub = tmp_path / "hub"
    a = make_cache_entry(hub, "org-a/bert", saved.single)
    b = make_cache_entry(hub, "org-b/bert", saved.sharded_bf16)
    (hub / "datasets--org--data" / "snapshots" / "x").mkdir(parents=True)
    (hub / "datasets--org--data" / "snapshots" / "x" / "data.safetensors").write_bytes(b"")
    (hub / ".locks" / "models--org-a--bert").mkdir(parents=True)
    (hub / "version.txt").write_text("1")

    models, broken = discover(hub)
    assert broken == []
    assert [(m.id, m.path) for m in models] == [("org-a/bert", a), ("org-b/bert", b)]
    assert models[0].weights_path == resolve_snapshot(a)
    assert models[0].declared_base_models == ("google-bert/bert-base-uncased", "org/other-base")
