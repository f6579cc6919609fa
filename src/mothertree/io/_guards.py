"""What every file open goes through: inside the input, a regular file, bounded JSON, named OS errors.

mothertree is run on checkpoints nobody vouches for, so a file's contents may not steer where it reads:

- **Confinement.** Each model has a *boundary*, a resolved folder every file it opens must resolve inside:
  the input the user gave (``discover``'s root), else the folder of the file being opened. A Hugging Face
  cache entry widens it to the whole ``models--org--name`` folder, whose ``snapshots/`` link into ``blobs/``.
  ``FOLLOW_LINKS`` (``/``) lifts it, for symlink farms the user trusts (``--follow-links``).
- **Regular files only.** Files are opened non-blocking and checked with ``fstat`` before a byte is read,
  so a FIFO or a device named ``README.md`` fails at once instead of blocking forever.
- **Bounded parsing.** JSON is read up to a size, with integers of at most 20 digits (a u64), without
  duplicate keys, and too-deep nesting becomes an error rather than a ``RecursionError``.
- **Named errors.** ``OSError`` becomes ``UnreadableFileError`` naming the file and what to do.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from io import BufferedReader
from pathlib import Path

from ..errors import (
    CheckpointNotFoundError,
    InvalidCheckpointError,
    LimitExceededError,
    NotARegularFileError,
    OutsideInputError,
    UnreadableFileError,
)

# Every path is inside `/`: the boundary of a user who asked to follow links wherever they go.
FOLLOW_LINKS = Path("/")
# Shard indexes of the largest hub models are a few MB; adapter configs a few KB.
MAX_JSON_BYTES = 64 << 20
# 2**64 has 20 digits: no size, offset or count in a checkpoint needs more.
MAX_INT_DIGITS = 20
_CACHE_ENTRY_PREFIX = "models--"


def real_path(path: Path) -> Path:
    """``path`` with every link resolved, never raising on a loop (the looping part is kept as is)."""
    return Path(os.path.realpath(path))


def boundary_of(path: Path) -> Path:
    """The boundary for files reached from ``path``: its folder (itself, if a folder), resolved, widened to
    the Hugging Face cache entry that holds it, if any."""
    real = real_path(path)
    folder = real if os.path.isdir(real) else real.parent
    for candidate in (folder, *folder.parents):
        if candidate.name.startswith(_CACHE_ENTRY_PREFIX) and os.path.isdir(candidate / "snapshots"):
            return candidate
    return folder


def is_inside(path: Path, boundary: Path) -> bool:
    real = real_path(path)
    return real == boundary or real.is_relative_to(boundary)


def check_inside(path: Path, boundary: Path | None, *, named_by: Path | None = None) -> None:
    """Raise OutsideInputError unless ``path`` resolves inside ``boundary`` (None: ``path``'s own)."""
    limit = real_path(boundary) if boundary is not None else boundary_of(path)
    if is_inside(path, limit):
        return
    by = f" (named by `{named_by}`)" if named_by is not None else ""
    raise OutsideInputError(
        f"`{path}`{by} leads to `{real_path(path)}`, outside the input `{limit}`", path=path
    )


def open_regular(path: Path, boundary: Path | None = None, *, named_by: Path | None = None) -> BufferedReader:
    """``path`` opened for binary reading, once it is known to be a regular file inside ``boundary``.

    Raises:
        OutsideInputError, NotARegularFileError, CheckpointNotFoundError, UnreadableFileError.
    """
    check_inside(path, boundary, named_by=named_by)
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer that never comes.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise os_error(path, exc) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise not_a_regular_file(path, mode)
        os.set_blocking(fd, True)
        file = os.fdopen(fd, "rb")
        assert isinstance(file, BufferedReader)
        return file
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: Path, boundary: Path | None = None, *, named_by: Path | None = None) -> int:
    """Check ``path`` as ``open_regular`` does, for libraries that open files by name; its size."""
    check_inside(path, boundary, named_by=named_by)
    try:
        info = path.stat()
    except OSError as exc:
        raise os_error(path, exc) from None
    if not stat.S_ISREG(info.st_mode):
        raise not_a_regular_file(path, info.st_mode)
    return info.st_size


def read_bounded(path: Path, limit: int, what: str, boundary: Path | None = None) -> bytes:
    """All of a small file, refusing one larger than ``limit`` bytes before reading it."""
    with open_regular(path, boundary) as file:
        try:
            raw = file.read(limit + 1)
        except OSError as exc:
            raise os_error(path, exc) from None
    if len(raw) > limit:
        size = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit:,} bytes"
        raise LimitExceededError(f"`{path}` is not {what}: it is larger than {size}", path=path)
    return raw


def parse_json(
    raw: bytes | str, path: Path, what: str, hint: str | None = None, *, invalid: str | None = None
) -> object:
    """The JSON value in ``raw`` (from ``path``), refusing huge integers, duplicate keys and deep nesting.
    ``invalid`` says what is wrong when the text is no JSON at all (default: where it stops being)."""

    def refuse(why: str) -> InvalidCheckpointError:
        return InvalidCheckpointError(f"`{path}` is not {what}: {why}", hint=hint, path=path)

    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text, parse_int=_bounded_int, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise refuse("it is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise refuse(invalid or f"invalid JSON at line {exc.lineno}") from None
    except _Refused as exc:
        raise refuse(str(exc)) from None
    except RecursionError:
        raise refuse("its JSON is nested too deeply") from None


class _Refused(ValueError):
    pass


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"it holds an integer of {len(digits.lstrip('-'))} digits")
    return int(digits)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json keeps the last of two equal keys; in a header that is a tensor silently replaced.
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"the key `{key}` appears twice in one object")
        result[key] = value
    return result


def not_a_regular_file(path: Path, mode: int) -> NotARegularFileError:
    kind = (
        "a folder"
        if stat.S_ISDIR(mode)
        else "a named pipe (FIFO)"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a regular file"
    )
    return NotARegularFileError(f"`{path}` is {kind}, not a file mothertree can read", path=path)


_OS_HINTS = {
    errno.EACCES: "the file is not readable by this user: check its permissions",
    errno.EPERM: "the file is not readable by this user: check its permissions",
    errno.ELOOP: "it is a symbolic link that loops (or links too deep): fix or remove the link",
    errno.ENAMETOOLONG: "the path is longer than this file system allows: move or rename the model",
    errno.EIO: "the disk reported an I/O error: copy the file again from a good source",
    errno.ENXIO: "it is a special file with nothing behind it (a socket or a device), not a checkpoint",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


def os_error(path: Path, exc: OSError) -> CheckpointNotFoundError | UnreadableFileError:
    """The project error for an ``OSError`` raised while opening or reading ``path``."""
    if exc.errno == errno.ENOENT:
        return CheckpointNotFoundError(f"`{path}` does not exist", path=path)
    reason = exc.strerror or type(exc).__name__
    code = errno.errorcode.get(exc.errno or -1)
    named = f"{reason} ({code})" if code else reason
    return UnreadableFileError(
        f"`{path}` cannot be read: {named}", hint=_OS_HINTS.get(exc.errno or -1), path=path
    )
