"""Quantised copies: a model whose weights are another model's rounded to an integer grid.

bitsandbytes int8, an onnxruntime int8 export, a GGUF file in Q8_0 or Q4_0: each stores a model's weight
matrices as integers and scales, and what it holds beyond them (LayerNorm weights, biases: the tensors the
quantiser leaves alone) as the source holds them, at most rounded to a coarser float. Hugging Face calls
such a child ``quantized``; it is a leaf (Model Atlas: 99.41 % of quantised models on the hub are), and
left to the tree step it is a model like any other, close to its source and to the source's parent, with
the cues moved by rounding alone.

``quantized_sources(checkpoints)`` finds, for each quantised model, the model it rounds, before any
feature is extracted (so that the tree step and its tensor selection are what they would be without the
copies). ``child`` is ``source`` quantised when, read one tensor at a time:

- every float tensor of ``child`` is one of ``source``'s (an export may leave some out), with its shape;
- every float tensor it does not quantise equals ``source``'s, rounded to the child's dtype: a fine-tune,
  however close, moves them (a LoRA of some matrices leaves them alone, and is told apart by distance:
  the nearest candidate that passes is the source);
- every weight of a quantised tensor is within a step of its format's grid (``BITS``; the step is bounded
  by the tensor's absolute maximum, so no grid needs to be known). A loose bound: weights with outliers
  have coarse grids (MiniLM's ``output.dense``: 0.4 relative RMS error in onnxruntime's per-tensor int8).

"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import MotherTreeError
from ..io.types import INT8_ROWWISE, LINEAR_INT8, QUANTIZED_DTYPES, Checkpoint, TensorInfo
from .fingerprint import Fingerprint
from .reductions import precision_of, rounded

# Bits per weight of each quantised dtype: a weight rounds to a grid whose step is at most the tensor's
# absolute maximum over ``2 ** (bits - 1) - 1`` (symmetric; an asymmetric grid spans the range, at most
# twice the absolute maximum, in ``2 ** bits - 1`` steps), whatever the grid's granularity (tensor, row,
# block of 32). Grids finer than the tensor's have smaller steps, so the bound holds for every scheme.
BITS = {
    INT8_ROWWISE: 8,
    LINEAR_INT8: 8,
    "NF4": 4,
    "FP4": 4,
    "Q8_0": 8,
    "Q6_K": 6,
    "Q5_0": 5,
    "Q5_1": 5,
    "Q5_K": 5,
    "Q4_0": 4,
    "Q4_1": 4,
    "Q4_K": 4,
    "Q3_K": 3,
    "Q2_K": 2,
    "TQ1_0": 2,
    "TQ2_0": 2,
}
assert set(BITS) == QUANTIZED_DTYPES
# Room above one step: onnxruntime's `reduce_range` drops a bit, K-quants round their block scales too.
_STEP_MARGIN = 1.5


def is_quantized_model(checkpoint: Checkpoint) -> bool:
    """Whether a model stores any weight matrix quantised (its headers only)."""
    return quantizes_a_matrix(checkpoint.tensors.values())


def quantizes_a_matrix(tensors: Iterable[TensorInfo]) -> bool:
    """Whether any of a model's tensors (a checkpoint's or a fingerprint's list) is a quantised matrix."""
    return any(info.is_quantized and len(info.shape) >= 2 for info in tensors)


@dataclass(frozen=True)
class Rounding:
    """``child`` is ``source`` quantised (indices into the checkpoints searched).

    Attributes:
        error: the largest relative RMS error of a quantised tensor: what the rounding cost.
        distance: the RMS distance of the two over the quantised tensors, averaged with weights
            ``sqrt(numel)`` as ``FeatureSet.distances`` averages.
    """

    child: int
    source: int
    error: float
    distance: float


def quantized_sources(checkpoints: Sequence[Checkpoint]) -> dict[int, Rounding]:
    """Each quantised model whose source is among ``checkpoints`` -> that rounding, read tensor by tensor.

    The tensors the quantiser left alone are compared first, for every model that is not quantised (they
    are small: LayerNorm weights, biases), then the quantised ones of the models that passed; of several
    that pass (LoRA fine-tunes leave those tensors alone too), the nearest is the source. A quantised model
    none explains is left to the tree step.
    """

    def rounding(child: Checkpoint, source: Checkpoint) -> tuple[float, float] | None:
        return rounding_of(child, source) if keeps_unquantized(child, source) else None

    marked = [is_quantized_model(checkpoint) for checkpoint in checkpoints]
    return _nearest_roundings(marked, lambda c, s: rounding(checkpoints[c], checkpoints[s]))


def quantized_sources_of_prints(prints: Sequence[Fingerprint]) -> dict[int, Rounding]:
    """``quantized_sources`` from fingerprints (the store's path): the same tests on what a fingerprint
    keeps of each tensor. The tensors left alone are compared by their digests (small ones) or samples
    (weights), the quantised ones on their samples, each step bounded by the source tensor's absolute
    maximum (``Fingerprint.maxima``; a fingerprint of blob version 1 has none, and its samples' maximum,
    smaller, makes the test stricter)."""
    marked = [quantizes_a_matrix(p.tensors) for p in prints]
    return _nearest_roundings(marked, lambda c, s: print_rounding(prints[c], prints[s]))


def _nearest_roundings(
    marked: Sequence[bool], rounding: Callable[[int, int], tuple[float, float] | None]
) -> dict[int, Rounding]:
    """Each marked model -> the nearest unmarked one that ``rounding`` says it rounds."""
    plain = [i for i, quantized in enumerate(marked) if not quantized]
    sources: dict[int, Rounding] = {}
    for child in (i for i, quantized in enumerate(marked) if quantized):
        found = []
        for source in plain:
            try:
                measured = rounding(child, source)
            except MotherTreeError:  # a tensor that cannot be read is no proof of a rounding
                continue
            if measured is not None:
                found.append(Rounding(child, source, *measured))
        if found:
            sources[child] = min(found, key=lambda r: (r.distance, r.source))
    return sources


def is_parameter_like(info: TensorInfo) -> bool:
    """A float tensor of two or more values: what an export keeps of its source's parameters (an ONNX
    graph holds integer shape constants and float scalars of its own as well)."""
    return info.is_float and info.numel >= 2


def keeps_unquantized(child: Checkpoint, source: Checkpoint) -> bool:
    """Whether every tensor of ``child`` is one of ``source``'s, of its shape, and every float tensor it
    does not quantise is ``source``'s, rounded to the child's dtype."""
    compared = [name for name, info in child.tensors.items() if is_parameter_like(info)]
    for name in compared:
        other = source.tensors.get(name)
        if other is None or other.shape != child.tensors[name].shape:
            return False
    for name in compared:
        info = child.tensors[name]
        if info.is_quantized:
            continue
        precision = precision_of(info.dtype)
        if not _may_hold_rounded(precision, precision_of(source.tensors[name].dtype)):
            return False
        if not np.array_equal(rounded(source.read(name), precision), child.read(name)):
            return False
    return True


def _may_hold_rounded(precision: int, source_precision: int) -> bool:
    """Whether a tensor stored at ``precision`` can hold a ``source_precision`` tensor's values rounded:
    not from the other half precision (fp16 against bf16); a float32 tensor holds a half-precision
    source's values as they are (GGUF of a bf16 model)."""
    return precision == 0 or source_precision in (0, precision)


def rounding_of(child: Checkpoint, source: Checkpoint) -> tuple[float, float] | None:
    """(largest relative RMS error, distance) when every quantised tensor of ``child`` is within a step of
    its grid of ``source``'s (``within_one_step``); None otherwise, or when ``child`` quantises nothing."""
    errors = []
    for name, info in child.tensors.items():
        if not info.is_quantized:
            continue
        theirs, ours = source.read(name), child.read(name)
        if not within_one_step(ours, theirs, info.dtype):
            return None
        errors.append(_tensor_error(ours, theirs, info.numel))
    return _rounding_summary(errors)


def compared_in_prints(
    child: Fingerprint, source: Fingerprint
) -> list[tuple[TensorInfo, tuple[int, int] | None]] | None:
    """The parameters of ``child`` (``is_parameter_like``), each with its (child, source) slot among the
    fingerprints' sampled weights (None: a small tensor, compared by digest); None when one of them is
    not ``source``'s with its shape."""
    theirs_info = source.tensor_map
    compared = [info for info in child.tensors if is_parameter_like(info)]
    if any(theirs_info.get(i.name) is None or theirs_info[i.name].shape != i.shape for i in compared):
        return None
    ours_at = {name: k for k, name in enumerate(child.weights)}
    theirs_at = {name: k for k, name in enumerate(source.weights)}
    return [
        (
            info,
            (ours_at[info.name], theirs_at[info.name])
            if info.name in ours_at and info.name in theirs_at
            else None,
        )
        for info in compared
    ]


def print_rounding(child: Fingerprint, source: Fingerprint) -> tuple[float, float] | None:
    """``keeps_unquantized`` and ``rounding_of`` in one, on two fingerprints."""
    compared = compared_in_prints(child, source)
    if compared is None:
        return None
    theirs_info = source.tensor_map
    errors: list[tuple[float, float, int]] = []  # (error, scale, numel) per quantised tensor
    for info, slots in compared:
        name = info.name
        if info.is_quantized:
            if slots is None:
                return None
            ours, theirs = child.samples[slots[0]], source.samples[slots[1]]
            largest = source.maxima[slots[1]] if source.maxima is not None else None
            if not within_one_step(ours, theirs, info.dtype, largest=largest):
                return None
            errors.append(_tensor_error(ours, theirs, info.numel))
            continue
        precision, theirs_precision = precision_of(info.dtype), precision_of(theirs_info[name].dtype)
        if not _may_hold_rounded(precision, theirs_precision):
            return None
        if slots is not None:
            if not np.array_equal(rounded(source.samples[slots[1]], precision), child.samples[slots[0]]):
                return None
        else:
            # Digests are of the values as float32; an F32 source keeps them rounded to each precision.
            level = precision if theirs_precision == 0 else 0
            if child.digests[name][0] != source.digests[name][level]:
                return None
    return _rounding_summary(errors)


def _tensor_error(ours: np.ndarray, theirs: np.ndarray, numel: int) -> tuple[float, float, int]:
    """(RMS error, RMS of the source, numel) of one quantised tensor."""
    rms_error = float(np.sqrt(np.mean(np.square(ours - theirs, dtype=np.float64))))
    return rms_error, float(np.sqrt(np.mean(np.square(theirs, dtype=np.float64)))), numel


def _rounding_summary(errors: Sequence[tuple[float, float, int]]) -> tuple[float, float] | None:
    """(largest relative RMS error, RMS distance averaged with weights ``sqrt(numel)``) of the quantised
    tensors' (error, scale, numel); None when there are none."""
    if not errors:
        return None
    worst = max(e / s if s > 0 else (0.0 if e == 0 else math.inf) for e, s, _ in errors)
    weights = [math.sqrt(n) for _, _, n in errors]
    return worst, sum(w * e for w, (e, _, _) in zip(weights, errors, strict=True)) / sum(weights)


def within_one_step(
    quantized: np.ndarray, source: np.ndarray, dtype: str, *, largest: float | None = None
) -> bool:
    """Whether every weight of ``quantized`` is within a step of its format's grid of ``source``'s.

    ``largest``: the source tensor's absolute maximum, when ``source`` holds only some of its values (a
    fingerprint's samples); by default the maximum of ``source``."""
    top = float(np.max(np.abs(source))) if largest is None or not np.isfinite(largest) else float(largest)
    step = top / (2 ** (BITS[dtype] - 1) - 1)
    return bool(np.max(np.abs(quantized - source)) <= _STEP_MARGIN * step)
