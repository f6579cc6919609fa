"""The vocabulary of recovery's parameters and outputs: their names and defaults, and nothing heavy.

Kept apart so that the command line can describe itself (``mothertree --help``) without importing numpy,
scipy or the readers; ``tree`` and ``render`` take their names and defaults from here.
"""

from __future__ import annotations

from typing import Literal

Distance = Literal["l2", "rank", "auto"]
DISTANCES: tuple[Distance, ...] = ("l2", "rank", "auto")
Direction = Literal["auto", "norm", "falls", "rises"]
DIRECTIONS: tuple[Direction, ...] = ("auto", "norm", "falls", "rises")
TreeCount = int | Literal["auto"] | None

# The paper's weight of the kurtosis penalty, in units of the tree's mean distance.
DEFAULT_LAM = 0.3
# Relative distance above which two models are unrelated (``split_unrelated``): independent weights of one
# scale sit at sqrt(2) ~ 1.41, the fine-tunes measured so far moved 0.006-0.17 (docs/RESULTS.md).
UNRELATED_ABOVE = 0.5

# The relations found besides fine-tuning, in Hugging Face's words (an adapter is known from its files).
RELATIONS = ("duplicate", "quantized", "pruned", "merge")

# `render.RENDERERS` (text) and `render.BINARY_RENDERERS` (bytes) draw these.
TEXT_FORMATS = ("text", "json", "html", "dot", "svg", "graphml", "newick")
BINARY_FORMATS = ("png",)
