"""Directed accuracy of the default settings on built graphs, and the confidence of every wrong edge.

Runs on whichever mothertree is importable, so two versions compare on the same graphs in one sitting:

    python benchmarks/default_accuracy.py .bench/shapes/*                  # this checkout
    git worktree add /tmp/old <rev>
    PYTHONPATH=/tmp/old/src python benchmarks/default_accuracy.py .bench/shapes/*   # that revision
"""

from __future__ import annotations

import sys
from pathlib import Path

from mothertree.evaluation.truth import load_edges
from mothertree.pipeline import recover


def main(graphs: list[str]) -> None:
    right = total = sure_wrong = 0
    for graph in map(Path, graphs):
        truth = load_edges(graph / "truth.json")
        result = recover([graph])
        wrong = sorted((e.confidence for e in result.edges if (e.parent, e.child) not in truth), reverse=True)
        right += len(truth) - len(wrong)
        total += len(truth)
        sure_wrong += sum(c > 0.75 for c in wrong)
        confidences = ", ".join(f"{c:.3f}" for c in wrong) or "-"
        print(f"| `{graph.name}` | {len(truth) - len(wrong)}/{len(truth)} | {confidences} |")
    print(f"| all | {right}/{total} | {sure_wrong} wrong above 0.75 |")


if __name__ == "__main__":
    main(sys.argv[1:])
