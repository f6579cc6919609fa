"""Copies: models whose weights are another's, or another's rounded by a re-save in a coarser dtype.

Two copies of one model are one node with aliases, not a parent and a child: left in, a byte-identical copy
became the child of its twin at distance 0, and the tie pulled the confidence of every edge from that root
down to about 0.5. A copy is

- *identical*: the same tensor names and shapes, every tensor equal; or
- *a re-save*: the same, except that tensors stored in float32 in one are stored in float16 or bfloat16 in
  the other, and equal the float32 ones rounded to that dtype (``reductions.rounded``: what ``.to(dtype)``
  and a save do);
- *an export* in float: an ONNX or GGUF file whose every tensor is the other model's, so rounded (the
  export may leave out tensors its graph does not use). An export to an integer grid is no copy but a
  ``quantized`` child (``features.quantized``).

Candidates come from the features, for free: every compared tensor's RMS distance is 0 (both stored alike)
or at most the rounding error of the coarser copy. Each candidate is then confirmed on every tensor of both
checkpoints, read one tensor at a time, since the compared tensors are a selection: a fine-tune that
trained only its head is identical on them, and is no copy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from ..errors import MotherTreeError
from ..io.types import EXPORT_FORMATS, Checkpoint
from .featureset import FeatureSet
from .reductions import PRECISIONS, precision_of, rounded

# Unit roundoff (half an ulp, relative) of each precision, and a margin: a candidate only costs a read.
_UNIT_ROUNDOFF = {"F32": 0.0, "F16": 2.0**-11, "BF16": 2.0**-8}
_MARGIN = 2.0
# A distance this small relative to the weights' RMS is arithmetic noise: the pair is equal there. Over a
# common support the distance is a difference of float64 sums, exact to about sqrt(eps64) = 1.5e-8 of the
# weights' scale (measured: 7e-11); a fine-tune moves weights by 1e-5 or more.
EQUAL_RELATIVE = 3e-8
# fp16 flushes weights below its smallest normal (6e-5) to a coarser grid: an absolute error of up to this.
_FP16_ABSOLUTE = 2.0**-25


def equal_bound(features: FeatureSet) -> npt.NDArray[np.float64]:
    """``(tensors, 1, 1)``: the RMS distance at or below which a pair is equal on a tensor, the rounding
    of the distance's own arithmetic (over a common support a difference of sums, not exactly 0 for
    identical tensors), far below any fine-tune's move (``EQUAL_RELATIVE`` of the weights' RMS)."""
    scale = np.sqrt(np.maximum(features.moments[..., 1] + features.moments[..., 0] ** 2, 0.0))
    return np.asarray(EQUAL_RELATIVE * scale.max(axis=1)[:, None, None], dtype=np.float64)


def candidate_pairs(features: FeatureSet) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, whose every compared tensor is as near as a copy's would be."""
    rms = features.rms_distances
    scale = np.sqrt(np.maximum(features.moments[..., 1] + features.moments[..., 0] ** 2, 0.0))  # (t, n)
    exact = equal_bound(features)
    if features.precisions is None:  # every tensor stored alike in every model: only identical copies
        near = np.all(np.nan_to_num(rms, nan=np.inf) <= exact, axis=0)
        return [(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(near, k=1)), strict=True)]
    p = features.precisions
    roundoff = np.array([_UNIT_ROUNDOFF[name] for name in PRECISIONS])[p]  # (t, n)
    absolute = np.where(np.array(PRECISIONS)[p] == "F16", _FP16_ABSOLUTE, 0.0)
    # A loose bound per tensor first, on (t, n, n) booleans only; the pair's own bound on what passes.
    loose = _MARGIN * (roundoff.max(axis=1) * scale.max(axis=1) + absolute.max(axis=1))
    near = np.all(rms <= loose[:, None, None], axis=0)
    pairs = []
    for i, j in zip(*np.nonzero(np.triu(near, k=1)), strict=True):
        pi, pj = p[:, i], p[:, j]
        bound = np.where(
            pi == pj,
            exact[:, 0, 0],
            np.where(
                pi == 0,
                _MARGIN * (roundoff[:, j] * scale[:, i] + absolute[:, j]),
                np.where(pj == 0, _MARGIN * (roundoff[:, i] * scale[:, j] + absolute[:, i]), -1.0),
            ),
        )
        if np.all(rms[:, i, j] <= bound):
            pairs.append((int(i), int(j)))
    return pairs


def is_copy(a: Checkpoint, b: Checkpoint) -> bool:
    """Whether ``a`` and ``b`` hold the same tensors, equal up to the rounding of a coarser re-save.

    A model exported for inference (ONNX, GGUF: ``EXPORT_FORMATS``) may lack tensors its source holds (a
    pooler or head its graph does not use), so it is a copy when every tensor it holds is the other's.
    """
    shared = shared_tensors(a, b)
    if shared is None:
        return False
    for name in shared:
        x, y = a.read(name), b.read(name)
        px, py = precision_of(a.tensors[name].dtype), precision_of(b.tensors[name].dtype)
        if px != py:
            if px != 0 and py != 0:
                return False  # fp16 and bf16: neither is the other rounded
            coarse = max(px, py)
            x, y = (rounded(x, coarse), y) if px == 0 else (x, rounded(y, coarse))
        if not np.array_equal(x, y):
            return False
    return True


def shared_tensors(a: Checkpoint, b: Checkpoint) -> list[str] | None:
    """The tensors to compare to tell whether ``a`` and ``b`` are one model stored twice, or None when
    their lists alone show they are not: other names, other shapes, or tensors missing from a model that is
    not an export."""
    names_a, names_b = set(a.tensors), set(b.tensors)
    if names_a != names_b:
        # An export keeps its source's parameters, maybe not all; its own graph constants do not count.
        fewer, more = (a, names_b) if len(names_a) < len(names_b) else (b, names_a)
        kept = {name for name, info in fewer.tensors.items() if info.is_float and info.numel >= 2}
        if fewer.format not in EXPORT_FORMATS or not kept <= more:
            return None
        names_a, names_b = kept & names_a, kept & names_b
    shared = [name for name in a.tensors if name in names_a and name in names_b]
    if not any(a.tensors[name].is_float and len(a.tensors[name].shape) >= 2 for name in shared):
        return None
    if any(a.tensors[name].shape != b.tensors[name].shape for name in shared):
        return None
    return shared


def copy_groups(features: FeatureSet, confirm: Callable[[int, int], bool]) -> list[list[int]]:
    """Groups of two or more models that are copies of each other (indices into ``features``, each group
    sorted, the original first: the model stored at the finest precision, then the first id).

    ``confirm(i, j)`` says whether candidates ``i`` and ``j`` really are copies: ``confirmed_by_reading``
    reads their checkpoints, ``fingerprint.is_copy`` compares their digests.
    """
    parent = list(range(features.n_models))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in candidate_pairs(features):
        if find(i) != find(j) and confirm(i, j):
            parent[find(j)] = find(i)
    members: dict[int, list[int]] = {}
    for i in range(features.n_models):
        members.setdefault(find(i), []).append(i)
    coarseness = _coarseness(features)
    return [
        sorted(group, key=lambda i: (coarseness[i], features.model_ids[i]))
        for group in members.values()
        if len(group) > 1
    ]


def confirmed_by_reading(a: Checkpoint, b: Checkpoint) -> bool:
    """``is_copy``, where a tensor that cannot be read is no proof of a copy."""
    try:
        return is_copy(a, b)
    except MotherTreeError:  # a tensor outside the comparison that cannot be read: no proof of a copy
        return False


def _coarseness(features: FeatureSet) -> npt.NDArray[np.int64]:
    if features.precisions is None:
        return np.zeros(features.n_models, dtype=np.int64)
    return np.asarray((features.precisions != 0).sum(axis=0), dtype=np.int64)
