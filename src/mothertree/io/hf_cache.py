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

from pathlib import Path

from ..errors import InvalidCheckpointError
from ._files import shown

ENTRY_PREFIX = "models--"
# Other repository kinds share the cache root; they never hold models.
OTHER_ENTRY_PREFIXES = ("datasets--", "spaces--")


def is_cache_entry(path: Path) -> bool:
    """Whether ``path`` is a Hugging Face cache model entry: ``models--org--name`` with cache folders."""
    if not path.name.startswith(ENTRY_PREFIX) or not path.is_dir():
        return False
    return any((path / part).is_dir() for part in ("snapshots", "refs", "blobs"))


def repo_id(entry: Path) -> str:
    """``models--org--name`` -> ``org/name`` (``models--gpt2`` -> ``gpt2``)."""
    # The hub forbids `--` inside names, so every `--` after the prefix was a `/`.
    return entry.name[len(ENTRY_PREFIX) :].replace("--", "/")


def resolve_snapshot(entry: Path, revision: str = "main") -> Path:
    """The snapshot folder of a cache entry: the one ``refs/<revision>`` names, else the only one, else the
    most recently modified one.

    Raises:
        InvalidCheckpointError: the entry has no snapshot (the download never got that far).
    """
    snapshots_dir = entry / "snapshots"
    snapshots = (
        sorted(child for child in snapshots_dir.iterdir() if child.is_dir()) if snapshots_dir.is_dir() else []
    )
    if not snapshots:
        raise InvalidCheckpointError(
            f"{shown(entry)} has no snapshot: the download did not finish",
            hint=f"download it again, e.g. `hf download {repo_id(entry)}`",
            path=entry,
        )
    ref = entry / "refs" / revision
    if ref.is_file():
        try:
            commit = ref.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            commit = ""
        # A ref may point at a commit whose files were never fetched (e.g. `main` moved on since).
        if commit and (snapshots_dir / commit).is_dir():
            return snapshots_dir / commit
    if len(snapshots) == 1:
        return snapshots[0]
    return max(snapshots, key=lambda snapshot: (snapshot.stat().st_mtime, snapshot.name))
