"""Edge confidence: an edge's margins mapped to the probability that it is right, fit on the zoo.

An edge is right when both its placement and its direction are. Each has a margin in [0, 1]
(``tree.orient``): how much nearer the chosen parent is than the runner-up, and how much of the direction
cue's evidence separates the root from the best root inside the child's subtree. The smaller margin is the
weaker link, and the odds of the edge being right grow about in proportion to it::

    confidence = sigmoid(INTERCEPT + SLOPE * log(min(placement, direction) + MARGIN_FLOOR))

``INTERCEPT`` and ``SLOPE`` are a logistic fit (maximum likelihood, ``benchmarks/calibrate.py``) on every
edge recovered with the default settings from the tuning graphs: the five ``small`` zoo splits, the
full-size ``vision-ft`` split, their pruned / fp16 / int8 variants and the two MiniLM graphs of
``make bench`` (442 edges, 6 of them wrong). The held-out splits (``--size heldout``: other seeds, tasks
and learning rates) were not used; ``docs/RESULTS.md`` compares predicted and observed accuracy on both.
The fit rests on few errors: read 0.99 as "about one in a hundred such edges is wrong on graphs like the
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
