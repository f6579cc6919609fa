"""Fit and check the edge-confidence calibration of ``mothertree.tree.calibration``.

``fit`` is how ``INTERCEPT`` and ``SLOPE`` are obtained: a maximum-likelihood fit of "the edge is right"
with ``P = sigmoid(intercept + slope * log(placement margin + MARGIN_FLOOR)) * direction probability``
(a 1e-2 ridge only keeps it finite when no edge is wrong). ``reliability_rows`` bins edges by
confidence and compares the mean predicted probability with the observed accuracy: calibrated means they
agree, and accuracy rises from bin to bin.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize

from mothertree.tree.calibration import MARGIN_FLOOR

# Upper edges of the confidence bins of the reliability table (the last bin ends at 1).
BIN_EDGES = (0.9, 0.98)


def fit(
    placement: Sequence[float], direction: Sequence[float], correct: Sequence[bool]
) -> tuple[float, float]:
    """``(intercept, slope)`` of the placement probability, given each edge's direction probability."""
    x = np.log(np.clip(np.asarray(placement, dtype=np.float64), 0.0, 1.0) + MARGIN_FLOOR)
    q = np.clip(np.asarray(direction, dtype=np.float64), 1e-6, 1.0)
    y = np.asarray(correct, dtype=np.float64)

    def negative_log_likelihood(theta: np.ndarray) -> float:
        log_placed = -np.logaddexp(0.0, -(theta[0] + theta[1] * x))
        log_right = log_placed + np.log(q)
        log_wrong = np.log(-np.expm1(np.minimum(log_right, -1e-12)))
        nll = -np.sum(y * log_right + (1.0 - y) * log_wrong)
        return float(nll + 1e-2 * np.sum(theta**2))

    result = minimize(negative_log_likelihood, x0=np.array([3.0, 1.0]), method="BFGS")
    return float(result.x[0]), float(result.x[1])


def reliability_rows(confidence: Sequence[float], correct: Sequence[bool]) -> list[str]:
    """A markdown table: per confidence bin, edges, mean confidence and observed directed accuracy."""
    c = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=bool)
    rows = [
        "| confidence | edges | mean confidence | observed accuracy | wrong edges |",
        "|---|---|---|---|---|",
    ]
    bounds = (0.0, *BIN_EDGES, 1.0)
    for low, high in zip(bounds[:-1], bounds[1:], strict=True):
        inside = (c >= low) & ((c < high) if high < 1.0 else (c <= high))
        if not inside.any():
            rows.append(f"| {low:.2f}-{high:.2f} | 0 | - | - | - |")
            continue
        rows.append(
            f"| {low:.2f}-{high:.2f} | {int(inside.sum())} | {c[inside].mean():.3f} | "
            f"{y[inside].mean():.1%} | {int((~y[inside]).sum())} |"
        )
    if c.size:
        rows.append(
            f"| all | {c.size} | {c.mean():.3f} | {y.mean():.1%} | {int((~y).sum())} "
            f"(expected from the confidences: {float((1.0 - c).sum()):.1f}) |"
        )
    return rows
