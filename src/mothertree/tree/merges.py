"""Merges: a model that is a combination of two or three others of the collection, found from distances alone.

A linear merge ``M = (1 - t) A + t B`` lies on the segment between its parents; a SLERP of two nearby
models lies on it up to second order; a TIES merge ``B + (trim(A - B) + trim(B' - B)) / 2`` lies near the
middle of the segment between its two fine-tunes, off it by what the trimming dropped. A fine-tune does
not: its update is a direction of its own, nearly orthogonal (in millions of dimensions) to every other
model's difference. So for each model ``c`` and each pair ``(a, b)`` of its nearest models, the nearest
point of the segment ``a``-``b`` to ``c`` is found from the squared distances alone (the three distances
fix the triangle):

    t* = <c - a, b - a> / |b - a|^2,  with  <c - a, b - a> = (S_ca + S_ab - S_cb) / 2,
    residual^2 = S_ca - t* (S_ca + S_ab - S_cb) / 2,

(``segment_fit``), and ``c`` is a merge of ``a`` and ``b`` when ``t*`` is inside the segment
(``MIN_WEIGHT <= t* <= 1 - MIN_WEIGHT``) and the residual is small against ``c``'s distance to the nearer
of the two (``residual <= MAX_RESIDUAL * min(d_ca, d_cb)``).

A merge of three models (a model soup, task arithmetic onto a base: ``0.2 R + 0.4 A + 0.4 B``) lies in
their triangle, off every segment between two of them (the mean of three orthogonal fine-tunes is 0.5 of
its distance to the nearest off each side). The same reasoning on the plane of ``a``, ``b``, ``e``: with
``G`` the Gram matrix of ``b - a`` and ``e - a`` and ``g`` their inner products with ``c - a`` (all from
squared distances), the weights of ``b`` and ``e`` solve ``G w = g``, ``a`` has ``1 - sum(w)``, and
``residual^2 = S_ca - w . g`` (``triangle_fit``). Three parents are tried among ``c``'s nearest models and
replace the best pair only when every weight is at least ``MIN_WEIGHT`` and the residual is smaller: a
merge of two gives a third model no weight, so it stays a merge of two.

Why convex only: a parent of a linear merge is an affine combination of its merge and its other parent
(``A = 2M - B``), with a weight outside ``[0, 1]``; only the merge lies between the other two. The price:
task arithmetic with weights summing above one (``B + tau_A + tau_B``) is no convex combination of
models of the collection and is not recognised. What a chain's middle model looks like: for a chain
``p -> c -> g`` with orthogonal updates of equal size, ``c`` is ``1/sqrt(2) = 0.71`` of its distance off the
segment ``p``-``g``; ``MAX_RESIDUAL`` stays well below that.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# How far off the segment a merge may lie, relative to its distance to the nearer parent. Measured on
# tiny BERTs (tests/test_merge_relations.py): linear merges 0.000, SLERP 0.008; the middle of a chain
# 0.71, a fan's root between two grandchildren 0.74, and a TIES merge 0.73, which is therefore not told
# from them here (features/sparse_merges.py reads it from the weights).
MAX_RESIDUAL = 0.35
# The smallest share of a parent in a merge; below it the model is its other parent's near copy.
MIN_WEIGHT = 0.1
# How many of a model's nearest models are tried as one of its parents (the other may be any model).
NEAREST = 10


@dataclass(frozen=True)
class Merge:
    """``child`` is ``sum(weight * parent)`` over ``parents`` (weights summing to 1), off that by
    ``residual`` (relative to its distance to the nearest parent)."""

    child: int
    parents: tuple[tuple[int, float], ...]
    residual: float


def segment_fit(squared: npt.NDArray[np.float64], c: int, a: int, b: int) -> tuple[float, float]:
    """(t*, relative residual) of model ``c`` against the segment from ``a`` to ``b`` (module docstring);
    ``squared`` holds the squared distances. The residual is relative to ``c``'s distance to the nearer
    of ``a`` and ``b``; ``inf`` when ``a`` and ``b`` coincide."""
    t, residual = segment_fits(squared, c, a, np.array([b]))
    return float(t[0]), float(residual[0])


def segment_fits(
    squared: npt.NDArray[np.float64], c: int, a: int, b: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``segment_fit`` of ``c`` against the segments from ``a`` to each model of ``b`` at once."""
    s_ca, s_cb, s_ab = squared[c, a], squared[c, b], squared[a, b]
    with np.errstate(divide="ignore", invalid="ignore"):
        inner = (s_ca + s_ab - s_cb) / 2.0
        t = np.where(s_ab > 0, inner / s_ab, 0.0)
        nearer = np.minimum(s_ca, s_cb)
        residual = np.where(
            (s_ab > 0) & (nearer > 0), np.sqrt(np.maximum(s_ca - t * inner, 0.0) / nearer), np.inf
        )
    return t, residual


def triangle_fit(
    squared: npt.NDArray[np.float64], c: int, a: int, b: int, e: int
) -> tuple[npt.NDArray[np.float64], float]:
    """(weights of ``a``, ``b``, ``e``, relative residual) of model ``c`` against the plane of the three
    (module docstring): the weights sum to 1; the residual is relative to ``c``'s distance to the nearest
    of them, ``inf`` when the three do not span a plane."""
    weights, residual = _triangle_fits(squared, c, np.array([[a, b, e]]))
    return weights[0], float(residual[0])


def _triangle_fits(
    squared: npt.NDArray[np.float64], c: int, triples: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``triangle_fit`` of ``c`` against each row ``(a, b, e)`` of ``triples``: (k, 3) weights, (k,)."""
    a, b, e = triples.T
    s_ab, s_ae, s_be = squared[a, b], squared[a, e], squared[b, e]
    s_ca, s_cb, s_ce = squared[c, a], squared[c, b], squared[c, e]
    gram_be = (s_ab + s_ae - s_be) / 2.0  # <b - a, e - a>
    g_b, g_e = (s_ca + s_ab - s_cb) / 2.0, (s_ca + s_ae - s_ce) / 2.0  # <c - a, b - a>, <c - a, e - a>
    det = s_ab * s_ae - gram_be**2
    with np.errstate(divide="ignore", invalid="ignore"):
        flat = det <= 1e-12 * np.maximum(s_ab * s_ae, np.finfo(np.float64).tiny)  # no plane: a coincidence
        w_b = np.where(flat, 0.0, (s_ae * g_b - gram_be * g_e) / det)
        w_e = np.where(flat, 0.0, (s_ab * g_e - gram_be * g_b) / det)
        nearest = np.minimum(np.minimum(s_ca, s_cb), s_ce)
        residual = np.where(
            ~flat & (nearest > 0), np.sqrt(np.maximum(s_ca - w_b * g_b - w_e * g_e, 0.0) / nearest), np.inf
        )
    return np.stack([1.0 - w_b - w_e, w_b, w_e], axis=1), residual


def find_merges(
    squared: npt.NDArray[np.float64],
    *,
    max_residual: float = MAX_RESIDUAL,
    min_weight: float = MIN_WEIGHT,
    nearest: int = NEAREST,
) -> list[Merge]:
    """The models that are merges of two or three others (indices into ``squared``, the squared distances).

    Each model ``c`` is fitted against every pair of one of its ``nearest`` models and any other model (a
    merge of two distant models can have other models nearer than its farther parent, but never both
    parents far), and against every three of its ``nearest`` models; the best fit that passes is its
    merge. A model that is a parent of a merge found is not a merge itself (the merge nearest its span
    wins), and merges never share a child.
    """
    n = squared.shape[0]
    found = [merge for c in range(n) if (merge := _best_merge(squared, c, max_residual, min_weight, nearest))]
    found.sort(key=lambda merge: merge.residual)
    kept: list[Merge] = []
    parents: set[int] = set()
    children: set[int] = set()
    for merge in found:
        its_parents = {p for p, _ in merge.parents}
        if merge.child in parents or its_parents & children:
            continue
        kept.append(merge)
        children.add(merge.child)
        parents.update(its_parents)
    return sorted(kept, key=lambda merge: merge.child)


def _best_merge(
    squared: npt.NDArray[np.float64], c: int, max_residual: float, min_weight: float, nearest: int
) -> Merge | None:
    """The best fit of ``c`` as a merge of two, or of three, of the other models; None if none passes."""
    n = squared.shape[0]
    others = np.array([j for j in range(n) if j != c], dtype=np.int64)
    near = [int(j) for j in np.argsort(squared[c], kind="stable") if j != c][:nearest]
    best: Merge | None = None
    for a in near:
        b = others[others != a]
        t, residual = segment_fits(squared, c, a, b)
        ok = (t >= min_weight) & (t <= 1 - min_weight) & (residual <= max_residual)
        if ok.any():
            k = int(np.flatnonzero(ok)[np.argmin(residual[ok])])
            if best is None or residual[k] < best.residual:
                best = Merge(c, ((a, 1.0 - float(t[k])), (int(b[k]), float(t[k]))), float(residual[k]))
    if len(near) >= 3:  # four parents and more are not tried
        triples = np.array(list(itertools.combinations(near, 3)), dtype=np.int64)
        weights, residual = _triangle_fits(squared, c, triples)
        ok = (weights >= min_weight).all(axis=1) & (residual <= max_residual)
        if ok.any():
            k = int(np.flatnonzero(ok)[np.argmin(residual[ok])])
            if best is None or residual[k] < best.residual:
                parents = tuple((int(p), float(w)) for p, w in zip(triples[k], weights[k], strict=True))
                best = Merge(c, parents, float(residual[k]))
    return best
