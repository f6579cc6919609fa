"""The sweep behind the constants of ``mothertree.tree.direction`` (docs/DESIGN.md, "Direction").

On the tuning shapes (``mothertree.zoo.shapes.TUNING``, built under ``.bench/shapes`` by
``make bench-shapes``), for each setting: edges right, wrong edges above confidence 0.75, and the wrong
edges the confidences predict (sum of 1 - confidence). Features are read once per shape.

    python benchmarks/direction_sweep.py
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from shapes_bench import SHAPES_DIR  # noqa: E402

from mothertree.evaluation.truth import load_edges  # noqa: E402
from mothertree.pipeline import read_features  # noqa: E402
from mothertree.tree import direction  # noqa: E402
from mothertree.tree.recover import TreeRecovery  # noqa: E402
from mothertree.zoo.build import build_graph  # noqa: E402
from mothertree.zoo.shapes import TUNING  # noqa: E402

BETAS = (0.5, 1.0, 1.5, 2.0)
FORK_STRENGTHS = (0.0, 10.0)
NORM_PRIORS = (0.5, 2.0 / 3.0)


def main() -> None:
    graphs = []
    for spec in TUNING:
        graph = build_graph(spec, SHAPES_DIR / spec.name, quiet=True).path
        (features,), _ = read_features([graph], ranks="auto")
        graphs.append((features, load_edges(graph / "truth.json")))
    print("| β | angles | norm prior | edges right | wrong above 0.75 | expected wrong |")
    print("|---|---|---|---|---|---|")
    for beta, strength, prior in itertools.product(BETAS, FORK_STRENGTHS, NORM_PRIORS):
        # The constants are module defaults; set here, for this sweep only.
        direction.root_log_posterior.__kwdefaults__["beta"] = beta
        direction.fork_scores.__defaults__ = (strength,)
        direction.SIGN_PRIOR["norm"] = {1.0: prior, -1.0: 1.0 - prior}
        edges = [
            (e.confidence, (e.parent, e.child) in truth)
            for features, truth in graphs
            for e in TreeRecovery().fit(features).edges_
        ]
        right = sum(ok for _, ok in edges)
        sure_wrong = sum(c > 0.75 and not ok for c, ok in edges)
        expected = sum(1.0 - c for c, _ in edges)
        print(
            f"| {beta} | {strength:g} | {prior:.2f} | {right}/{len(edges)} | {sure_wrong} | {expected:.1f} |"
        )


if __name__ == "__main__":
    main()
