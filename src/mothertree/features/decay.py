"""Weight decay as a clock: rows that no gradient reaches shrink by one factor, and only downstream.

AdamW (and SGD with weight decay) multiply every decayed weight by ``1 - lr * wd`` at each step before
adding the gradient's update. A row of a weight matrix that gets no gradient during a whole run (the
embedding of a token the run's data never holds, a position beyond the sequences it trained on) is only
multiplied: the child's row is its parent's times ``c = prod_t (1 - lr_t * wd) < 1``, one factor for every
such row. So where two models share rows that differ by one common factor, the model with the smaller rows
came later. Unlike the norm and the kurtosis, no recipe flips this sign: decay only shrinks.

What it needs, and what happens otherwise:

- rows untouched by the run: a fine-tune leaves most of a 30k-token vocabulary untouched, a run on short
  sequences leaves the later positions; a masked-token run with a decoder tied to the embeddings touches
  every token row (the positions remain). Touched rows move in their own directions and are not counted.
- weight decay: without it the untouched rows are equal, which says the two are related, not which came
  first (no evidence, ``MIN_DECAY``).
- precision: 20 steps at lr 1e-4 and wd 0.01 give ``c = 1 - 2e-5``, plain in float32; bf16 and fp16
  rounding (0.4 % and 0.05 %) hides it, and rows of a pair stored at two precisions are not scaled copies
  of each other to ``SCALED_SPREAD``, so such a pair gives no evidence rather than a wrong one.

The rows compared are the sampled block of each tensor (``fingerprint.sampled_block``: 48 seeded rows and
columns), the same from the weights and from a fingerprint, so both paths measure the same clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from ..io.types import TensorInfo

# Tensors whose rows a run may leave without gradient: token, position and type embeddings (BERT's
# `word_embeddings`, LLaMA's `embed_tokens`, GPT-2's `wte`/`wpe`, T5's `shared`).
CLOCK_TENSOR = re.compile(r"(embed|\bwte\b|\bwpe\b|^shared\.)", re.IGNORECASE)
# A row is a scaled copy of the other model's when the spread (max - min) of its entries' ratios is at
# most this times its distance from 1, ``|1 - c|``. Rounding each step's product to float32 costs up to
# half an ulp (3e-8) per step, against a decay of ``lr * wd`` per step: measured on the clock spec's
# 384-wide rows, spreads of 0.05-0.22 |1 - c| at lr 1e-4 to 2e-4 and wd 0.01, so about 2 at lr 1e-5; rows
# the run updated spread 100 to 30,000 times their |1 - c|.
SCALED_SPREAD = 2.0
# ... or at most this absolutely: equal rows (no decay) are scaled copies with c = 1.
EQUAL_SPREAD = 1e-7
# Entries of a row, nonzero in both models, needed to call it scaled.
MIN_ENTRIES = 8
# Scaled rows a pair needs in a tensor for its factor to count.
MIN_ROWS = 4
# |log c| below this: the scaled rows are equal up to rounding (no decay, or none seen): no evidence.
MIN_DECAY = 1e-6


def clock_tensors(tensors: Sequence[Mapping[str, TensorInfo]]) -> list[TensorInfo]:
    """The tensors to read the clock on: float matrices named like an embedding (``CLOCK_TENSOR``) that
    every model holds with one shape, in name order."""
    if not tensors:
        return []
    first, others = tensors[0], tensors[1:]
    return [
        info
        for name, info in sorted(first.items())
        if info.is_float
        and len(info.shape) == 2
        and CLOCK_TENSOR.search(name)
        and all(name in other and other[name].shape == info.shape for other in others)
    ]


def row_factors(parent: npt.ArrayLike, child: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``(..., rows)`` the factor by which each row of ``child`` is ``parent``'s row scaled (rows along the
    last axis but one, entries along the last); NaN for a row that is not a scaled copy
    (``SCALED_SPREAD``, ``EQUAL_SPREAD``) or has too few nonzero entries (``MIN_ENTRIES``)."""
    a = np.asarray(parent, dtype=np.float64)
    b = np.asarray(child, dtype=np.float64)
    usable = (a != 0) & (b != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = b / np.where(usable, a, 1.0)
        low = np.where(usable, ratios, np.inf).min(axis=-1)
        high = np.where(usable, ratios, -np.inf).max(axis=-1)
        factor = (a * b * usable).sum(axis=-1) / (a * a * usable).sum(axis=-1)
        scaled = (usable.sum(axis=-1) >= MIN_ENTRIES) & (
            high - low <= SCALED_SPREAD * np.abs(1.0 - factor) + EQUAL_SPREAD
        )
    return np.where(scaled, factor, np.nan)


def pair_log_factors(
    blocks: npt.ArrayLike, pairs: Sequence[tuple[int, int]] | None = None
) -> npt.NDArray[np.float64]:
    """``(n, n)`` ``log c`` with ``[i, j]`` the log of the common factor by which model j's scaled rows are
    model i's (negative: j's rows are smaller, j came later), from one tensor's ``(n, rows, cols)``
    sampled blocks; NaN where fewer than ``MIN_ROWS`` rows are scaled copies, and for pairs not in
    ``pairs`` (None: every pair)."""
    stack = np.asarray(blocks, dtype=np.float64)
    n = len(stack)
    logs = np.full((n, n), np.nan)
    np.fill_diagonal(logs, 0.0)
    chosen = np.array(
        [(i, j) for i in range(n) for j in range(i + 1, n)] if pairs is None else list(pairs), dtype=np.int64
    ).reshape(-1, 2)
    for start in range(0, len(chosen), _PAIRS_PER_CHUNK):
        first, second = chosen[start : start + _PAIRS_PER_CHUNK].T
        factors = row_factors(stack[first], stack[second])
        valid = np.isfinite(factors) & (factors > 0)
        enough = valid.sum(axis=1) >= MIN_ROWS
        if not enough.any():
            continue
        median = np.nanmedian(np.where(valid[enough], factors[enough], np.nan), axis=1)
        logs[first[enough], second[enough]] = np.log(median)
        logs[second[enough], first[enough]] = -np.log(median)
    return logs


# Pairs compared at once: 512 x 48 x 48 float64 blocks are 9 MB an array.
_PAIRS_PER_CHUNK = 512
# Up to this many models every pair's clock is read; above it, each model's ``CLOCK_NEIGHBOURS`` nearest
# (the tree's edges join near models; a pair left out gives no evidence, never wrong evidence).
ALL_PAIRS_UP_TO = 64
CLOCK_NEIGHBOURS = 16


def every_pair(n_models: int) -> bool:
    """Whether ``clock_pairs`` takes every pair of ``n_models`` models, whatever their distances."""
    return n_models <= ALL_PAIRS_UP_TO


def clock_pairs(distances: npt.ArrayLike) -> list[tuple[int, int]] | None:
    """The pairs ``(i, j)``, ``i < j``, whose clock to read, given the models' ``(n, n)`` distances: None
    (every pair) up to ``ALL_PAIRS_UP_TO`` models, else each model with its ``CLOCK_NEIGHBOURS`` nearest."""
    d = np.asarray(distances, dtype=np.float64)
    n = len(d)
    if every_pair(n):
        return None
    d = np.where(np.isfinite(d), d, np.inf)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :CLOCK_NEIGHBOURS]
    return sorted({(min(i, int(j)), max(i, int(j))) for i in range(n) for j in nearest[i]})


def combined_log_factors(
    per_tensor: Sequence[npt.NDArray[np.float64]], n_models: int
) -> npt.NDArray[np.float64]:
    """``(n, n)`` the median over tensors of ``pair_log_factors`` where defined (NaN where no tensor
    measured the pair): one optimiser decays every embedding by the same factor."""
    if not per_tensor:
        return np.full((n_models, n_models), np.nan)
    stacked = np.stack(per_tensor)
    measured = np.isfinite(stacked).any(axis=0)
    out = np.full((n_models, n_models), np.nan)
    out[measured] = np.nanmedian(stacked[:, measured], axis=0)
    return out


def decay_evidence(log_factors: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """+1 where a pair's clock says ``i -> j`` (j's rows decayed from i's), -1 for ``j -> i``, 0 where it
    says nothing (not measured, or no decay beyond rounding); elementwise."""
    f = np.asarray(log_factors, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        telling = np.isfinite(f) & (np.abs(f) >= MIN_DECAY)
    return np.asarray(np.where(telling, -np.sign(np.where(telling, f, 0.0)), 0.0), dtype=np.float64)
