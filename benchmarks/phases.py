"""Time and peak RSS of each phase of ``mothertree recover`` on one graph: ``phases.py GRAPH K [METHOD]``.

Run in a fresh process (``run.py`` starts it through ``peak_rss.py``), so the RSS figures are this
recovery's alone. Phases, each timed by calling its function: reading + features (the one tensor-major
loop), clustering (Ward into K trees, the paper's), and the tree step per cluster (``norm``: spanning
tree + root choice; ``falls``: the paper's directed costs + Chu-Liu-Edmonds). ``ru_maxrss`` only grows, so
each phase reports the peak so far. Prints JSON.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(graph: str, n_trees: int, method: str) -> None:
    from mothertree.pipeline import read_features
    from mothertree.tree.cluster import cluster_trees
    from mothertree.tree.recover import TreeRecovery

    report: dict[str, float] = {"imports_peak_mib": peak_mib()}
    started = time.perf_counter()
    feature_sets, _ = read_features([Path(graph)], ranks="auto")  # what `recover` reads by default
    features = max(feature_sets, key=lambda f: f.n_models)
    report |= {"read_s": time.perf_counter() - started, "read_peak_mib": peak_mib()}

    started = time.perf_counter()
    labels = cluster_trees(features.distances(), n_trees)
    report |= {"cluster_s": time.perf_counter() - started, "cluster_peak_mib": peak_mib()}

    started = time.perf_counter()
    for label in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == label)
        if members.size > 1:
            TreeRecovery(n_trees=1, direction=method).fit(features.subset(members))  # type: ignore[arg-type]
    report |= {"tree_s": time.perf_counter() - started, "tree_peak_mib": peak_mib()}
    report["n_models"] = features.n_models
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "norm")
