"""The guards every open goes through (io/_guards.py), on files and links made in the test itself."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from mothertree.errors import (
    CheckpointNotFoundError,
    InvalidCheckpointError,
    LimitExceededError,
    NotARegularFileError,
    OutsideInputError,
    UnreadableFileError,
)
from mothertree.io._guards import (
    FOLLOW_LINKS,
    boundary_of,
    check_inside,
    open_regular,
    os_error,
    parse_json,
    read_bounded,
)

WHERE = Path("/models/x.json")


@pytest.mark.parametrize(
    "text, why",
    [
        ('{"a": 1, "a": 2}', "the key `a` appears twice in one object"),
        ('{"n": ' + "9" * 21 + "}", "it holds an integer of 21 digits"),
        ('{"n": -' + "9" * 5000 + "}", "it holds an integer of 5000 digits"),
        ("[" * 100_000 + "]" * 100_000, "its JSON is nested too deeply"),
        ('{"a": ', "invalid JSON at line 1"),
    ],
)
def test_parse_json_refuses(text: str, why: str) -> None:
    with pytest.raises(InvalidCheckpointError) as caught:
        parse_json(text.encode(), WHERE, "a shard index")
    assert str(caught.value) == f"`{WHERE}` is not a shard index: {why}"


def test_parse_json_reads_what_real_files_hold() -> None:
    text = '{"metadata": {"total_size": 18446744073709551615}, "weight_map": {"w": "m.safetensors"}}'
    assert parse_json(text.encode(), WHERE, "a shard index") == {
        "metadata": {"total_size": 2**64 - 1},
        "weight_map": {"w": "m.safetensors"},
    }
    with pytest.raises(InvalidCheckpointError, match="it is not UTF-8 text"):
        parse_json(b'{"\xff": 1}', WHERE, "a shard index")


def test_the_boundary_of_a_file_is_its_folder_and_a_cache_entry_widens_it(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").touch()
    assert boundary_of(model) == model.resolve()
    assert boundary_of(model / "model.safetensors") == model.resolve()
    snapshot = tmp_path / "models--org--m" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    assert boundary_of(snapshot) == (tmp_path / "models--org--m").resolve()


def test_check_inside_follows_links_before_judging(tmp_path: Path) -> None:
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    (outside / "w.safetensors").touch()
    (inside / "here.safetensors").touch()
    (inside / "link.safetensors").symlink_to(outside / "w.safetensors")
    (inside / "near.safetensors").symlink_to("here.safetensors")

    check_inside(inside / "here.safetensors", inside.resolve())
    check_inside(inside / "near.safetensors", inside.resolve())
    with pytest.raises(OutsideInputError) as caught:
        check_inside(inside / "link.safetensors", inside.resolve(), named_by=inside / "index.json")
    assert str(caught.value) == (
        f"`{inside / 'link.safetensors'}` (named by `{inside / 'index.json'}`) leads to "
        f"`{(outside / 'w.safetensors').resolve()}`, outside the input `{inside.resolve()}`"
    )
    check_inside(inside / "link.safetensors", FOLLOW_LINKS)


def test_open_regular_refuses_a_fifo_at_once_and_names_os_errors(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(NotARegularFileError, match=r"is a named pipe \(FIFO\)"):
        open_regular(tmp_path / "pipe")  # without O_NONBLOCK this would wait for a writer for ever
    with pytest.raises(NotARegularFileError, match="is a folder"):
        open_regular(tmp_path)
    with pytest.raises(CheckpointNotFoundError):
        open_regular(tmp_path / "missing")
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(UnreadableFileError) as caught:
        open_regular(tmp_path / "loop")
    assert "ELOOP" in str(caught.value) and "loops" in (caught.value.hint or "")


def test_os_error_names_the_code_and_says_what_to_do() -> None:
    error = os_error(WHERE, PermissionError(errno.EACCES, "Permission denied"))
    assert str(error) == f"`{WHERE}` cannot be read: Permission denied (EACCES)"
    assert error.hint == "the file is not readable by this user: check its permissions"
    assert isinstance(error, OSError)


def test_read_bounded_refuses_a_file_over_its_limit(tmp_path: Path) -> None:
    (tmp_path / "big.json").write_bytes(b" " * (2 << 20))
    with pytest.raises(LimitExceededError, match="larger than 1 MiB"):
        read_bounded(tmp_path / "big.json", 1 << 20, "an adapter config")
    assert read_bounded(tmp_path / "big.json", 4 << 20, "an adapter config") == b" " * (2 << 20)
