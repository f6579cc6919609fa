"""Edge confidence: the probability that an edge is right, placed right and pointing the right way.

Placement and direction are estimated apart and multiplied::

    confidence = placement_probability(placement margin) * direction_probability

The placement margin (``tree.orient``) is how much nearer the chosen parent is than the runner-up; its
probability is a logistic fit on the log margin::

    placement_probability = sigmoid(INTERCEPT + SLOPE * log(placement + MARGIN_FLOOR))

``INTERCEPT`` and ``SLOPE`` are a maximum-likelihood fit (``benchmarks/calibrate.py``) on every edge recovered
with the default settings from the tuning graphs: the five ``small`` zoo splits, the full-size ``vision-ft``
split, their pruned / fp16 / int8 variants and the two MiniLM graphs of ``make bench`` (442 edges, 6 of them
wrong), made before the direction posterior existed and kept since. ``direction_probability`` is the
posterior probability of the edge's direction over every root and cue sign (``tree/direction.py``); it is
not fit. ``docs/RESULTS.md`` compares the confidences with the wrong edges observed, on the graphs the fit
saw and on those it did not: read 0.99 as "about one in a hundred such edges is wrong on graphs like the
zoo's", not as a guarantee elsewhere.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

INTERCEPT = 6.63
SLOPE = 0.95
# Margins of exactly 0 (a tie) would have log -inf; below ~1e-3 the zoo's margins tell nothing more.
MARGIN_FLOOR = 1e-3


def placement_probability(
    placement: npt.ArrayLike, intercept: float = INTERCEPT, slope: float = SLOPE
) -> npt.NDArray[np.float64]:
    """Estimated probability that each model's parent is the right model (either direction)."""
    margin = np.clip(np.asarray(placement, dtype=np.float64), 0.0, 1.0)
    logit = intercept + slope * np.log(margin + MARGIN_FLOOR)
    return np.asarray(1.0 / (1.0 + np.exp(-logit)), dtype=np.float64)


def edge_confidence(
    placement: npt.ArrayLike,
    direction_probability: npt.ArrayLike,
    intercept: float = INTERCEPT,
    slope: float = SLOPE,
) -> npt.NDArray[np.float64]:
    """Estimated probability that each edge is right: placed right, and pointing the right way."""
    direction = np.clip(np.asarray(direction_probability, dtype=np.float64), 0.0, 1.0)
    return placement_probability(placement, intercept, slope) * direction
