"""The one place that draws progress bars: on stderr, only on a terminal, never with ``--quiet``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Turn every progress bar off (the CLI's ``--quiet``)."""
    global _quiet
    _quiet = quiet


def progress_enabled() -> bool:
    if _quiet or os.environ.get("MOTHERTREE_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar when progress is enabled."""
    if not progress_enabled():
        yield from iterable
        return
    yield from tqdm(
        iterable, desc=desc, total=total, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True
    )
