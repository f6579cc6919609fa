"""Pruned copies: a model that is another model with some of its weights set to zero, and nothing else.

Magnitude pruning (``torch.nn.utils.prune``, a sparsity tool) zeroes weights and leaves the rest as they
were, so over the pruned copy's nonzero weights it equals its source exactly: its RMS distance over the
pair's common support (``FeatureSet.rms_distances`` on ``masked_tensors``) is 0 on every compared tensor, up
to the rounding of that distance's arithmetic (``duplicates.EQUAL_RELATIVE``).
Those pairs are the candidates, free; each is confirmed by reading both models one tensor at a time:

- every float tensor of the copy is one of the source's, of its shape;
- wherever the copy is nonzero it equals the source, bit for bit;
- somewhere the copy is zero where the source is not (else it would be a copy, ``duplicates``).

Of several sources that pass (a copy of a copy pruned further is a pruned copy of both), the one nearest
in sparsity is its parent: the one with the fewest weights the copy zeroed beyond it. Hugging Face calls the
child ``pruned``; like a quantised copy it is a leaf, found before the tree step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import MotherTreeError
from ..io.types import Checkpoint
from .duplicates import equal_bound
from .featureset import FeatureSet
from .fingerprint import Fingerprint
from .quantized import compared_in_prints, is_parameter_like


def pruned_sources(features: FeatureSet, zeroed_by: Callable[[int, int], int | None]) -> dict[int, int]:
    """Pruned copy -> its source (indices into ``features``); ``zeroed_by(child, source)`` confirms a
    candidate pair: ``newly_zeroed`` of their checkpoints, or ``newly_zeroed_in_prints`` of their
    fingerprints."""
    if not features.metadata.get("masked_tensors") or features.n_models < 2:
        return {}
    equal_on_support = np.all(
        np.nan_to_num(features.rms_distances, nan=np.inf) <= equal_bound(features), axis=0
    )
    sources: dict[int, int] = {}
    for child in range(features.n_models):
        found = []
        for source in np.flatnonzero(equal_on_support[child]):
            if source == child:
                continue
            try:
                zeroed = zeroed_by(int(child), int(source))
            except MotherTreeError:  # a tensor that cannot be read is no proof
                zeroed = None
            if zeroed:
                found.append((zeroed, int(source)))
        if found:
            sources[child] = min(found)[1]
    # A source that is itself a pruned copy keeps its own source; a child is never its source's source.
    return {child: source for child, source in sources.items() if sources.get(source) != child}


def newly_zeroed(child: Checkpoint, source: Checkpoint) -> int | None:
    """How many weights ``child`` zeroed that ``source`` has, if ``child`` is ``source`` pruned; else None."""
    compared = [name for name, info in child.tensors.items() if is_parameter_like(info)]
    for name in compared:
        other = source.tensors.get(name)
        if other is None or other.shape != child.tensors[name].shape:
            return None
    zeroed = 0
    for name in compared:
        ours, theirs = child.read(name), source.read(name)
        kept = ours != 0
        if not np.array_equal(ours[kept], theirs[kept]):
            return None
        zeroed += int(np.count_nonzero(~kept & (theirs != 0)))
    return zeroed or None


def newly_zeroed_in_prints(child: Fingerprint, source: Fingerprint) -> int | None:
    """``newly_zeroed`` on two fingerprints: the weights over their samples, the other tensors by digest."""
    compared = compared_in_prints(child, source)
    if compared is None:
        return None
    zeroed = 0
    for info, slots in compared:
        if slots is not None:
            ours, theirs = child.samples[slots[0]], source.samples[slots[1]]
            kept = ours != 0
            if not np.array_equal(ours[kept], theirs[kept]):
                return None
            zeroed += int(np.count_nonzero(~kept & (theirs != 0)))
        elif child.digests[info.name][0] != source.digests[info.name][0]:
            return None
    return zeroed or None
