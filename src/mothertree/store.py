"""The fingerprint store: one SQLite file holding a fingerprint per model content and where it was seen.

``mothertree index`` reads each model once and commits its fingerprint (``features.fingerprint``);
``recover --store``, ``add`` and ``query`` answer from the store without reading those weights again.

- Keyed by content: a fingerprint's ``content_id`` digests every tensor's values, so a model moved or
  copied elsewhere is one entry with several locations, and a changed file is a new entry.
- Each location keeps the size and modification time of its files, so a rerun skips models whose files
  are as they were without reading them (as ``git status`` does; ``--reread`` reads everything again).
- One transaction per model: a crash or Ctrl-C loses at most the model being read, and a rerun resumes.
- The store records its format version and the fingerprint parameters; a store of another version or
  made with other parameters is refused by name (``InvalidStoreError``), never read as empty.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import InvalidFeatureSetError, InvalidStoreError
from .features.fingerprint import DEFAULT_PARAMS, FORMAT_VERSION, Fingerprint, FingerprintParams, is_weight
from .io.types import TensorInfo

STORE_FORMAT = 2  # 2: screening vectors and layouts beside each fingerprint
STORE_SUFFIX = ".sqlite"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE fingerprints (
    content_id TEXT PRIMARY KEY,
    tensors TEXT NOT NULL,
    layout TEXT NOT NULL,
    vector BLOB NOT NULL,
    blob BLOB NOT NULL,
    added REAL NOT NULL
);
CREATE INDEX fingerprints_by_layout ON fingerprints (layout);
CREATE TABLE locations (
    path TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    content_id TEXT NOT NULL REFERENCES fingerprints (content_id),
    files TEXT NOT NULL,
    known_parent TEXT,
    indexed REAL NOT NULL
);
CREATE INDEX locations_by_content ON locations (content_id);
"""


def layout_key(tensors: Iterable[TensorInfo]) -> str:
    """A digest of a model's weight tensors' names and shapes, in order: models of one layout have
    screening vectors that compare coordinate by coordinate."""
    described = json.dumps([[t.name, list(t.shape)] for t in tensors if is_weight(t)])
    return hashlib.blake2b(described.encode(), digest_size=16).hexdigest()


def default_store_path() -> Path:
    """``$MOTHERTREE_STORE``, else ``fingerprints.sqlite`` in the user's cache folder (never beside the
    models: mothertree does not write into model folders)."""
    if os.environ.get("MOTHERTREE_STORE"):
        return Path(os.environ["MOTHERTREE_STORE"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "mothertree" / f"fingerprints{STORE_SUFFIX}"


@dataclass(frozen=True)
class Location:
    """Where a model was indexed from.

    Attributes:
        path: the model's folder or file, absolute.
        name: its id when it was indexed (``discover``'s, relative to the folder given to ``index``).
        content_id: the fingerprint it has.
        files: ``[[name, size, mtime_ns], ...]`` of its weights' folder (or file) when it was read: what a
            rerun compares to skip it.
        known_parent: for a PEFT adapter read on a base in the collection, the base's path.
    """

    path: str
    name: str
    content_id: str
    files: list[list[Any]]
    known_parent: str | None


class FingerprintStore:
    """A fingerprint store file (module docstring), opened or created.

    ``params``: the fingerprint parameters a new store is made with; for an existing store, None takes
    its own, and other parameters are refused.
    """

    def __init__(self, path: str | Path, *, params: FingerprintParams | None = None, create: bool = True):
        self.path = Path(path)
        if not self.path.exists() and not create:
            raise InvalidStoreError(
                f"`{self.path}` does not exist",
                hint="make it with `mothertree index MODELS --store FILE` first",
                path=self.path,
            )
        if self.path.exists() and not self.path.is_file():
            raise InvalidStoreError(f"`{self.path}` is not a file", path=self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)  # transactions are explicit
            # A write-ahead log: a commit is an append, not a rewrite; a crash (or Ctrl-C) keeps every
            # committed model. `NORMAL` syncs at checkpoints only: a power cut may lose the last commits,
            # never the store.
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self.params = self._open(params)
        except sqlite3.DatabaseError as exc:
            raise InvalidStoreError(
                f"`{self.path}` is not a mothertree store: {exc}", path=self.path
            ) from None

    def _open(self, params: FingerprintParams | None) -> FingerprintParams:
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            chosen = params or DEFAULT_PARAMS
            _check_version(chosen, self.path)
            with self._transaction():
                # One statement at a time: `executescript` would commit the open transaction first.
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    self._db.execute(statement)
                self._db.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("format", str(STORE_FORMAT)), ("params", json.dumps(chosen.to_json()))],
                )
            return chosen
        if not {"meta", "fingerprints", "locations"} <= tables:
            raise InvalidStoreError(
                f"`{self.path}` is an SQLite file but not a mothertree store (it has tables "
                f"{', '.join(sorted(tables))})",
                path=self.path,
            )
        meta = dict(self._db.execute("SELECT key, value FROM meta"))
        if meta.get("format") != str(STORE_FORMAT):
            raise InvalidStoreError(
                f"`{self.path}` is a store of format {meta.get('format')}; this mothertree reads format "
                f"{STORE_FORMAT}",
                path=self.path,
            )
        try:
            own = FingerprintParams(**json.loads(meta["params"]))
        except (KeyError, TypeError, ValueError):
            raise InvalidStoreError(
                f"`{self.path}` has no readable fingerprint parameters", path=self.path
            ) from None
        _check_version(own, self.path)
        if params is not None and params != own:
            raise InvalidStoreError(
                f"`{self.path}` holds fingerprints made with {own.to_json()}, not {params.to_json()}: "
                "fingerprints compare only when made alike",
                hint="leave the parameters out to use the store's own, or give another `--store` file",
                path=self.path,
            )
        return own

    # -- transactions ------------------------------------------------------------------------------

    class _Transaction:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> None:
            self.db.execute("BEGIN IMMEDIATE")

        def __exit__(
            self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
        ) -> None:
            # KeyboardInterrupt too: what this transaction wrote goes, what was committed before stays.
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _transaction(self) -> FingerprintStore._Transaction:
        return FingerprintStore._Transaction(self._db)

    # -- writing -----------------------------------------------------------------------------------

    def put(
        self,
        fingerprint: Fingerprint,
        *,
        path: str,
        name: str,
        files: list[list[Any]],
        known_parent: str | None,
    ) -> bool:
        """Commit a model's fingerprint (unless its content is here already) and its location, together.

        Returns whether the content was new.
        """
        if fingerprint.params != self.params:
            raise InvalidStoreError(
                f"a fingerprint made with {fingerprint.params.to_json()} does not belong in `{self.path}` "
                f"(made with {self.params.to_json()})",
                path=self.path,
            )
        tensors = json.dumps([[t.name, list(t.shape), t.dtype] for t in fingerprint.tensors])
        now = time.time()
        with self._transaction():
            new = not self.has(fingerprint.content_id)
            if new:
                self._db.execute(
                    "INSERT INTO fingerprints VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        fingerprint.content_id,
                        tensors,
                        layout_key(fingerprint.tensors),
                        fingerprint.screening_vector().astype("<f4").tobytes(),
                        fingerprint.to_bytes(),
                        now,
                    ),
                )
            self._db.execute(
                "INSERT OR REPLACE INTO locations VALUES (?, ?, ?, ?, ?, ?)",
                (path, name, fingerprint.content_id, json.dumps(files), known_parent, now),
            )
        return new

    # -- reading -----------------------------------------------------------------------------------

    def has(self, content_id: str) -> bool:
        return self._query_one("SELECT 1 FROM fingerprints WHERE content_id = ?", (content_id,)) is not None

    def location(self, path: str) -> Location | None:
        row = self._query_one("SELECT * FROM locations WHERE path = ?", (path,))
        return None if row is None else self._location(row)

    def locations(self) -> list[Location]:
        """Every location, in the order they were indexed (a model seen twice is named by its first)."""
        rows = self._query("SELECT * FROM locations ORDER BY indexed, path")
        return [self._location(row) for row in rows]

    def tensors(self, content_id: str) -> list[TensorInfo]:
        """A fingerprint's tensor list, without loading its arrays."""
        row = self._query_one("SELECT tensors FROM fingerprints WHERE content_id = ?", (content_id,))
        if row is None:
            raise KeyError(content_id)
        try:
            return [TensorInfo(str(n), tuple(int(d) for d in s), str(t)) for n, s, t in json.loads(row[0])]
        except (ValueError, TypeError) as exc:
            raise self._damaged(content_id, exc) from None

    def screening_vectors(self, layout: str) -> dict[str, npt.NDArray[np.float32]]:
        """Content id -> screening vector (``Fingerprint.screening_vector``) of every fingerprint of one
        ``layout`` (``layout_key``), in one query."""
        rows = self._query("SELECT content_id, vector FROM fingerprints WHERE layout = ?", (layout,))
        return {str(content_id): np.frombuffer(vector, dtype="<f4") for content_id, vector in rows}

    def fingerprint(self, content_id: str) -> Fingerprint:
        row = self._query_one("SELECT blob FROM fingerprints WHERE content_id = ?", (content_id,))
        if row is None:
            raise KeyError(content_id)
        try:
            return Fingerprint.from_bytes(bytes(row[0]))
        except InvalidFeatureSetError as exc:
            raise self._damaged(content_id, exc) from None

    def __len__(self) -> int:
        row = self._query_one("SELECT COUNT(*) FROM fingerprints", ())
        return int(row[0]) if row else 0

    def size_bytes(self) -> int:
        row = self._query_one("SELECT COALESCE(SUM(LENGTH(blob)), 0) FROM fingerprints", ())
        return int(row[0]) if row else 0

    def _damaged(self, content_id: str, exc: Exception) -> InvalidStoreError:
        return InvalidStoreError(
            f"`{self.path}` is damaged: the fingerprint {content_id[:12]} cannot be read ({exc})",
            path=self.path,
        )

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        try:
            yield from self._db.execute(sql, args)
        except sqlite3.DatabaseError as exc:
            raise InvalidStoreError(f"`{self.path}` is damaged: {exc}", path=self.path) from None

    def _query_one(self, sql: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        return next(self._query(sql, args), None)

    def _location(self, row: tuple[Any, ...]) -> Location:
        path, name, content_id, files, known_parent, _ = row
        try:
            parsed = json.loads(files)
        except ValueError as exc:
            raise InvalidStoreError(
                f"`{self.path}` is damaged: location `{path}`: {exc}", path=self.path
            ) from None
        return Location(str(path), str(name), str(content_id), parsed, known_parent)

    # -- lifetime ----------------------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> FingerprintStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _check_version(params: FingerprintParams, path: Path) -> None:
    """Refuse fingerprints of another version than this mothertree makes: they would not compare."""
    if params.version != FORMAT_VERSION:
        raise InvalidStoreError(
            f"`{path}` holds fingerprints of version {params.version}; this mothertree makes version "
            f"{FORMAT_VERSION}, whose moments differ in their last bits (and copies are told apart by exact "
            "moments)",
            hint="index the models into a new store (another `--store` file); the old one still serves "
            "the mothertree version that made it",
            path=path,
        )
