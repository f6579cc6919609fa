"""The directed cost matrix of MoTHer: weight distance plus a penalty for edges against the kurtosis trend.

``M = D + lam * mean(D) * T`` where ``T[i, j] = 1`` when the edge parent ``i`` -> child ``j`` contradicts
the expected trend of kurtosis along training (Horwitz et al., ICLR 2025, Sec. 4). ``mean(D)`` is taken
over the models of one tree: across unrelated trees it would measure the gap between them, and a penalty
that size swamps every real edge.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from .._choices import DEFAULT_LAM as DEFAULT_LAM
from ..errors import InvalidParameterError

KurtosisTrend = Literal["falls", "rises"]
KURTOSIS_TRENDS: tuple[KurtosisTrend, ...] = ("falls", "rises")


def direction_penalty(kurtosis: npt.ArrayLike, direction: KurtosisTrend = "falls") -> npt.NDArray[np.float64]:
    """``(n, n)`` matrix, 1 where edge ``i -> j`` goes against the trend, else 0.

    ``direction="falls"``: fine-tuning lowers kurtosis, so a child with higher kurtosis than its parent is
    penalised. ``"rises"``: the reverse (continued pre-training). Equal kurtosis is never penalised.
    """
    k = np.asarray(kurtosis, dtype=np.float64)
    if direction == "falls":
        against = k[None, :] > k[:, None]
    elif direction == "rises":
        against = k[None, :] < k[:, None]
    else:
        raise InvalidParameterError(
            f"unknown direction `{direction}`", hint=f"use one of: {', '.join(KURTOSIS_TRENDS)}"
        )
    return against.astype(np.float64)


def directed_costs(
    distances: npt.ArrayLike,
    kurtosis: npt.ArrayLike,
    *,
    lam: float = DEFAULT_LAM,
    direction: KurtosisTrend = "falls",
) -> npt.NDArray[np.float64]:
    """``(n, n)`` costs ``D + lam * mean(D) * T``, infinite diagonal; ``costs[i, j]`` is edge i -> j."""
    d = np.asarray(distances, dtype=np.float64)
    n_models = d.shape[0]
    if lam < 0:
        raise InvalidParameterError(f"`lam` must be >= 0, got {lam}")
    off_diagonal = d[~np.eye(n_models, dtype=bool)]
    scale = float(off_diagonal.mean()) if off_diagonal.size else 0.0
    costs = d + lam * scale * direction_penalty(kurtosis, direction)
    np.fill_diagonal(costs, np.inf)
    return costs
