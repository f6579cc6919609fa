"""The Hugging Face cache: ``models--org--name`` entries and the folder (cache root) that holds them.

An entry looks like this (``huggingface_hub`` writes it; on Windows without symlink support the snapshot
holds plain copies instead of links)::

    models--org--name/
        refs/main                 # the commit hash `main` pointed to when downloaded
        blobs/<sha256>            # file contents
        snapshots/<commit>/...    # the repository's files, as links to ../../blobs/<sha256>

A snapshot is an ordinary model folder once found, so the readers never need to know about the cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InvalidCheckpointError, OutsideInputError
from ._files import shown
from ._guards import boundary_of, read_bounded

ENTRY_PREFIX = "models--"
# Other repository kinds share the cache root; they never hold models.
OTHER_ENTRY_PREFIXES = ("datasets--", "spaces--")


def is_cache_entry(path: Path) -> bool:
    """Whether ``path`` is a Hugging Face cache model entry: ``models--org--name`` with cache folders."""
    if not path.name.startswith(ENTRY_PREFIX) or not os.path.isdir(path):
        return False
    return any(os.path.isdir(path / part) for part in ("snapshots", "refs", "blobs"))


def repo_id(entry: Path) -> str:
    """``models--org--name`` -> ``org/name`` (``models--gpt2`` -> ``gpt2``)."""
    # The hub forbids `--` inside names, so every `--` after the prefix was a `/`.
    return entry.name[len(ENTRY_PREFIX) :].replace("--", "/")


def resolve_snapshot(entry: Path, revision: str = "main") -> Path:
    """The snapshot folder of a cache entry: the one ``refs/<revision>`` names, else the only one, else the
    most recently modified one.

    A ref is only ever a commit hash, the name of one of ``snapshots/``'s folders: a ref holding a path
    (``../../..``) is refused, not followed.

    Raises:
        InvalidCheckpointError: the entry has no snapshot (the download never got that far), or the ref
            names a commit whose snapshot is not there (the files of another commit are not read instead).
        OutsideInputError: the ref holds a path rather than a commit.
    """
    snapshots_dir = entry / "snapshots"
    snapshots = (
        sorted(child for child in snapshots_dir.iterdir() if os.path.isdir(child))
        if os.path.isdir(snapshots_dir)
        else []
    )
    if not snapshots:
        raise InvalidCheckpointError(
            f"{shown(entry)} has no snapshot: the download did not finish",
            hint=f"download it again, e.g. `hf download {repo_id(entry)}`",
            path=entry,
        )
    ref = entry / "refs" / revision
    if os.path.lexists(ref):
        commit = _read_ref(ref)
        if any(sep in commit for sep in ("/", "\\", "\0")) or commit in ("", ".", ".."):
            raise OutsideInputError(
                f"{shown(ref)} holds `{commit[:80]}`, not a commit hash",
                hint="a ref names one of the entry's `snapshots/` folders; download the model again",
                path=ref,
            )
        by_name = {snapshot.name: snapshot for snapshot in snapshots}
        if commit not in by_name:
            present = ", ".join(f"`{name}`" for name in sorted(by_name))
            raise InvalidCheckpointError(
                f"{shown(ref)} names commit `{commit}`, whose snapshot is not in the cache "
                f"(snapshots present: {present})",
                hint=f"download that revision (`hf download {repo_id(entry)}`), or pass the snapshot folder "
                "you mean to read",
                path=ref,
            )
        return by_name[commit]
    if len(snapshots) == 1:
        return snapshots[0]
    return max(snapshots, key=lambda snapshot: (snapshot.stat().st_mtime, snapshot.name))


def _read_ref(ref: Path) -> str:
    # A ref is 40 hex digits and a newline; anything much longer is not one.
    raw = read_bounded(ref, 4096, "a cache ref", boundary_of(ref.parent.parent))
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InvalidCheckpointError(f"{shown(ref)} is not a cache ref: it is not text", path=ref) from None
