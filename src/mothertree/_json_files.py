"""Reading the JSON files users hand to mothertree (results, truth files): one reader, one set of errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import CheckpointNotFoundError, InvalidTruthError


def read_json_file(path: Path, *, missing_hint: str) -> Any:
    """The JSON value in ``path``.

    Raises:
        CheckpointNotFoundError: there is no file at ``path`` (with ``missing_hint``).
        InvalidTruthError: it is not JSON (bad UTF-8, a 5000-digit integer, a deep nest) or cannot be read.
    """
    if not path.is_file():
        raise CheckpointNotFoundError(f"`{path}` does not exist", path=path, hint=missing_hint)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:
        raise InvalidTruthError(f"`{path}` is not valid JSON: {exc}", path=path) from None
    except OSError as exc:
        raise InvalidTruthError(f"`{path}` cannot be read: {exc.strerror}", path=path) from None
