"""Which tensors are compared, and which models can be compared at all.

Two models are comparable when they share most of their weight matrices by name and shape: fine-tunes
with a new classification head still share everything else, while another architecture shares almost
nothing. Models are grouped by that relation; within a group the compared tensors are those every member
has with one shape.

Default selection (the paper compares the square attention matrices of ViT-B, a transformer habit):

* the square 2-D float matrices, when a group has at least ``MIN_SQUARE_MATRICES`` of them (q/k/v/o
  projections of a transformer);
* otherwise every float tensor with two or more dimensions (a CNN such as MobileNetV2 has no square
  matrix at all; an MLP has few), which leaves out biases, norms and BatchNorm statistics.

``layers`` (a regular expression, searched in the tensor name) replaces the default: every shared float
tensor of two or more dimensions whose name matches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from ..errors import InvalidParameterError, NoComparableTensorsError
from ..io.types import TensorInfo

MIN_SQUARE_MATRICES = 4
# Share of weight matrices (by name and shape) two models must have in common to be compared.
MIN_SHARED_FRACTION = 0.5


def weight_signature(tensors: Mapping[str, TensorInfo]) -> frozenset[tuple[str, tuple[int, ...]]]:
    """The (name, shape) pairs of a model's float tensors with two or more dimensions."""
    return frozenset((t.name, t.shape) for t in tensors.values() if t.is_float and len(t.shape) >= 2)


def group_by_architecture(signatures: Sequence[frozenset[tuple[str, tuple[int, ...]]]]) -> list[list[int]]:
    """Indices of models grouped so that models sharing most of their weight matrices land together.

    Two models are linked when the tensors they share make up at least ``MIN_SHARED_FRACTION`` of the
    smaller model's; groups are the connected components of that relation, ordered by first member.
    """
    n_models = len(signatures)
    parent = list(range(n_models))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Identical signatures are by far the common case; compare each distinct one only once.
    distinct: dict[frozenset[tuple[str, tuple[int, ...]]], int] = {}
    for i, signature in enumerate(signatures):
        if signature in distinct:
            parent[find(i)] = find(distinct[signature])
        else:
            distinct[signature] = i
    representatives = list(distinct.items())
    for a, (sig_a, i) in enumerate(representatives):
        for sig_b, j in representatives[a + 1 :]:
            smaller = min(len(sig_a), len(sig_b))
            if smaller and len(sig_a & sig_b) >= MIN_SHARED_FRACTION * smaller:
                parent[find(j)] = find(i)

    groups: dict[int, list[int]] = {}
    for i in range(n_models):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda members: members[0])


def select_tensors(
    tensors_per_model: Sequence[Mapping[str, TensorInfo]], layers: str | None = None
) -> list[TensorInfo]:
    """The tensors compared across these models, in the first model's storage order.

    Raises ``NoComparableTensorsError`` when nothing qualifies.
    """
    first = tensors_per_model[0]
    shared = [
        info
        for name, info in first.items()
        if info.is_float
        and len(info.shape) >= 2
        and all(
            name in other and other[name].shape == info.shape and other[name].is_float
            for other in tensors_per_model[1:]
        )
    ]
    if layers is not None:
        try:
            pattern = re.compile(layers)
        except re.error as exc:
            raise InvalidParameterError(
                f"`--layers {layers}` is not a valid regular expression: {exc}",
                hint="the pattern is searched in tensor names, e.g. `attention\\.self\\.(query|key|value)`",
            ) from exc
        selected = [info for info in shared if pattern.search(info.name)]
        if not selected:
            raise NoComparableTensorsError(
                f"no shared weight tensor matches `--layers {layers}`",
                hint=f"shared tensors look like `{shared[0].name}`" if shared else None,
            )
        return selected

    square = [info for info in shared if len(info.shape) == 2 and info.shape[0] == info.shape[1]]
    selected = square if len(square) >= MIN_SQUARE_MATRICES else shared
    if not selected:
        raise NoComparableTensorsError("the models share no weight tensor of the same name and shape")
    return selected
