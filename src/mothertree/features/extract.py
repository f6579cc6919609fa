"""The one heavy loop: read each compared tensor from every model, reduce it, drop it.

Tensor-major, as mergekit gathers one weight from every model before merging it: peak memory is about
``n_models x largest compared tensor`` plus a float64 chunk, never a whole model. A model whose tensor
cannot be read, or holds NaN/inf, is dropped from then on and reported; the others go on. Reading stays
on the calling thread; each stack read is reduced (moments, distances, sketched ranks) on a pool of two
threads while the next is read (``_compared_in_order``), the choices that depend on earlier tensors
handed on in tensor order (``features/turns.py``), so that the result is the one reading in turn gives.

A tensor in which some model is sparse (magnitude-pruned: ``reductions.is_sparse``) is compared on the
common support of each pair instead (``reductions.common_support_distances``), and each model's norm is
kept per pair over that support; dense tensors take the plain path and numbers.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from .._progress import progress
from ..errors import MotherTreeError, NonFiniteWeightsError
from ..io.types import BrokenModel, Checkpoint, TensorInfo
from .blas import one_blas_thread
from .buffers import WarmBuffers
from .decay import clock_pairs, combined_log_factors, every_pair, pair_log_factors
from .featureset import FeatureSet
from .fingerprint import DEFAULT_PARAMS, block_positions
from .rank import DEFAULT_SKETCH_ROWS, RankEstimate, sketched_ranks
from .reductions import (
    PRECISIONS,
    SPARSE_ZERO_SHARE,
    TensorStats,
    common_support_distances,
    is_sparse,
    mean_squares,
    pairwise_squared_distances,
    precision_of,
    tensor_stats,
)
from .screen import NearestScreen
from .turns import Turns

LOG = logging.getLogger(__name__)

# The stacks read and waiting to be compared hold at most this much (a larger one is held alone).
READ_AHEAD_BYTES = 256 << 20
# Buffers of stacks compared, kept for the next stacks (``WarmBuffers``), beside those in flight.
KEPT_BUFFER_BYTES = 64 << 20
# Threads comparing stacks while the loop reads the next ones (at most one a core).
COMPARE_WORKERS = 2


def extract_features(
    checkpoints: Sequence[Checkpoint],
    model_ids: Sequence[str],
    tensors: Sequence[TensorInfo],
    *,
    ranks: bool | Literal["nearest"] = False,
    rank_pairs: Sequence[tuple[int, int]] | None = None,
    sketch_rows: int = DEFAULT_SKETCH_ROWS,
    clock: Sequence[TensorInfo] = (),
    metadata: dict[str, object] | None = None,
) -> tuple[FeatureSet, list[BrokenModel]]:
    """Per-tensor distances and moments of ``checkpoints``, plus the models that failed on the way.

    With ``ranks``, also the numerical rank of every pairwise difference of every tensor (2-D, or folded
    to 2-D), estimated through a ``sketch_rows`` random sketch (``features/rank.py``); with
    ``ranks="nearest"`` only each model's difference to its nearest model, in its first few tensors
    where the two differ (``features/screen.py``: enough to see whether some model is a LoRA of
    another; the others stay -1).
    ``rank_pairs`` (with ``ranks=True``): only these pairs of models (indices into ``checkpoints``).
    The FeatureSet holds the models read completely and finite; ``metadata["masked_tensors"]`` names the
    tensors compared on the common support (``common_support_norms`` is set when there is any).
    ``clock``: tensors whose sampled blocks give the weight-decay clock (``features/decay.py``), read one
    model at a time after the compared ones, while the last of those are compared (``_early_clock``).
    """
    arrays = GroupArrays(len(tensors), len(checkpoints), with_ranks=bool(ranks))
    failed: dict[int, Exception] = {}
    started = time.perf_counter()
    screen = NearestScreen(len(checkpoints)) if ranks == "nearest" else None
    turns = LoopTurns(Turns(frozenset()), screen)
    compare = partial(
        _compare_stack, turns=turns, ranks=ranks, rank_pairs=rank_pairs, sketch_rows=sketch_rows
    )
    early_clock: list[_ClockRead] = []

    def read_clock() -> None:
        early_clock.extend(_early_clock(checkpoints, clock, failed))

    with one_blas_thread():  # many small SVDs and Gram products (features/blas.py)
        compared = _compared_in_order(checkpoints, tensors, failed, compare, turns, after_reading=read_clock)
        for t, info in enumerate(
            progress(tensors, desc="reading tensors", total=len(tensors), unit="tensor")
        ):
            read, comparison = next(compared)
            if comparison is None:
                continue  # no model could read it: the models are all in ``failed``
            arrays.add_moments(t, read)
            arrays.store_distances(t, info, read.filled, comparison.distances)
            if comparison.ranks is not None:
                arrays.add_ranks(t, read.filled, comparison.ranks)

    kept = [i for i in range(len(checkpoints)) if i not in failed]
    if clock:
        early = early_clock[0] if early_clock else None
        arrays.decay_log_factors = _clock(checkpoints, clock, kept, arrays.mean_distances(kept), early)
    features = arrays.feature_set(
        kept,
        model_ids=[model_ids[i] for i in kept],
        model_paths=[str(checkpoints[i].path) for i in kept],
        tensors=tensors,
        metadata={
            **(metadata or {}),
            "masked_tensors": arrays.masked,
            "ranks": _ranks_kind(ranks, rank_pairs, len(checkpoints)),
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    broken = [BrokenModel(path=checkpoints[i].path, error=failed[i]) for i in sorted(failed)]
    return features, broken


class _ClockRead(NamedTuple):
    """The clock's ``pair_log_factors`` of each clock tensor, for every pair of ``models``."""

    models: list[int]
    per_tensor: list[npt.NDArray[np.float64]]


def _clock(
    checkpoints: Sequence[Checkpoint],
    clock: Sequence[TensorInfo],
    kept: list[int],
    distances: npt.NDArray[np.float64],
    early: _ClockRead | None = None,
) -> npt.NDArray[np.float64]:
    """``features.decay.combined_log_factors`` of the ``kept`` models over the ``clock`` tensors' sampled
    blocks (``fingerprint.sampled_block``), for the pairs ``decay.clock_pairs`` picks from their
    ``distances``; from ``early`` where it was read for models that include them (its pairs among them
    are all that count). A tensor a model cannot read (it read its compared ones) leaves that tensor out
    of the clock, with a warning; the model stays."""
    if early is not None:
        position = {model: k for k, model in enumerate(early.models)}
        index = [position[i] for i in kept]
        per_tensor = [factors[np.ix_(index, index)] for factors in early.per_tensor]
    else:
        per_tensor = _clock_factors(checkpoints, clock, kept, clock_pairs(distances)) or []
    n = len(checkpoints)
    full = np.full((n, n), np.nan)
    full[np.ix_(kept, kept)] = combined_log_factors(per_tensor, len(kept))
    return full


def _early_clock(
    checkpoints: Sequence[Checkpoint], clock: Sequence[TensorInfo], failed: dict[int, Exception]
) -> list[_ClockRead]:
    """The clock of the models not ``failed`` so far, read and reckoned while the last tensors are
    compared (the calling thread has nothing else to do then), where ``decay.clock_pairs`` takes every
    pair whatever the distances; none where it would not, or where a clock tensor fails to read (``_clock``
    reads it again once the models kept are known, and warns then)."""
    models = [i for i in range(len(checkpoints)) if i not in failed]
    if not clock or not every_pair(len(models)):
        return []
    per_tensor = _clock_factors(checkpoints, clock, models, None, warn=False)
    return [] if per_tensor is None else [_ClockRead(models, per_tensor)]


def _clock_factors(
    checkpoints: Sequence[Checkpoint],
    clock: Sequence[TensorInfo],
    models: list[int],
    pairs: list[tuple[int, int]] | None,
    *,
    warn: bool = True,
) -> list[npt.NDArray[np.float64]] | None:
    """``pair_log_factors`` of each clock tensor of ``models`` (``pairs``: positions among them, None:
    all). A tensor some model cannot read is left out with a warning, or (``warn=False``) none is
    returned."""
    per_tensor = []
    for info in clock:
        try:
            rows, cols = block_positions(info.shape, DEFAULT_PARAMS.sketch)
            # The fingerprint's sampled block, read row by row where the format can seek.
            blocks = [checkpoints[i].read_rows(info.name, rows)[:, cols] for i in models]
        except (MotherTreeError, OSError, ValueError, KeyError) as exc:
            if not warn:
                return None
            LOG.warning("weight-decay clock: leaving out `%s`: %s", info.name, exc)
            continue
        per_tensor.append(pair_log_factors(np.stack(blocks), pairs))
    return per_tensor


class ReadRows(NamedTuple):
    """What the reading thread hands a comparison with the stack it read: the models whose rows it holds
    (indices into the checkpoints), their stored dtypes, the precisions to take moments at (float32 and
    every coarser one some model stores the tensor in), and the models' paths (for errors)."""

    models: list[int]
    dtypes: list[str]
    precisions: tuple[int, ...]
    paths: list[str]


class ReadTensor(NamedTuple):
    """What the feature loop keeps of one tensor read from every model: the models read and finite
    (indices into the checkpoints), each one's ``TensorStats`` and its stored dtype."""

    filled: list[int]
    stats: list[TensorStats]
    dtypes: list[str]


class TensorDistances(NamedTuple):
    """``(k, k)`` pairwise RMS distances of one tensor of ``k`` models, each model's squared norm per pair
    over the coordinates the pair shares (its whole norm when dense), and whether the tensor was compared
    on the common support (``reductions.is_sparse``)."""

    rms: npt.NDArray[np.float64]
    norms: npt.NDArray[np.float64]
    masked: bool


class Comparison(NamedTuple):
    distances: TensorDistances
    ranks: RankEstimate | None


class Compared(NamedTuple):
    """A comparison's answer: the tensor as kept, its comparison (None when no model is left), and the
    models it found non-finite (first in this tensor)."""

    read: ReadTensor
    comparison: Comparison | None
    non_finite: dict[int, Exception]


class LoopTurns(NamedTuple):
    """What the comparisons hand on in tensor order (``features/turns.py``): the models found non-finite
    so far (left out of every later tensor), and the rank screen's counts where there is one."""

    non_finite: Turns[frozenset[int]]
    screen: NearestScreen | None

    def all(self) -> list[Turns[Any]]:
        return [self.non_finite] + ([self.screen.turns] if self.screen is not None else [])


def _compared_in_order(
    checkpoints: Sequence[Checkpoint],
    tensors: Sequence[TensorInfo],
    failed: dict[int, Exception],
    compare: Callable[[int, TensorInfo, npt.NDArray[np.float32], ReadRows], Compared],
    turns: LoopTurns,
    after_reading: Callable[[], None] = lambda: None,
) -> Iterator[tuple[ReadTensor, Comparison | None]]:
    """Each of ``tensors`` read from every model (``_read_stack``) and ``compare``d, in order.

    Reading stays on the calling thread, tensor after tensor, so that a checkpoint (one open file, one
    seek position) is only ever used by one thread. Everything else (moments, Gram products, sketches,
    factorisations: the kernels and numpy release the GIL) runs on ``COMPARE_WORKERS`` threads meanwhile.
    The stacks read but not yet compared are at most one a thread plus one (more only raised the page
    faults: each stack a buffer of its own) and hold at most ``READ_AHEAD_BYTES``; a larger one is read
    only once every earlier one is compared, and held alone. A stack compared hands its buffer on to a
    later one (``WarmBuffers``: at most ``KEPT_BUFFER_BYTES`` of them kept beside those in flight).

    ``after_reading`` runs on the calling thread once every stack is read, while the last are compared.

    A model that cannot be read, or holds NaN/inf, is in ``failed`` and read no more, as when read in
    turn: the comparisons hand on the models they found non-finite (``turns``), so a later tensor read
    before that was known leaves the model out too, and only its first failure is kept and warned of.
    """
    workers = max(1, min(COMPARE_WORKERS, os.cpu_count() or 1))
    failed_at: dict[int, int] = {}  # the tensor each model of ``failed`` failed in
    buffers = WarmBuffers(KEPT_BUFFER_BYTES)  # a stack compared leaves its memory to a later one
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mothertree-compare") as pool:
        try:
            waiting: deque[tuple[int, int, Future[Compared] | None, npt.NDArray[np.float32]]] = deque()

            def answer(
                t: int, future: Future[Compared] | None, buffer: npt.NDArray[np.float32]
            ) -> tuple[ReadTensor, Comparison | None]:
                compared = Compared(ReadTensor([], [], []), None, {}) if future is None else future.result()
                buffers.give(buffer)
                for model, error in compared.non_finite.items():
                    if failed_at.get(model, t + 1) > t:  # sooner than a read error found meanwhile
                        failed[model], failed_at[model] = error, t
                for model in sorted(m for m, at in failed_at.items() if at == t):
                    if isinstance(failed[model], NonFiniteWeightsError):  # its message names the model
                        LOG.warning("skipping: %s", failed[model])
                    else:
                        LOG.warning("skipping `%s`: %s", checkpoints[model].path, failed[model])
                return compared.read, compared.comparison

            held = 0
            for t, info in enumerate(tensors):
                size = 4 * info.numel * (len(checkpoints) - len(failed))
                while waiting and (held + size > READ_AHEAD_BYTES or len(waiting) > workers):
                    done, s, future, buffer = waiting.popleft()
                    held -= done
                    yield answer(s, future, buffer)
                buffer = buffers.take(size // 4)
                values, stack = _read_stack(checkpoints, info, failed, buffer)
                for model in stack.unread:
                    failed_at[model] = t
                future = pool.submit(compare, t, info, values, stack.read) if stack.read.models else None
                if future is None:
                    for chain in turns.all():
                        chain.skip(t)
                del values  # the worker holds the stack until it is compared
                waiting.append((size, t, future, buffer))
                held += size
            after_reading()  # on this thread, while the last stacks are compared
            for _, s, future, buffer in waiting:
                yield answer(s, future, buffer)
        finally:
            for chain in turns.all():
                chain.close()
            pool.shutdown(cancel_futures=True)


def _compare_stack(
    t: int,
    info: TensorInfo,
    values: npt.NDArray[np.float32],
    rows: ReadRows,
    *,
    turns: LoopTurns,
    ranks: bool | Literal["nearest"],
    rank_pairs: Sequence[tuple[int, int]] | None,
    sketch_rows: int,
) -> Compared:
    """Tensor ``t`` of the models ``rows.models`` (rows ``values``): each row's moments, then, of the rows
    finite and of models not found non-finite before (``turns.non_finite``), the pairwise distances and,
    with ``ranks``, the ranks of the differences ``extract_features`` asks for (``ranks="nearest"``: those
    the screen picks)."""
    try:
        stats = [tensor_stats(row, rows.precisions) for row in values]
        before = turns.non_finite.before(t)
        non_finite: dict[int, Exception] = {
            model: NonFiniteWeightsError(f"`{path}` has NaN or infinite values in `{info.name}`", path=path)
            for model, row, path in zip(rows.models, stats, rows.paths, strict=True)
            if model not in before and not row.finite
        }
        turns.non_finite.hand_on(t, before | non_finite.keys())
        keep = [k for k, model in enumerate(rows.models) if model not in before and stats[k].finite]
        read = ReadTensor(
            [rows.models[k] for k in keep], [stats[k] for k in keep], [rows.dtypes[k] for k in keep]
        )
        if len(keep) < len(values):
            values = values[keep]  # a copy, only where some model failed
        if not keep:
            if turns.screen is not None:
                turns.screen.turns.skip(t)
            return Compared(read, None, non_finite)
        moments = np.array([row.moments[0] for row in read.stats], dtype=np.float64)
        sparse = any(row.zeros > SPARSE_ZERO_SHARE * info.numel for row in read.stats)
        distances = tensor_distances(info, values, moments, sparse=sparse)
        if not ranks:
            return Compared(read, Comparison(distances, None), non_finite)
        pairs: list[tuple[int, int]] | None
        if turns.screen is not None:
            pairs = turns.screen.pairs(t, read.filled, distances.rms, moments)
        else:
            pairs = _pairs_to_rank(rank_pairs, read.filled)
    except BaseException:
        for chain in turns.all():
            chain.skip(t)  # the later tensors do not wait for this one's turn
        raise
    # The moments already hold every model's mean square: no second pass over the stack.
    rms_weight = float(np.sqrt(np.mean(mean_squares(moments))))
    shape = (info.shape[0], info.numel // info.shape[0])
    estimate = sketched_ranks(
        values, shape, read.dtypes, seed=t, sketch_rows=sketch_rows, pairs=pairs, rms_weight=rms_weight
    )
    return Compared(read, Comparison(distances, estimate), non_finite)


def tensor_distances(
    info: TensorInfo,
    values: npt.NDArray[np.float32],
    moments: npt.NDArray[np.float64],
    *,
    sparse: bool | None = None,
) -> TensorDistances:
    """Pairwise distances of tensor ``info`` from ``values``: the whole tensor of each model, or the same
    sampled coordinates of each (``features.fingerprint``), which estimate them; ``moments`` are the
    models' exact ``[mean, m2, m3, m4]`` of the whole tensor. ``sparse``: whether some model is pruned in
    it (``is_sparse``), when the caller has counted its zeros already."""
    counted = max(values.shape[1], 1)
    whole = mean_squares(moments) * info.numel  # each model's squared norm
    if not (is_sparse(values) if sparse is None else sparse):
        rms = np.sqrt(pairwise_squared_distances(values) / counted)
        # Every coordinate is shared: model i's norm is the same whichever model it is paired with.
        return TensorDistances(rms, np.repeat(whole[:, None], len(values), axis=1), masked=False)
    squared, norms = common_support_distances(values)
    norms = norms * (info.numel / counted)
    if counted < info.numel:
        # Sampled coordinates (fingerprints): paired with a model that zeroes none of them, model i's
        # norm over what the two share is its whole norm, which its exact moments give; the samples'
        # estimate of it (1 % off) would drown the norm cue of every unpruned pair.
        dense = ~np.any(values == 0, axis=1)
        norms[:, dense] = whole[:, None]
    return TensorDistances(np.sqrt(squared), norms, masked=True)


def _read_stack(
    checkpoints: Sequence[Checkpoint],
    info: TensorInfo,
    failed: dict[int, Exception],
    buffer: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.float32], StackRead]:
    """Tensor ``info`` of every model not yet ``failed``, as ``(n_read, numel)`` rows in ``buffer`` (flat
    float32, at least that many values), and what ``StackRead`` says of them. A model that cannot be
    read is added to ``failed`` (and read no more)."""
    read_from = [i for i in range(len(checkpoints)) if i not in failed]
    stored = np.array([precision_of(checkpoints[i].tensors[info.name].dtype) for i in read_from])
    # Each model is read straight into its row.
    stack = buffer[: len(read_from) * info.numel].reshape(len(read_from), info.numel)
    filled: list[int] = []
    unread: list[int] = []
    for i in read_from:
        try:
            checkpoints[i].read_into(info.name, stack[len(filled)])
        except (MotherTreeError, OSError, ValueError, KeyError) as exc:
            failed[i] = exc
            unread.append(i)
            continue
        filled.append(i)
    rows = ReadRows(
        filled,
        [checkpoints[i].tensors[info.name].dtype for i in filled],
        (0, *coarser_precisions(stored)),
        [str(checkpoints[i].path) for i in filled],
    )
    return stack[: len(filled)], StackRead(rows, unread)


class StackRead(NamedTuple):
    """The rows ``_read_stack`` read (``read``) and the models it found it could not read (``unread``)."""

    read: ReadRows
    unread: list[int]


class GroupArrays:
    """The per-tensor reductions of one group of models, filled one tensor at a time.

    Rows of models that fail later stay in the arrays until ``feature_set`` keeps only the others.
    """

    def __init__(self, n_tensors: int, n_models: int, *, with_ranks: bool) -> None:
        shape = (n_tensors, n_models, n_models)
        self.rms_distances = np.full(shape, np.nan)
        self.moments = np.full((n_tensors, n_models, 4), np.nan)
        self.common_support_norms = np.full(shape, np.nan)
        self.masked: list[str] = []
        self.ranks = np.full(shape, -1, dtype=np.int64) if with_ranks else None
        self.clear_ranks = np.full(shape, -1, dtype=np.int64) if with_ranks else None
        self.rank_caps = np.zeros(n_tensors, dtype=np.int64) if with_ranks else None
        self.precisions = np.zeros((n_tensors, n_models), dtype=np.int8)
        self.rounded_moments = np.full((len(PRECISIONS) - 1, n_tensors, n_models, 4), np.nan)
        self.mixed_precision = False  # some tensor stored at more than one precision across the models
        self.decay_log_factors: npt.NDArray[np.float64] | None = None  # (n, n): features.decay

    def add_moments(self, t: int, read: ReadTensor) -> None:
        """Moments and storage precisions of tensor ``t`` of the models ``read.filled``. Where they store
        ``t`` at several precisions, each model's moments at each coarser one stored are kept too (a pair
        is compared at the coarser of its two precisions, so no other is ever needed)."""
        index = np.asarray(read.filled, dtype=np.int64)
        self.moments[t, index] = [row.moments[0] for row in read.stats]
        stored = np.array([precision_of(dtype) for dtype in read.dtypes], dtype=np.int8)
        if self.set_precisions(t, read.filled, stored):
            coarser = coarser_precisions(stored)
            slots = np.asarray(coarser) - 1  # rounded_moments has no row for float32
            for row, i in zip(read.stats, read.filled, strict=True):
                self.rounded_moments[slots, t, i] = row.moments[coarser]

    def add_distances(
        self,
        t: int,
        info: TensorInfo,
        filled: list[int],
        values: npt.NDArray[np.float32],
        *,
        sparse: bool | None = None,
    ) -> None:
        """``tensor_distances`` of tensor ``t`` from ``values`` (rows of the models ``filled``), stored.
        Needs the moments of ``t`` set first."""
        moments = self.moments[t, np.asarray(filled, dtype=np.int64)]
        self.store_distances(t, info, filled, tensor_distances(info, values, moments, sparse=sparse))

    def store_distances(
        self, t: int, info: TensorInfo, filled: list[int], distances: TensorDistances
    ) -> None:
        index = np.asarray(filled, dtype=np.int64)
        pairs = np.ix_(index, index)
        self.rms_distances[t][pairs] = distances.rms
        self.common_support_norms[t][pairs] = distances.norms
        if distances.masked:
            self.masked.append(info.name)

    def mean_distances(self, models: Sequence[int]) -> npt.NDArray[np.float64]:
        """``(n, n)`` the per-tensor RMS distances of ``models`` averaged over tensors (NaN where none)."""
        index = np.asarray(models, dtype=np.int64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a pair no tensor measured: NaN
            return np.asarray(np.nanmean(self.rms_distances[:, index][:, :, index], axis=0), dtype=np.float64)

    def set_precisions(self, t: int, filled: list[int], stored: npt.NDArray[np.int8]) -> bool:
        """Record the storage precision of tensor ``t`` of the models ``filled``; whether they are mixed
        (and the moments at the coarser precisions stored are then needed: ``coarser_precisions``)."""
        self.precisions[t, np.asarray(filled)] = stored
        if len(set(stored.tolist())) < 2:
            return False
        self.mixed_precision = True
        return True

    def add_ranks(self, t: int, filled: list[int], estimate: RankEstimate) -> None:
        assert self.ranks is not None and self.clear_ranks is not None and self.rank_caps is not None
        index = np.asarray(filled)
        pairs = np.ix_(index, index)
        self.ranks[t][pairs], self.clear_ranks[t][pairs], self.rank_caps[t] = estimate

    def feature_set(
        self,
        kept: list[int],
        *,
        model_ids: list[str],
        model_paths: list[str],
        tensors: Sequence[TensorInfo],
        metadata: dict[str, object],
    ) -> FeatureSet:
        def pairs(array: npt.NDArray[Any] | None) -> npt.NDArray[Any] | None:
            return None if array is None else array[:, kept][:, :, kept]

        return FeatureSet(
            model_ids=model_ids,
            model_paths=model_paths,
            tensor_names=[info.name for info in tensors],
            numel=np.array([info.numel for info in tensors], dtype=np.int64),
            rms_distances=self.rms_distances[:, kept][:, :, kept],
            moments=self.moments[:, kept],
            ranks=pairs(self.ranks),
            clear_ranks=pairs(self.clear_ranks),
            rank_caps=self.rank_caps,
            common_support_norms=pairs(self.common_support_norms) if self.masked else None,
            precisions=self.precisions[:, kept] if self.mixed_precision else None,
            rounded_moments=self.rounded_moments[:, :, kept] if self.mixed_precision else None,
            decay_log_factors=None
            if self.decay_log_factors is None
            else self.decay_log_factors[np.ix_(kept, kept)],
            metadata=metadata,
        )


def coarser_precisions(stored: npt.NDArray[np.int8]) -> list[int]:
    """The precisions (indices into ``PRECISIONS``) other than float32 that some model stores a tensor in:
    those its pairs may be compared at."""
    return sorted({int(p) for p in stored.tolist()} - {0})


def _pairs_to_rank(
    rank_pairs: Sequence[tuple[int, int]] | None, filled: list[int]
) -> list[tuple[int, int]] | None:
    """The pairs (positions among the models read for this tensor) whose rank to compute; None: all."""
    if rank_pairs is None:
        return None
    position = {model: k for k, model in enumerate(filled)}
    return [(position[i], position[j]) for i, j in rank_pairs if i in position and j in position]


def _ranks_kind(
    ranks: bool | Literal["nearest"], rank_pairs: Sequence[tuple[int, int]] | None, n_models: int
) -> str | None:
    if not ranks:
        return None
    if ranks == "nearest":
        return "nearest"
    covered = {frozenset((i, j)) for i, j in rank_pairs or () if i != j}
    return "all" if rank_pairs is None or len(covered) >= n_models * (n_models - 1) // 2 else "pairs"
