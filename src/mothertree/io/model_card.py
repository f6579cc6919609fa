"""What a model card says about lineage: ``base_model`` in the YAML front matter of ``README.md``.

A declared base is optional truth (cards are hand-written and often wrong), so reading it never fails: a
missing, unreadable or malformed card declares nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..errors import MotherTreeError
from ._files import README
from ._guards import open_regular

# Cards are small; a huge README is not worth reading in full just for its first lines.
_MAX_CARD_BYTES = 1 << 20


def read_declared_base_models(folder: Path, boundary: Path | None = None) -> tuple[str, ...]:
    """The ``base_model`` entries of ``folder/README.md``'s front matter, in card order, without duplicates.

    ``base_model`` may be one name or a list of names (a merge has several). Returns an empty tuple when
    there is no card, no front matter, no ``base_model``, or anything cannot be parsed; a card that is not a
    regular file inside ``boundary`` (default: ``folder``) is not read at all.
    """
    front_matter = _front_matter(Path(folder) / README, boundary)
    if front_matter is None:
        return ()
    try:
        data = yaml.safe_load(front_matter)
    except (yaml.YAMLError, ValueError, RecursionError):
        return ()
    if not isinstance(data, dict):
        return ()
    declared = data.get("base_model")
    names = [declared] if isinstance(declared, str) else declared if isinstance(declared, list) else []
    cleaned = (name.strip() for name in names if isinstance(name, str))
    return tuple(dict.fromkeys(name for name in cleaned if name))


def _front_matter(card: Path, boundary: Path | None) -> str | None:
    """The text between a leading ``---`` line and the next ``---`` line, or None."""
    if not os.path.lexists(card):
        return None
    try:
        with open_regular(card, boundary) as file:
            raw = file.read(_MAX_CARD_BYTES)
    except (MotherTreeError, OSError):
        return None
    text = raw.decode("utf-8-sig", errors="replace")
    lines = text.splitlines()
    start = 0
    while start < len(lines) and not lines[start].strip():
        start += 1
    if start == len(lines) or lines[start].strip() != "---":
        return None
    for end in range(start + 1, len(lines)):
        if lines[end].strip() == "---":
            return "\n".join(lines[start + 1 : end])
    return None
