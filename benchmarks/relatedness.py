"""How far apart related and unrelated models sit, by each statistic over tensors (docs/DESIGN.md).

For every built graph with a ``truth.json`` under ``.bench``: per compared tensor the relative distance
RMS(W_i - W_j) / RMS of the two weights, then its mean, median, lower quartile and minimum over tensors;
printed as the largest value along a true edge and the smallest between two models of different true
trees. The cut ``UNRELATED_ABOVE`` must sit between the two columns for the statistic ``--trees auto``
uses (``features.reductions.relatedness``).

    python benchmarks/relatedness.py                 # every graph under .bench
    python benchmarks/relatedness.py .bench/zoo/*    # some
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
from scipy.sparse.csgraph import connected_components

from mothertree.evaluation.truth import load_edges
from mothertree.pipeline import read_features

ROOT = Path(__file__).resolve().parent.parent
STATISTICS = {
    "mean": lambda r: np.nanmean(r, axis=0),
    "median": lambda r: np.nanmedian(r, axis=0),
    "lower quartile": lambda r: np.nanquantile(r, 0.25, axis=0),
    "minimum": lambda r: np.nanmin(r, axis=0),
}


def graph_extremes(graph: Path) -> dict[str, tuple[float, float]]:
    """Per statistic: (largest along a true edge, smallest across true trees; NaN if one tree)."""
    truth = load_edges(graph / "truth.json")
    found: dict[str, tuple[float, float]] = {}
    features, _ = read_features([graph])
    for group in features:
        position = {model: i for i, model in enumerate(group.model_ids)}
        for kept, copies in group.metadata.get("aliases", {}).items():
            for copy in copies:
                position.setdefault(copy, position[kept])
        edges = [(position[p], position[c]) for p, c in truth if p in position and c in position]
        linked = np.zeros((group.n_models, group.n_models), dtype=bool)
        for p, c in edges:
            linked[p, c] = linked[c, p] = True
        _, tree = connected_components(linked, directed=False)
        across = tree[:, None] != tree[None, :]
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            relative = group.rms_distances / group.pair_scales()
            for name, statistic in STATISTICS.items():
                values = statistic(relative)
                along = max((values[p, c] for p, c in edges), default=np.nan)
                apart = float(values[across].min()) if across.any() else np.nan
                old_along, old_apart = found.get(name, (np.nan, np.nan))
                found[name] = (float(np.fmax(along, old_along)), float(np.fmin(apart, old_apart)))
    return found


def main(graphs: list[Path]) -> None:
    overall: dict[str, tuple[float, float]] = {}
    print("| graph | " + " | ".join(f"{name}: edge max / across min" for name in STATISTICS) + " |")
    print("|---|" + "---|" * len(STATISTICS))
    for graph in graphs:
        extremes = graph_extremes(graph)
        cells = [f"{extremes[name][0]:.3f} / {extremes[name][1]:.3f}" for name in STATISTICS]
        print(f"| `{graph.relative_to(ROOT / '.bench')}` | " + " | ".join(cells) + " |", flush=True)
        for name, (along, apart) in extremes.items():
            old_along, old_apart = overall.get(name, (np.nan, np.nan))
            overall[name] = (float(np.fmax(along, old_along)), float(np.fmin(apart, old_apart)))
    cells = [f"{overall[name][0]:.3f} / {overall[name][1]:.3f}" for name in STATISTICS]
    print("| **all** | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    chosen = [Path(arg).resolve() for arg in sys.argv[1:]] or sorted(
        path.parent for path in (ROOT / ".bench").glob("**/truth.json")
    )
    main(chosen)
