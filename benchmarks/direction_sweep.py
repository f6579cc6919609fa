"""The sweep behind the constants of ``mothertree.tree.direction`` (docs/DESIGN.md, "Direction").

On the development shapes (``mothertree.zoo.shapes.TUNING`` and ``HELDOUT``, built under ``.bench/shapes``
by ``make bench-shapes``; never the ``FRESH`` ones), for each setting: edges right, wrong edges above
confidence 0.75, and the wrong edges the confidences predict (sum of 1 - confidence). Features are read
once per shape.

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
from mothertree.tree import direction, recover  # noqa: E402
from mothertree.tree.recover import TreeRecovery  # noqa: E402
from mothertree.zoo.build import build_graph  # noqa: E402
from mothertree.zoo.shapes import HELDOUT, TUNING  # noqa: E402

BETAS = (1.0, 1.5, 2.0, 3.0)
FORK_STRENGTHS = (0.0, 10.0)
NORM_PRIORS = (0.5, 2.0 / 3.0)
WITH_SKEW = (False, True)


def main() -> None:
    graphs = []
    for spec in (*TUNING, *HELDOUT):
        graph = build_graph(spec, SHAPES_DIR / spec.name, quiet=True).path
        (features,), _ = read_features([graph], ranks="auto")
        graphs.append((features, load_edges(graph / "truth.json")))
    print("| skew cue | β | angles | norm prior | edges right | wrong above 0.75 | expected wrong |")
    print("|---|---|---|---|---|---|---|")
    every_cue = recover.CUES_OF["auto"]
    for skew, beta, strength, prior in itertools.product(WITH_SKEW, BETAS, FORK_STRENGTHS, NORM_PRIORS):
        recover.CUES_OF["auto"] = every_cue if skew else tuple(c for c in every_cue if c[0] != "skew")
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
            f"| {'yes' if skew else 'no'} | {beta} | {strength:g} | {prior:.2f} | {right}/{len(edges)} | "
            f"{sure_wrong} | {expected:.1f} |"
        )


if __name__ == "__main__":
    main()
