"""Direction's cue weights, fitted on development graphs and checked on graphs the fit never saw.

Section (l) of ``docs/RESULTS.md`` (issue 11, item 3). The root posterior of ``mothertree.tree.direction``
adds each cue's log-likelihood with a weight (``CUE_WEIGHTS``): the cues are not independent given the
tree (the norm and the skew summarise the same per-tensor norm changes), so counting each at full weight
makes two cues that lean the same way surer than their evidence. This fits two weights, one shared by
the norm and the skew, one for the kurtosis, on a grid, by the log-loss of every recovered edge's
confidence (right or wrong: placed and pointing the right way, its relation aside) on the *development*
graphs, the ones earlier sessions chose constants on:

- the shapes zoo's ``TUNING`` and ``HELDOUT`` recipes (``.bench/shapes``, ``make bench-shapes``),
- the hub splits' and the clock spec's ``small`` size (``.bench/hub``, ``.bench/clock``; ``make bench-hub``,
  ``make bench-clock``),
- the zoo's ``small`` splits where ``make bench-small`` built them (``.bench/zoo``; skipped when absent).

It then reports, for the fitted weights and for the weights before (all 1), on the *held-out* graphs
(the shapes' ``FRESH`` recipes, the hub and clock specs' ``heldout`` size, the zoo's ``heldout`` splits
where built): edges right, wrong edges, wrong edges above 0.75, the wrong edges the confidences predict, and
how likely that many wrong edges were under them. Features are read once per graph.

    python benchmarks/direction_calibration.py [--write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import platform
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from sections import CALIBRATION  # noqa: E402

from mothertree.evaluation.metrics import chance_of_at_least  # noqa: E402
from mothertree.evaluation.relations import wrong_edges  # noqa: E402
from mothertree.features.featureset import FeatureSet  # noqa: E402
from mothertree.io.types import BrokenModel  # noqa: E402
from mothertree.pipeline import read_features, recover_trees  # noqa: E402
from mothertree.tree import direction  # noqa: E402
from mothertree.zoo.build import build_graph  # noqa: E402
from mothertree.zoo.shapes import FRESH, HELDOUT, TUNING  # noqa: E402
from mothertree.zoo.spec import load_spec  # noqa: E402

BENCH = ROOT / ".bench"
NORM_AND_SKEW_WEIGHTS = (0.25, 0.35, 0.5, 0.7, 1.0, 1.4)
KURTOSIS_WEIGHTS = (0.5, 0.7, 1.0, 1.4)
ZOO_SMALL = ("vision-ft", "text-ft", "text-lora-f", "text-lora-v", "text-mixed")
ZOO_HELDOUT = ("vision-ft", "text-ft", "text-lora-v", "text-mixed")
UNDETERMINED = direction.DETERMINED_ABOVE


@dataclass(frozen=True)
class Graph:
    name: str
    group: str  # "development" or "held-out"
    features: list[FeatureSet]
    broken: list[BrokenModel]
    truth: dict[str, object]


@dataclass(frozen=True)
class Tally:
    edges: int
    right: int
    wrong: int
    sure_wrong: int
    expected: float
    log_loss: float
    chance: float


def graphs() -> list[Graph]:
    """Every graph of both groups: the shapes and hub splits built if missing, zoo splits where built."""
    folders: list[tuple[str, str, Path]] = []
    for specs, group in ((TUNING, "development"), (HELDOUT, "development"), (FRESH, "held-out")):
        for spec in specs:
            folders.append(
                (spec.name, group, build_graph(spec, BENCH / "shapes" / spec.name, quiet=True).path)
            )
    for name, folder in (("hub", "hub"), ("hub-vision", "hub"), ("clock", "clock")):
        for size, group in (("small", "development"), ("heldout", "held-out")):
            spec = load_spec(name).sized(size)
            built = build_graph(spec, BENCH / folder / spec.name, quiet=True).path
            folders.append((spec.name, group, built))
    for names, size, group in ((ZOO_SMALL, "small", "development"), (ZOO_HELDOUT, "heldout", "held-out")):
        for name in names:
            folder = BENCH / "zoo" / f"{name}-{size}"
            if (folder / "truth.json").is_file():
                folders.append((folder.name, group, folder))
            else:
                print(f"not built, left out: {folder} (make bench-small)", file=sys.stderr)
    found = []
    for name, group, folder in folders:
        features, broken = read_features([folder], ranks="auto")
        found.append(Graph(name, group, features, broken, json.loads((folder / "truth.json").read_text())))
    return found


def edges_of(graph: Graph) -> list[tuple[float, bool]]:
    """Every recovered edge's confidence and whether it is right, with the weights set now."""
    result = recover_trees(graph.features, broken=graph.broken)
    wrong = {(e.parent, e.child) for e in wrong_edges(result, graph.truth)}
    return [(e.confidence, (e.parent, e.child) not in wrong) for e in result.edges]


def tally(edges: Sequence[tuple[float, bool]]) -> Tally:
    wrong = [c for c, right in edges if not right]
    clipped = [min(max(c, 1e-6), 1 - 1e-6) for c, _ in edges]
    loss = -sum(math.log(c if right else 1 - c) for c, (_, right) in zip(clipped, edges, strict=True))
    return Tally(
        edges=len(edges),
        right=len(edges) - len(wrong),
        wrong=len(wrong),
        sure_wrong=sum(c > UNDETERMINED for c in wrong),
        expected=sum(1 - c for c, _ in edges),
        log_loss=loss,
        chance=chance_of_at_least([c for c, _ in edges], len(wrong)),
    )


def with_weights(norm_and_skew: float, kurtosis: float) -> None:
    # The weights are a module constant; set here, for this benchmark only.
    direction.CUE_WEIGHTS.update(norm=norm_and_skew, skew=norm_and_skew, kurtosis=kurtosis)


def measure(
    found: Iterable[Graph], norm_and_skew: float, kurtosis: float
) -> dict[str, list[tuple[float, bool]]]:
    with_weights(norm_and_skew, kurtosis)
    return {graph.name: edges_of(graph) for graph in found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="put the section into docs/RESULTS.md")
    args = parser.parse_args()
    shipped = (direction.CUE_WEIGHTS["norm"], direction.CUE_WEIGHTS["kurtosis"])
    found = graphs()
    grid: dict[tuple[float, float], dict[str, list[tuple[float, bool]]]] = {}
    development: dict[tuple[float, float], Tally] = {}
    for weights in sorted({*itertools.product(NORM_AND_SKEW_WEIGHTS, KURTOSIS_WEIGHTS), shipped}):
        grid[weights] = measure(found, *weights)
        development[weights] = tally(
            [e for g in found if g.group == "development" for e in grid[weights][g.name]]
        )
        print(f"weights {weights}: {development[weights]}", file=sys.stderr)
    with_weights(*shipped)
    fitted = min(development, key=lambda w: development[w].log_loss)
    CALIBRATION.publish(section(found, grid, development, fitted, shipped), args.write)


def section(
    found: Sequence[Graph],
    grid: dict[tuple[float, float], dict[str, list[tuple[float, bool]]]],
    development: dict[tuple[float, float], Tally],
    fitted: tuple[float, float],
    shipped: tuple[float, float],
) -> list[str]:
    today = dt.date.today().isoformat()
    lines = [
        CALIBRATION.start,
        "## (m) Direction calibration: cue weights fitted on development graphs, checked on held-out ones",
        "",
        f"`python benchmarks/direction_calibration.py` on {platform.machine()}, {today}. "
        "The root posterior (`tree/direction.py`) weighs each cue's log-likelihood (`CUE_WEIGHTS`); "
        "one weight for the norm and the skew (two summaries of the same per-tensor norm changes), one for "
        "the kurtosis. Fitted on a grid by the log-loss of every recovered edge's confidence (right: placed "
        "and pointing the right way) on the development graphs; reported on the held-out ones, which no "
        "constant of the direction step was chosen on. *Expected*: the sum of 1 - confidence; "
        "*P(≥ wrong)*: the chance of that many wrong edges or more under the confidences.",
        "",
        "Development graphs: " + ", ".join(f"`{g.name}`" for g in found if g.group == "development") + ".",
        "Held-out graphs: " + ", ".join(f"`{g.name}`" for g in found if g.group == "held-out") + ".",
        "",
        "| norm and skew | kurtosis | log-loss | right | wrong | above 0.75 | expected wrong |",
        "|---|---|---|---|---|---|---|",
    ]
    for weights, t in sorted(development.items()):
        mark = " (fitted)" if weights == fitted else " (before)" if weights == shipped else ""
        lines.append(
            f"| {weights[0]:g}{mark} | {weights[1]:g} | {t.log_loss:.1f} | {t.right}/{t.edges} | "
            f"{t.wrong} | {t.sure_wrong} | {t.expected:.1f} |"
        )
    lines += [
        "",
        "Per graph, before and with the fitted weights:",
        "",
        "| graph | group | edges | right | wrong above 0.75 | expected wrong (observed) | P(≥ wrong) |",
        "|---|---|---|---|---|---|---|",
    ]
    for graph in found:
        a, b = tally(grid[shipped][graph.name]), tally(grid[fitted][graph.name])
        lines.append(
            f"| `{graph.name}` | {graph.group} | {a.edges} | {a.right} → {b.right} | {a.sure_wrong} → "
            f"{b.sure_wrong} | {a.expected:.2f} → {b.expected:.2f} (observed {a.wrong} → {b.wrong}) | "
            f"{a.chance:.2f} → {b.chance:.2f} |"
        )
    lines += [
        "",
        "| group | weights | edges | right | wrong | above 0.75 | expected | P(≥ wrong) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for group in ("development", "held-out"):
        for label, weights in (("before", shipped), ("fitted", fitted)):
            t = tally([e for g in found if g.group == group for e in grid[weights][g.name]])
            lines.append(
                f"| {group} | {label} {weights} | {t.edges} | {t.right} | {t.wrong} | {t.sure_wrong} | "
                f"{t.expected:.1f} | {t.chance:.2f} |"
            )
    lines += [
        "",
        f"Shipped: `CUE_WEIGHTS` {shipped} (norm and skew, kurtosis); the fit is reported here, not applied "
        "(`docs/DESIGN.md`, Direction, says why).",
        CALIBRATION.end,
    ]
    return lines


if __name__ == "__main__":
    main()
