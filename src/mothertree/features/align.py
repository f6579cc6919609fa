"""Aligning tensor names that differ by a wrapper prefix, so fine-tunes saved by different classes compare.

``BertForSequenceClassification.save_pretrained`` writes ``bert.encoder.layer.0...``; ``BertModel``
writes ``encoder.layer.0...`` for the same weights. A model whose weight matrices nearly all sit under
one first name component (``bert.``, ``model.``, ``transformer.``) has that component stripped when the
stripped names match another model of the collection better than its own names do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from ..io.types import Checkpoint, TensorInfo

# Share of a model's weight matrices that must sit under one first component for it to be a wrapper.
DOMINANT_SHARE = 0.9


def _matrix_names(tensors: Mapping[str, TensorInfo]) -> set[str]:
    return {name for name, info in tensors.items() if info.is_float and len(info.shape) >= 2}


def dominant_prefix(names: set[str]) -> str | None:
    """The first name component (with its dot) that at least ``DOMINANT_SHARE`` of ``names`` start with."""
    firsts = Counter(name.split(".", 1)[0] + "." for name in names if "." in name)
    if not firsts:
        return None
    prefix, count = firsts.most_common(1)[0]
    return prefix if count >= DOMINANT_SHARE * len(names) else None


def _prefix_to_strip(own: frozenset[str], others: Sequence[frozenset[str]]) -> str:
    prefix = dominant_prefix(set(own))
    if prefix is None:
        return ""
    bare = {name.removeprefix(prefix) for name in own}
    return prefix if any(len(bare & other) > len(own & other) for other in others) else ""


def prefixes_to_strip(tensors_per_model: Sequence[Mapping[str, TensorInfo]]) -> list[str]:
    """For each model, the prefix to strip from its names ("" for none).

    Stripped when, against some other model of the collection, the stripped names share more weight
    matrices than the names as stored do.
    """
    names = [frozenset(_matrix_names(tensors)) for tensors in tensors_per_model]
    # Collections hold many models of one layout: each distinct set of names is judged once.
    counts = Counter(names)
    verdicts: dict[frozenset[str], str] = {}
    strip = []
    for own in names:
        if own not in verdicts:
            verdicts[own] = _prefix_to_strip(
                own, [other for other in counts if other != own or counts[own] > 1]
            )
        strip.append(verdicts[own])
    return strip


def stripped_names(tensors: Mapping[str, TensorInfo], prefix: str) -> dict[str, str]:
    """Each tensor's name with ``prefix`` stripped -> its name as stored; a tensor without the prefix keeps
    its name unless a stripped one took it. In storage order, stripped names first."""
    if not prefix:
        return {name: name for name in tensors}
    stored = {name.removeprefix(prefix): name for name in tensors if name.startswith(prefix)}
    for name in tensors:
        if not name.startswith(prefix) and name not in stored:
            stored[name] = name
    return stored


class StrippedCheckpoint(Checkpoint):
    """A view of ``inner`` whose tensors starting with ``prefix`` are named without it."""

    def __init__(self, inner: Checkpoint, prefix: str) -> None:
        self.inner, self.prefix, self.path, self.format = inner, prefix, inner.path, inner.format
        self._stored = stripped_names(inner.tensors, prefix)
        self._tensors = {
            short: replace(inner.tensors[stored], name=short) for short, stored in self._stored.items()
        }

    @property
    def tensors(self) -> Mapping[str, TensorInfo]:
        return self._tensors

    def read(self, name: str) -> np.ndarray:
        return self.inner.read(self._stored[name])

    def read_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        return self.inner.read_rows(self._stored[name], rows)

    def close(self) -> None:
        self.inner.close()


def align_names(checkpoints: Sequence[Checkpoint]) -> list[Checkpoint]:
    """``checkpoints``, each wrapped in a ``StrippedCheckpoint`` where ``prefixes_to_strip`` says so."""
    prefixes = prefixes_to_strip([c.tensors for c in checkpoints])
    return [StrippedCheckpoint(c, p) if p else c for c, p in zip(checkpoints, prefixes, strict=True)]
