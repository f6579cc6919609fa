"""Hostile collections: each crafted case of the security probe, rebuilt with the real writers.

Every case is run twice through the CLI: alone (exit 1, ``error:`` and ``hint:`` naming the file) and inside
a valid collection of four really trained tiny BERTs (exit 0, the four recovered, the case listed as skipped
with its reason, or read when it is a valid model). Both runs are under a time limit, and an audit hook
records every path Python opens or lists: nothing outside the input may be among them.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import struct
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file
from tiny_bert import save_tiny_tree

from mothertree.cli import main

if TYPE_CHECKING:
    from conftest import Saved

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.slow

TIME_LIMIT_S = 30  # a run that takes longer has hung (each takes a few seconds on 2 cores)
SECRET = "SECRET-OUTSIDE-THE-INPUT"

# --- what Python opens and lists, while a run is recorded -------------------------------------------------

_recorded: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _recorded is not None and event in ("open", "os.scandir", "os.listdir") and args:
        if isinstance(args[0], (str, bytes, os.PathLike)):
            _recorded.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


class _Hung(Exception):
    pass


def _on_alarm(signum: int, frame: object) -> None:
    raise _Hung


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    opened: list[str]


def run_cli(*args: str | Path) -> Run:
    """``mothertree recover ARGS --format json -q``, in process, under ``TIME_LIMIT_S``, paths recorded."""
    global _recorded
    _recorded = []
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(TIME_LIMIT_S)
    try:
        result = CliRunner().invoke(main, ["recover", *map(str, args), "--format", "json", "-q"])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        opened, _recorded = _recorded, None
    if isinstance(result.exception, _Hung):
        pytest.fail(f"`mothertree recover {' '.join(map(str, args))}` hung for more than {TIME_LIMIT_S} s")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback: the defect these tests are here to catch
    return Run(result.exit_code, result.stdout, result.stderr, opened)


# --- the valid parts: four tiny BERTs, and a place outside the input ----------------------------------------


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root and three fine-tunes of it, really trained, saved with ``save_pretrained``."""
    folder = tmp_path_factory.mktemp("family")
    save_tiny_tree(folder, n_children=3)
    return folder


@dataclass(frozen=True)
class Place:
    """Where a case is built: ``input`` (the folder given to mothertree) and ``outside`` (never read)."""

    input: Path
    outside: Path
    saved: Saved


def _outside(tmp_path: Path, saved: Saved) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    # A valid model outside: a reader that follows a hostile pointer would silently merge it in.
    (outside / "model.safetensors").write_bytes((saved.single / "model.safetensors").read_bytes())
    (outside / "config.json").write_text("{}")
    return outside


def _hard_link_tree(source: Path, target: Path) -> None:
    # Hard links: the same bytes without copying, and no symlink for confinement to refuse.
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, destination)


# --- the cases ----------------------------------------------------------------------------------------------

Builder = Callable[[Place], Path]


@dataclass(frozen=True)
class Case:
    name: str
    build: Builder
    readable: bool = False  # a valid model despite the hostile part (read in a collection)
    alone: str = "item"  # what is given alone: the item itself, or the folder holding it ("folder")
    says: str = ""  # a regex the error message must match


def _model_copy(place: Place, name: str) -> Path:
    folder = place.input / name
    folder.mkdir()
    for file in place.saved.single.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    return folder


def _entry(place: Place, ref: str) -> Path:
    entry = place.input / "models--org--evil"
    snapshot = entry / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (entry / "blobs").mkdir()
    (snapshot / "model.safetensors").write_bytes((place.saved.single / "model.safetensors").read_bytes())
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(ref)
    return entry


def cache_ref_climbs_out(place: Place) -> Path:
    return _entry(place, "../../..")


def cache_ref_is_absolute(place: Place) -> Path:
    return _entry(place, str(place.outside))


def _index_naming(place: Place, shard: str) -> Path:
    folder = _model_copy(place, "evil-index")
    (folder / "model.safetensors").unlink()
    weight_map = {name: shard for name in place.saved.state}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


def index_names_etc_passwd(place: Place) -> Path:
    return _index_naming(place, "/etc/passwd")


def index_names_a_shard_outside(place: Place) -> Path:
    return _index_naming(place, f"../../{place.outside.name}/model.safetensors")


def folder_link_to_root(place: Place) -> Path:
    link = place.input / "everything"
    link.symlink_to("/")
    return link


def weights_link_outside(place: Place) -> Path:
    folder = place.input / "linked"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").symlink_to(place.outside / "model.safetensors")
    return folder


def readme_is_a_fifo(place: Place) -> Path:
    folder = _model_copy(place, "fifo-card")
    (folder / "README.md").unlink()
    os.mkfifo(folder / "README.md")
    return folder


def _fifo(place: Place, name: str) -> Path:
    os.mkfifo(place.input / name)
    return place.input / name


def safetensors_is_a_fifo(place: Place) -> Path:
    return _fifo(place, "pipe.safetensors")


def bin_is_a_fifo(place: Place) -> Path:
    return _fifo(place, "pipe.bin")


def index_is_a_fifo(place: Place) -> Path:
    folder = place.input / "pipe-index"
    folder.mkdir()
    os.mkfifo(folder / "model.safetensors.index.json")
    return folder


def _adapter_with(place: Place, **config: object) -> Path:
    folder = place.input / "evil-lora"
    folder.mkdir()
    for file in place.saved.adapter.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    raw = json.loads((folder / "adapter_config.json").read_text())
    raw.update(config)
    raw["base_model_name_or_path"] = "base"
    (folder / "adapter_config.json").write_text(json.dumps(raw))
    _model_copy(place, "base")
    return folder


def rank_pattern_of_the_probe(place: Place) -> Path:
    # Backtracks for ever in Python's `re`; the `regex` module fails it at once (no `Z` in the name).
    return _adapter_with(place, rank_pattern={"(.|.)*Z": 4})


def rank_pattern_backtracks(place: Place) -> Path:
    # Catastrophic in `regex` too, on BERT's module names: only the time limit stops it.
    return _adapter_with(place, rank_pattern={r"(.|.)*\d(.|.)*\d": 4})


def alpha_beyond_floats(place: Place) -> Path:
    folder = _adapter_with(place)
    text = (folder / "adapter_config.json").read_text()
    (folder / "adapter_config.json").write_text(
        re.sub(r'"lora_alpha": [^,}]+', '"lora_alpha": 1' + "0" * 400, text)
    )
    return folder


def adapter_config_nested_deep(place: Place) -> Path:
    folder = _adapter_with(place)
    (folder / "adapter_config.json").write_text(
        '{"peft_type": "LORA", "x": ' + "[" * 200_000 + "]" * 200_000 + "}"
    )
    return folder


def _pickle_file(place: Place, name: str, value: object) -> Path:
    path = place.input / name
    torch.save(value, path)
    return path


def pickle_shares_children_40_deep(place: Place) -> Path:
    node: dict[str, Any] = {"w": torch.zeros(2)}
    for _ in range(40):
        node = {"a": node, "b": node}
    path = _pickle_file(place, "shared.bin", node)
    assert path.stat().st_size < 10_000  # a few KB that unfold into 2**40 paths
    return path


def pickle_shares_children_30_deep(place: Place) -> Path:
    # Shallower than the depth bound, so only the bound on entries visited stops the 2**30 paths.
    node: dict[str, Any] = {"w": torch.zeros(2)}
    for _ in range(30):
        node = {"a": node, "b": node}
    return _pickle_file(place, "shared30.bin", node)


def pickle_dict_contains_itself(place: Place) -> Path:
    loop: dict[str, Any] = {"w": torch.zeros(2)}
    loop["self"] = loop
    return _pickle_file(place, "loop.bin", loop)


def pickle_runs_os_system(place: Place) -> Path:
    class Shell:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"cat {place.outside / 'secret.txt'}",))

    return _pickle_file(place, "shell.bin", {"w": torch.zeros(2), "x": Shell()})


def _zip_bin_with(place: Place, name: str, patch: Callable[[bytearray, zipfile.ZipInfo], None]) -> Path:
    path = place.input / name
    torch.save({"w": torch.arange(6.0)}, path)
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("/version"))
    raw = bytearray(path.read_bytes())
    patch(raw, info)
    path.write_bytes(bytes(raw))
    return path


def zip_member_name_not_utf8(place: Place) -> Path:
    def patch(raw: bytearray, info: zipfile.ZipInfo) -> None:
        encoded = info.filename.encode()
        bad = encoded[:-1] + b"\xff"
        for at in [m.start() for m in re.finditer(re.escape(encoded), bytes(raw))]:
            raw[at : at + len(bad)] = bad
        # Set the "names are UTF-8" flag in the local and central headers.
        for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            for m in re.finditer(re.escape(signature), bytes(raw)):
                flags = struct.unpack_from("<H", raw, m.start() + flag_at)[0]
                struct.pack_into("<H", raw, m.start() + flag_at, flags | 0x800)

    return _zip_bin_with(place, "bad-names.bin", patch)


def zip_version_unsupported(place: Place) -> Path:
    def patch(raw: bytearray, info: zipfile.ZipInfo) -> None:
        for signature, version_at in ((b"PK\x03\x04", 4), (b"PK\x01\x02", 6)):
            for m in re.finditer(re.escape(signature), bytes(raw)):
                struct.pack_into("<H", raw, m.start() + version_at, 99)

    return _zip_bin_with(place, "zip-v99.bin", patch)


def storage_size_lie(place: Place) -> Path:
    # The pickle says the storage holds 320 floats; its record holds 300. torch.load refuses this when it
    # does not memory-map, and with mmap=True would read 80 bytes past the record.
    path = _pickle_file(place, "size-lie.bin", {"w": torch.arange(300.0)})
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    honest = b"M" + (300).to_bytes(2, "little")  # BININT2 300: the storage's size comes first, then the shape
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for info, content in members:
            if info.filename.endswith("data.pkl"):
                content = content.replace(honest, b"M" + (320).to_bytes(2, "little"), 1)
            archive.writestr(info, content)
    return path


def _safetensors_with_header(place: Place, name: str, header: bytes, data: bytes = b"") -> Path:
    path = place.input / name
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def header_nested_deep(place: Place) -> Path:
    return _safetensors_with_header(
        place, "deep.safetensors", b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    )


def header_5000_digit_integer(place: Place) -> Path:
    header = b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 1' + b"0" * 4999 + b"]}}"
    return _safetensors_with_header(place, "digits.safetensors", header)


def header_400_digit_dimension(place: Place) -> Path:
    header = b'{"w": {"dtype": "F32", "shape": [1' + b"0" * 399 + b'], "data_offsets": [0, 4]}}'
    return _safetensors_with_header(place, "dimension.safetensors", header, b"\0" * 4)


def header_lists_many_empty_tensors(place: Place) -> Path:
    entries = ",".join(
        f'"t{i}": {{"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}' for i in range(150_000)
    )
    return _safetensors_with_header(place, "empty-tensors.safetensors", ("{" + entries + "}").encode())


def header_names_a_tensor_twice(place: Place) -> Path:
    path = place.input / "twice.safetensors"
    save_file({"w": np.ones(2, dtype=np.float32)}, str(path))
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = raw[8 : 8 + length].rstrip(b" ")
    duplicated = header[:-1] + b',"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    return _safetensors_with_header(place, "twice.safetensors", duplicated, raw[8 + length :])


def index_nested_deep(place: Place) -> Path:
    folder = _index_naming(place, "model.safetensors")
    (folder / "model.safetensors.index.json").write_text(
        '{"weight_map": ' + "[" * 200_000 + "]" * 200_000 + "}"
    )
    return folder


def index_5000_digit_integer(place: Place) -> Path:
    folder = _index_naming(place, "model.safetensors")
    (folder / "model.safetensors.index.json").write_text(
        '{"metadata": {"total_size": 1' + "0" * 4999 + '}, "weight_map": {}}'
    )
    return folder


def weights_link_to_themselves(place: Place) -> Path:
    folder = place.input / "self-link"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to("model.safetensors")
    return folder


def path_name_too_long(place: Place) -> Path:
    folder = place.input / "long-link"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to("x" * 300)
    return folder


def weights_are_a_socket(place: Place) -> Path:
    folder = place.input / "socket"
    folder.mkdir()
    # A socket's path is limited to ~107 bytes: bind relative to the folder.
    here = os.getcwd()
    os.chdir(folder)
    try:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind("model.safetensors")
        sock.close()
    finally:
        os.chdir(here)
    return folder


def folder_named_like_weights(place: Place) -> Path:
    folder = place.input / "odd"
    (folder / "model.safetensors").mkdir(parents=True)
    (folder / "model.safetensors" / "notes.txt").write_text("not weights")
    return folder / "model.safetensors"


def folders_1500_deep(place: Place) -> Path:
    top = place.input / "deep"
    top.mkdir()
    path = top
    for _ in range(1500):  # one level at a time: pathlib's own `mkdir(parents=True)` recurses too deep
        path = path / "d"
        path.mkdir()
    return top


CASES = [
    Case("cache ref climbs out", cache_ref_climbs_out, says="not a commit hash"),
    Case("cache ref is absolute", cache_ref_is_absolute, says="not a commit hash"),
    Case("index names /etc/passwd", index_names_etc_passwd, says="not a file beside the index"),
    Case("index names a shard outside", index_names_a_shard_outside, says="not a file beside the index"),
    Case("folder link to /", folder_link_to_root, alone="folder", says="outside the input"),
    Case("weights link outside", weights_link_outside, alone="folder", says="outside the input"),
    Case("README.md is a FIFO", readme_is_a_fifo, readable=True),
    Case("safetensors is a FIFO", safetensors_is_a_fifo, says=r"named pipe \(FIFO\)"),
    Case("bin is a FIFO", bin_is_a_fifo, says=r"named pipe \(FIFO\)"),
    Case("index is a FIFO", index_is_a_fifo, says=r"named pipe \(FIFO\)"),
    Case("rank_pattern (.|.)*Z", rank_pattern_of_the_probe, readable=True, alone="folder"),
    Case("rank_pattern backtracks", rank_pattern_backtracks, alone="folder", says="backtracks without end"),
    Case("lora_alpha = 10**400", alpha_beyond_floats, alone="folder", says="integer of 401 digits"),
    Case("adapter config nested deep", adapter_config_nested_deep, alone="folder", says="nested too deeply"),
    Case("pickle shares children 40 deep", pickle_shares_children_40_deep, says="more than 32 deep"),
    Case("pickle shares children 30 deep", pickle_shares_children_30_deep, says="2,000,000 entries"),
    Case("pickle dict contains itself", pickle_dict_contains_itself, says="contains itself"),
    Case("pickle runs os.system", pickle_runs_os_system, says="posix.system"),
    Case("zip member name not UTF-8", zip_member_name_not_utf8),
    Case("zip version 9.9", zip_version_unsupported, readable=True),
    Case("storage size lie", storage_size_lie, says="declares storage `0` of 1280 bytes"),
    Case("header nested deep", header_nested_deep, says="nested too deeply"),
    Case("header 5000-digit integer", header_5000_digit_integer, says="integer of 5000 digits"),
    Case("header 400-digit dimension", header_400_digit_dimension, says="integer of 400 digits"),
    Case("header lists 150k empty tensors", header_lists_many_empty_tensors, says="150,000 tensors"),
    Case("header names a tensor twice", header_names_a_tensor_twice, says="appears twice"),
    Case("index nested deep", index_nested_deep, says="nested too deeply"),
    Case("index 5000-digit integer", index_5000_digit_integer, says="integer of 5000 digits"),
    Case("weights link to themselves", weights_link_to_themselves, says="loops"),
    Case("path name too long", path_name_too_long, says="ENAMETOOLONG"),
    Case("weights are a socket", weights_are_a_socket, says="a socket"),
    Case("folder named model.safetensors", folder_named_like_weights, alone="folder", says="is a folder"),
    Case("folders 1500 deep", folders_1500_deep, says="nested more than 64 folders"),
]


@pytest.fixture
def place(tmp_path: Path, saved: Saved) -> Iterator[Place]:
    (tmp_path / "input").mkdir()
    yield Place(tmp_path / "input", _outside(tmp_path, saved), saved)
    _remove_deep_folders(tmp_path / "input" / "deep")


def _remove_deep_folders(top: Path) -> None:
    # shutil.rmtree (and so pytest's clean-up) recurses once per level: empty the 1500 levels bottom-up.
    if not top.is_dir():
        return
    levels = [top]
    while (levels[-1] / "d").is_dir():
        levels.append(levels[-1] / "d")
    for level in reversed(levels):
        level.rmdir()


def _assert_nothing_outside_read(run: Run, place: Place, item: Path) -> None:
    outside = os.path.realpath(place.outside)
    through_links = [item] if item.is_symlink() else []
    for path in run.opened:
        real = os.path.realpath(path)
        assert not real.startswith(outside + os.sep) and real != outside, f"opened {path} ({real})"
        assert real != "/etc/passwd", f"opened {path}"
        for link in through_links:
            assert not path.startswith(str(link) + os.sep), f"went through the link {link}: {path}"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_case_alone_and_in_a_collection(case: Case, place: Place, family: Path) -> None:
    item = case.build(place)
    given = item.parent if case.alone == "folder" else item

    alone = run_cli(given)
    _assert_nothing_outside_read(alone, place, item)
    assert "Traceback" not in alone.stderr
    if case.readable:  # a model despite it: read when alone, or too few models to compare, said so
        assert alone.code == 0 or ("error:" in alone.stderr and "hint:" in alone.stderr), alone.stderr
    else:
        assert alone.code == 1, alone.stdout + alone.stderr
        assert "error:" in alone.stderr and "hint:" in alone.stderr, alone.stderr
        assert item.name in alone.stderr, f"the error does not name `{item.name}`: {alone.stderr}"
    if case.says:
        assert re.search(case.says, alone.stderr), alone.stderr

    _hard_link_tree(family, place.input)
    collection = run_cli(place.input)
    _assert_nothing_outside_read(collection, place, item)
    assert collection.code == 0, collection.stderr
    read = {model["id"] for model in json.loads(collection.stdout)["models"]}
    assert {"root", "ft-1", "ft-2", "ft-3"} <= read
    if case.readable:
        assert collection.stderr == "" or item.name not in collection.stderr.split("skipped", 1)[-1]
    else:
        assert "skipped" in collection.stderr, collection.stderr
        assert item.name in collection.stderr.split("skipped", 1)[1], collection.stderr
        if case.says:
            assert re.search(case.says, collection.stderr), collection.stderr
    assert SECRET not in collection.stdout + collection.stderr


def test_os_errors_are_named_and_cost_one_model(
    place: Place, family: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EACCES and EIO cannot be produced for real here (tests run as root; no failing disk), so the one
    `os.open` of one file is made to fail; the rest is the real code path."""
    _hard_link_tree(family, place.input)
    target = place.input / "ft-2" / "model.safetensors"
    real_open = os.open
    for code, says in ((errno.EACCES, "EACCES"), (errno.EIO, "EIO")):

        def failing_open(path: Any, flags: int, *args: Any, code: int = code) -> int:
            if os.fspath(path) == str(target):
                raise OSError(code, os.strerror(code), str(path))
            return real_open(path, flags, *args)

        monkeypatch.setattr(os, "open", failing_open)
        run = run_cli(place.input)
        monkeypatch.setattr(os, "open", real_open)
        assert run.code == 0, run.stderr
        assert f"`{target}` cannot be read" in run.stderr and says in run.stderr, run.stderr
        assert {m["id"] for m in json.loads(run.stdout)["models"]} == {"root", "ft-1", "ft-3"}


def test_follow_links_reads_a_link_the_user_trusts(place: Place, family: Path) -> None:
    _hard_link_tree(family, place.input)
    weights_link_outside(place)
    assert "linked" not in {m["id"] for m in json.loads(run_cli(place.input).stdout)["models"]}
    followed = run_cli(place.input, "--follow-links")
    assert followed.code == 0, followed.stderr
    assert "linked" in {m["id"] for m in json.loads(followed.stdout)["models"]}


@pytest.mark.parametrize(
    "content, says",
    [
        (b"not a zip at all", "is not a mothertree FeatureSet"),
        (b"PK\x03\x04" + b"\0" * 100, "is not a mothertree FeatureSet"),
    ],
)
def test_a_corrupt_feature_file_is_named(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "features.npz"
    path.write_bytes(content)
    run = run_cli(path)
    assert run.code == 1 and says in run.stderr and "hint:" in run.stderr, run.stderr


def test_a_feature_file_with_arrays_of_the_wrong_shape_is_named(tmp_path: Path) -> None:
    header = {"format_version": 2, "model_ids": ["a", "b"], "model_paths": ["a", "b"], "tensor_names": ["w"]}
    path = tmp_path / "features.npz"
    np.savez(
        path,
        header=np.array(json.dumps(header)),
        numel=np.array([4]),
        rms_distances=np.zeros((1, 3, 3)),
        moments=np.zeros((1, 2, 4)),
    )
    run = run_cli(path)
    assert run.code == 1 and "`rms_distances` has shape [1, 3, 3]" in run.stderr, run.stderr


def test_models_of_one_name_under_two_paths_keep_apart(place: Place, family: Path) -> None:
    # Left as two `model`s, the pair became an edge from `model` to itself, and drawing it never ended.
    for folder, source in (("a", "root"), ("b", "ft-1")):
        _hard_link_tree(family / source, place.input / folder / "model")
    first, second = place.input / "a" / "model", place.input / "b" / "model"
    run = run_cli(first, second, first, "--trees", "1")  # and a path given twice is one model
    assert run.code == 0, run.stderr
    result = json.loads(run.stdout)
    assert sorted(m["id"] for m in result["models"]) == ["a/model", "b/model"]
    assert [{e["parent"], e["child"]} for e in result["edges"]] == [{"a/model", "b/model"}]
