"""A model's fingerprint: what recovery needs of its weights, from that model alone, in one pass.

``recover`` on folders compares every model with every other tensor by tensor (``features.extract``):
exact, but each question about a new model re-reads the collection. A fingerprint is computed from one
model, one tensor in memory at a time, and from the fingerprints of any two models everything recovery
uses can be estimated for that pair without the weights (``features.estimate``, ``features.pairs``):

- **moments** (mean, 2nd-4th central) of every weight tensor, exact, as stored and rounded to fp16 and
  bf16: the direction cues (norm, kurtosis, their skew over tensors) read only these, so they are as
  exact as the folder path;
- **a coordinate sample**, ``samples`` values at positions drawn from a seed derived from the tensor's
  shape: the RMS distance of two models over the sample estimates their RMS distance over the tensor
  (relative error about ``sqrt((kappa + 2) / (4 samples))`` for differences of excess kurtosis kappa:
  1.1 % per tensor at 1024 samples and Gaussian differences, less over the tensors averaged); where some
  model is pruned the sample also gives the common-support distance and norms;
- **a sampled block**, the ``sketch x sketch`` sub-matrix at rows and columns drawn from the same kind of
  seed (``sampled_block``): a LoRA difference keeps its rank ``r`` there while ``r < sketch``, a dense one
  is full rank, so the rank of a pair's block difference is the LoRA distance (``features.rank``);
- **the absolute maximum** of every weight tensor: what bounds a quantisation grid's step, so that a
  quantised copy is told from its samples (``features.quantized``);
- **digests** (xxh3-128) of every tensor as stored, and of every small non-weight tensor stored in F32
  rounded to each coarser precision: with the moments and samples, two models are copies
  (``features.duplicates``, ``is_copy``) exactly when these say so, without reading either again; the
  model's content id digests them all and keys the store.

Positions are seeded by shape, not name: a fine-tune saved by a task class (``bert.`` prefix) must draw
the same positions as its base saved without it, and names are aligned only once models meet. Cost per
weight tensor: ``4 x (samples + sketch^2)`` bytes plus 104 bytes of moments and maximum (at most 13.4 kB
at the defaults), and its digest: a 2-layer MiniLM (62 MB) has a 210 kB fingerprint, MobileNetV2 (14 MB, 52
small weight tensors) 570 kB.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
import xxhash

from ..errors import InvalidFeatureSetError, NonFiniteWeightsError
from ..io.types import EXPORT_FORMATS, Checkpoint, TensorInfo
from .reductions import PRECISIONS, precision_of, rounded, tensor_stats

# 2: moments summed by the compiled kernel (``reductions.tensor_stats``); version 1 summed them in numpy,
# to other last bits, and copies are told by exact moments (``is_copy``), so the two do not mix.
FORMAT_VERSION = 2
# The seeds of the sampled positions, unchanged since version 1.
_SEED_SCHEME = 1
# Samples per weight tensor in a fingerprint's screening vector (``Fingerprint.screening_vector``).
SCREEN_PER_TENSOR = 32


@dataclass(frozen=True)
class FingerprintParams:
    """How fingerprints are made; two fingerprints compare only when made with equal parameters.

    Attributes:
        samples: coordinates sampled per weight tensor (all of a smaller tensor).
        sketch: rows and columns of each weight matrix's two-sided sketch (the largest rank it can tell).
        version: how fingerprints are computed (``FORMAT_VERSION``); bumped when anything a
            comparison reads would come out different.
    """

    samples: int = 1024
    sketch: int = 48
    version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, int]:
        return asdict(self)


DEFAULT_PARAMS = FingerprintParams()


@dataclass
class Fingerprint:
    """One model's fingerprint (module docstring).

    Attributes:
        content_id: hex digest of every tensor's name, shape, dtype and values: equal for byte-equal
            weights however they are stored on disk, different for any change of a value.
        tensors: every tensor of the model, as its header describes it.
        weights: names of the weight tensors fingerprinted (float, two or more dimensions), in order.
        moments: ``(len(weights), 4)`` moments as stored.
        rounded_moments: ``(2, len(weights), 4)`` moments rounded to F16 and to BF16.
        samples: each weight tensor's sampled values (float32, ``min(numel, params.samples)`` each).
        sketches: each weight tensor's sampled block (``sampled_block``, float32).
        digests: tensor name -> hex digests of its values as stored and, for a non-weight tensor stored
            in F32, rounded to F16 and to BF16.
        summary: the dtype of most parameters and their count (``pipeline.checkpoint_summary``).
        params: the parameters it was made with.
        maxima: ``(len(weights),)`` each weight tensor's largest absolute value: what bounds the step of a
            quantisation grid (``features.quantized``); None in fingerprints of blob version 1.
    """

    content_id: str
    tensors: list[TensorInfo]
    weights: list[str]
    moments: npt.NDArray[np.float64]
    rounded_moments: npt.NDArray[np.float64]
    samples: list[npt.NDArray[np.float32]]
    sketches: list[npt.NDArray[np.float32]]
    digests: dict[str, list[str]]
    summary: dict[str, Any] = field(default_factory=dict)
    params: FingerprintParams = DEFAULT_PARAMS
    maxima: npt.NDArray[np.float64] | None = None

    @property
    def tensor_map(self) -> dict[str, TensorInfo]:
        return {info.name: info for info in self.tensors}

    def screening_vector(self) -> npt.NDArray[np.float32]:
        """A short vector whose squared distance to another model's of the same layout estimates their
        squared distance: ``SCREEN_PER_TENSOR`` of each weight tensor's samples (strided), scaled by
        ``sqrt(numel / kept)``. What ``query`` screens a store with before comparing fingerprints."""
        by_name = self.tensor_map
        parts = []
        for name, values in zip(self.weights, self.samples, strict=True):
            step = max(1, len(values) // SCREEN_PER_TENSOR)
            kept = values[::step][:SCREEN_PER_TENSOR].astype(np.float64)
            parts.append(kept * np.sqrt(by_name[name].numel / max(len(kept), 1)))
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, dtype=np.float32)

    @property
    def nbytes(self) -> int:
        """Bytes of its arrays (what it costs to keep, before the store's own overhead)."""
        arrays: list[npt.NDArray[Any]] = [self.moments, self.rounded_moments, *self.samples, *self.sketches]
        if self.maxima is not None:
            arrays.append(self.maxima)
        return int(sum(a.nbytes for a in arrays))

    def to_bytes(self) -> bytes:
        """The fingerprint as one blob: ``MAGIC``, the length of a JSON header, the header, then the arrays'
        raw little-endian bytes in a fixed order, the maxima last (nothing that ``from_bytes`` would
        execute)."""
        maxima = self.maxima if self.maxima is not None else np.full(len(self.weights), np.nan)
        header = json.dumps(
            {
                "content_id": self.content_id,
                "tensors": [[t.name, list(t.shape), t.dtype] for t in self.tensors],
                "weights": self.weights,
                "digests": self.digests,
                "summary": self.summary,
                "params": self.params.to_json(),
            }
        ).encode()
        parts = [
            MAGIC,
            len(header).to_bytes(8, "little"),
            header,
            self.moments.astype("<f8").tobytes(),
            self.rounded_moments.astype("<f8").tobytes(),
            _concatenated(self.samples).astype("<f4").tobytes(),
            _concatenated(self.sketches).astype("<f4").tobytes(),
            maxima.astype("<f8").tobytes(),
        ]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Fingerprint:
        """Read a blob written by ``to_bytes``.

        Raises:
            InvalidFeatureSetError: the blob is not a fingerprint (the store names its file).
        """
        try:
            if not blob.startswith((MAGIC, MAGIC_V1)):
                raise ValueError("it does not start as one")
            with_maxima = blob.startswith(MAGIC)
            start = len(MAGIC) + 8
            size = int.from_bytes(blob[len(MAGIC) : start], "little")
            header = json.loads(blob[start : start + size])
            tensors = [TensorInfo(str(n), tuple(int(d) for d in s), str(t)) for n, s, t in header["tensors"]]
            params = FingerprintParams(**header["params"])
            by_name = {t.name: t for t in tensors}
            weights = [str(name) for name in header["weights"]]
            sample_sizes = [min(by_name[name].numel, params.samples) for name in weights]
            block_shapes = [block_shape(by_name[name].shape, params.sketch) for name in weights]
            counts = [
                4 * len(weights),
                2 * 4 * len(weights),
                sum(sample_sizes),
                sum(a * b for a, b in block_shapes),
                len(weights) if with_maxima else 0,
            ]
            offsets = np.cumsum(
                [start + size, 8 * counts[0], 8 * counts[1], 4 * counts[2], 4 * counts[3], 8 * counts[4]]
            )
            if offsets[-1] != len(blob):
                raise ValueError(f"it holds {len(blob)} bytes where its header describes {offsets[-1]}")
            moments = np.frombuffer(blob, "<f8", counts[0], offsets[0]).reshape(len(weights), 4)
            rounded_moments = np.frombuffer(blob, "<f8", counts[1], offsets[1]).reshape(2, len(weights), 4)
            samples = _split(np.frombuffer(blob, "<f4", counts[2], offsets[2]), sample_sizes)
            blocks = _split(
                np.frombuffer(blob, "<f4", counts[3], offsets[3]), [a * b for a, b in block_shapes]
            )
            return cls(
                content_id=str(header["content_id"]),
                tensors=tensors,
                weights=weights,
                moments=moments.astype(np.float64),
                rounded_moments=rounded_moments.astype(np.float64),
                samples=samples,
                sketches=[b.reshape(shape) for b, shape in zip(blocks, block_shapes, strict=True)],
                digests={str(k): [str(d) for d in v] for k, v in header["digests"].items()},
                summary=dict(header.get("summary", {})),
                params=params,
                maxima=np.frombuffer(blob, "<f8", counts[4], offsets[4]).astype(np.float64)
                if with_maxima
                else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidFeatureSetError(f"not a mothertree fingerprint: {exc}") from None


# The first bytes of every fingerprint blob, with the blob format's version: 2 adds the maxima. Blobs of
# version 1 read as they are (maxima None): their samples and positions are the same.
MAGIC = b"MTFP\x02"
MAGIC_V1 = b"MTFP\x01"


def is_weight(info: TensorInfo) -> bool:
    """Whether a tensor is fingerprinted for comparison: float, with two or more dimensions (the tensors
    ``features.select`` can choose from)."""
    return info.is_float and len(info.shape) >= 2


def fingerprint(checkpoint: Checkpoint, params: FingerprintParams = DEFAULT_PARAMS) -> Fingerprint:
    """The fingerprint of one open model: every tensor read once, one at a time, reduced and dropped.

    Raises:
        NonFiniteWeightsError: a tensor holds NaN or infinity.
        MotherTreeError, OSError: what the checkpoint's reader raises for a tensor it cannot read.
    """
    infos = list(checkpoint.tensors.values())
    weights = [info for info in infos if is_weight(info)]
    moments = np.zeros((len(weights), 4))
    maxima = np.zeros(len(weights))
    rounded_moments = np.zeros((len(PRECISIONS) - 1, len(weights), 4))
    samples: list[npt.NDArray[np.float32]] = []
    sketches: list[npt.NDArray[np.float32]] = []
    digests: dict[str, list[str]] = {}
    position = {info.name: k for k, info in enumerate(weights)}
    for info in infos:
        values = checkpoint.read(info.name).reshape(-1)
        k = position.get(info.name)
        # A weight's moments at each coarser precision feed the direction cues of mixed-precision pairs
        # (and confirm re-saved copies, with its rounded samples); the kernel's passes also say whether
        # it is finite and give its maximum.
        stats = tensor_stats(values, range(len(PRECISIONS))) if k is not None else None
        if not (stats.finite if stats is not None else np.isfinite(values).all()):
            raise NonFiniteWeightsError(
                f"`{checkpoint.path}` has NaN or infinite values in `{info.name}`", path=checkpoint.path
            )
        digests[info.name] = [_digest(values)]
        if stats is not None and k is not None:
            moments[k], rounded_moments[:, k], maxima[k] = stats.moments[0], stats.moments[1:], stats.absmax
            samples.append(values[sample_positions(info.shape, params.samples)])
            sketches.append(sampled_block(values, info.shape, params.sketch))
        elif precision_of(info.dtype) == 0:
            # Other tensors (biases, norms: small) keep digests at each coarser precision instead.
            digests[info.name] += [_digest(rounded(values, p)) for p in range(1, len(PRECISIONS))]
        del values
    return Fingerprint(
        content_id=_content_id(infos, digests),
        tensors=infos,
        weights=[info.name for info in weights],
        moments=moments,
        rounded_moments=rounded_moments,
        samples=samples,
        sketches=sketches,
        digests=digests,
        params=params,
        maxima=maxima,
    )


def _seed(shape: Sequence[int], purpose: str) -> int:
    key = f"mothertree-fingerprint-v{_SEED_SCHEME}|{purpose}|{'x'.join(map(str, shape))}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


@lru_cache(maxsize=256)
def sample_positions(shape: tuple[int, ...], samples: int) -> npt.NDArray[np.int64]:
    """The flat positions sampled in every tensor of ``shape`` (sorted; all of them for a small tensor)."""
    numel = math.prod(shape)
    if numel <= samples:
        return np.arange(numel, dtype=np.int64)
    rng = np.random.default_rng(_seed(shape, "samples"))
    positions = np.sort(rng.choice(numel, size=samples, replace=False)).astype(np.int64)
    positions.flags.writeable = False
    return positions


def matrix_shape(shape: Sequence[int]) -> tuple[int, int]:
    """A weight tensor as a matrix: its first dimension by the rest (a conv kernel folded), as
    ``features.extract`` ranks it."""
    numel = math.prod(shape)
    return int(shape[0]), numel // max(int(shape[0]), 1)


def block_shape(shape: Sequence[int], sketch: int) -> tuple[int, int]:
    """Rows and columns of a weight tensor's sampled block (``sampled_block``)."""
    rows, cols = matrix_shape(shape)
    return min(rows, sketch), min(cols, sketch)


@lru_cache(maxsize=256)
def block_positions(
    shape: tuple[int, ...], sketch: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The rows and columns (sorted) of every tensor of ``shape`` that its sampled block keeps."""
    rows, cols = matrix_shape(shape)
    picked = []
    for n, purpose in ((rows, "rows"), (cols, "cols")):
        if n <= sketch:
            chosen = np.arange(n, dtype=np.int64)
        else:
            chosen = np.sort(np.random.default_rng(_seed(shape, purpose)).choice(n, sketch, replace=False))
        chosen.flags.writeable = False
        picked.append(chosen.astype(np.int64))
    return picked[0], picked[1]


def sampled_block(
    values: npt.NDArray[np.float32], shape: tuple[int, ...], sketch: int
) -> npt.NDArray[np.float32]:
    """The ``sketch x sketch`` sub-matrix of a weight tensor (as a matrix) at ``block_positions``.

    A sampling sketch: a LoRA difference ``B A`` restricted to rows ``I`` and columns ``J`` is
    ``B[I] A[:, J]``, of the same rank ``r`` while the factors' sampled rows and columns span ``r``
    dimensions, as dense trained factors do; a dense fine-tuning difference stays full rank. Unlike a
    Gaussian sketch it costs no arithmetic (a Gaussian ``S W Omega^T`` took 0.6 s of a 1.6 s fingerprint of
    a 2-layer MiniLM), and its entries are stored weights, exact in float32.
    """
    rows, cols = matrix_shape(shape)
    row_index, col_index = block_positions(shape, sketch)
    matrix = values.reshape(rows, cols)
    return np.ascontiguousarray(matrix[np.ix_(row_index, col_index)], dtype=np.float32)


def _digest(values: npt.NDArray[np.float32]) -> str:
    return xxhash.xxh3_128(np.ascontiguousarray(values).data).hexdigest()


def _content_id(infos: Sequence[TensorInfo], digests: Mapping[str, list[str]]) -> str:
    content = xxhash.xxh3_128()
    for info in sorted(infos, key=lambda t: t.name):
        content.update(f"{info.name}|{list(info.shape)}|{info.dtype}|{digests[info.name][0]}\n".encode())
    return content.hexdigest()


def shared_names(a: Fingerprint, b: Fingerprint) -> list[str] | None:
    """``features.duplicates.shared_tensors`` from fingerprints: the tensors to compare to tell whether
    ``a`` and ``b`` are one model stored twice, or None when their lists alone show they are not. An export
    (``summary["format"]`` in ``EXPORT_FORMATS``) may leave some of its source's tensors out."""
    ta, tb = a.tensor_map, b.tensor_map
    names = set(ta)
    if names != set(tb):
        fewer, more = (a, set(tb)) if len(ta) < len(tb) else (b, set(ta))
        kept = {info.name for info in fewer.tensors if info.is_float and info.numel >= 2}
        if fewer.summary.get("format") not in EXPORT_FORMATS or not kept <= more:
            return None
        names = kept
    if not names or any(ta[name].shape != tb[name].shape for name in names):
        return None
    return sorted(names)


def is_copy(a: Fingerprint, b: Fingerprint) -> bool:
    """``features.duplicates.is_copy`` from fingerprints: the same tensors (``shared_names``), equal up to
    a coarser re-save.

    Tensors stored alike must have equal digests. A tensor stored in F32 in one and coarser in the other
    must equal the F32 one rounded: for a small tensor its rounded digest says so; for a weight, its moments
    at that precision (bit for bit: the same values summed in the same order) and its rounded samples and
    block must equal the other's.
    """
    names = shared_names(a, b)
    if names is None:
        return False
    ta, tb = a.tensor_map, b.tensor_map
    weights_a = {name: k for k, name in enumerate(a.weights)}
    weights_b = {name: k for k, name in enumerate(b.weights)}
    for name in names:
        info_a = ta[name]
        pa, pb = precision_of(info_a.dtype), precision_of(tb[name].dtype)
        if pa == pb:
            if a.digests[name][0] != b.digests[name][0]:
                return False
            continue
        if pa != 0 and pb != 0:
            return False  # fp16 and bf16: neither is the other rounded
        fine, coarse, p = (a, b, pb) if pa == 0 else (b, a, pa)
        if name not in weights_a:
            if fine.digests[name][p] != coarse.digests[name][0]:
                return False
            continue
        kf = (weights_a if fine is a else weights_b)[name]
        kc = (weights_a if coarse is a else weights_b)[name]
        if not (
            np.array_equal(fine.rounded_moments[p - 1, kf], coarse.moments[kc])
            and np.array_equal(rounded(fine.samples[kf], p), coarse.samples[kc])
            and np.array_equal(rounded(fine.sketches[kf], p), coarse.sketches[kc])
        ):
            return False
    return True


def _concatenated(arrays: Sequence[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    return np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, dtype=np.float32)


def _split(flat: npt.NDArray[Any], sizes: Sequence[int]) -> list[npt.NDArray[np.float32]]:
    if sum(sizes) != flat.size:
        raise ValueError(f"arrays hold {flat.size} values where the header describes {sum(sizes)}")
    bounds = np.cumsum([0, *sizes])
    return [flat[bounds[k] : bounds[k + 1]].astype(np.float32) for k in range(len(sizes))]
