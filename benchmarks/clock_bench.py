"""Section (l) of ``docs/RESULTS.md``: the weight-decay clock (``features/decay.py``) on and off.

Each graph is recovered with the defaults twice from one reading of its weights: as it is, and with the
clock taken out (``FeatureSet.decay_log_factors = None``, so that only the norm, kurtosis and skew cues
and the angles at forks orient it). The ``clock`` spec's graphs and the hub splits' text fine-tunes train
their embedding tables, as real fine-tunes do (the other zoo and shapes specs freeze them to save CPU
time: there the clock reads nothing and nothing moves). Graphs are built under ``.bench`` if missing
(about 25 minutes of CPU training each spec the first time).

    python benchmarks/clock_bench.py [--write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from sections import CLOCK_SECTION  # noqa: E402

from mothertree.evaluation.relations import score_relations, wrong_edges  # noqa: E402
from mothertree.features.featureset import FeatureSet  # noqa: E402
from mothertree.pipeline import read_features, recover_trees  # noqa: E402
from mothertree.tree.direction import DETERMINED_ABOVE, clock_edges  # noqa: E402
from mothertree.zoo.build import build_graph  # noqa: E402
from mothertree.zoo.spec import load_spec  # noqa: E402

# (spec, size, folder under .bench)
GRAPHS = (
    ("clock", "small", "clock"),
    ("clock", "heldout", "clock"),
    ("hub", "small", "hub"),
    ("hub", "heldout", "hub"),
)


@dataclass(frozen=True)
class Row:
    graph: str
    setting: str
    edges: int
    directed: int
    wrong: int
    sure_wrong: int
    undetermined: int
    expected: float
    clocked: str


def measure(name: str, size: str, folder: str) -> list[Row]:
    spec = load_spec(name).sized(size)
    graph = build_graph(spec, ROOT / ".bench" / folder / spec.name, quiet=True).path
    truth = json.loads((graph / "truth.json").read_text())
    feature_sets, broken = read_features([graph], ranks="auto")
    rows = []
    for setting in ("with the clock", "without"):
        used = feature_sets if setting == "with the clock" else [_without_clock(f) for f in feature_sets]
        result = recover_trees(used, broken=broken)
        score = score_relations(result, truth)
        wrong = wrong_edges(result, truth)
        rows.append(
            Row(
                graph=spec.name,
                setting=setting,
                edges=score.n_edges,
                directed=score.n_directed_correct,
                wrong=len(wrong),
                sure_wrong=sum(e.confidence > DETERMINED_ABOVE for e in wrong),
                undetermined=sum(e.direction_probability <= DETERMINED_ABOVE for e in result.edges),
                expected=score.expected_wrong,
                clocked=_clocked(used, result) if setting == "with the clock" else "-",
            )
        )
        print(rows[-1], file=sys.stderr)
    return rows


def _without_clock(features: FeatureSet) -> FeatureSet:
    bare = features.subset(range(features.n_models))
    bare.decay_log_factors = None
    return bare


def _clocked(feature_sets: list[FeatureSet], result: object) -> str:
    """How many recovered fine-tuning edges the clock read, of how many."""
    read = total = 0
    for features in feature_sets:
        evidence = features.clock_evidence()
        at = {model: i for i, model in enumerate(features.model_ids)}
        pairs = [
            (at[e.parent], at[e.child])
            for e in result.edges  # type: ignore[attr-defined]
            if e.parent in at and e.child in at and e.relation == "finetune"
        ]
        total += len(pairs)
        read += clock_edges(pairs, evidence) if evidence is not None else 0
    return f"{read} of {total}"


def section(rows: list[Row]) -> list[str]:
    lines = [
        CLOCK_SECTION.start,
        "## (l) The weight-decay clock: direction whose sign no recipe sets",
        "",
        f"`python benchmarks/clock_bench.py` on {platform.machine()}, {dt.date.today().isoformat()}, "
        f"Python {platform.python_version()}. Each graph read once and recovered with the defaults, as it is "
        "and with the clock taken out (`FeatureSet.decay_log_factors = None`). The `clock` spec "
        "(`src/mothertree/zoo/specs/clock.yaml`) trains its models' embedding tables with AdamW: `small` is "
        "the hub split's cue-reversing chain rebuilt so (a root pre-trained 400 steps, two masked-token "
        "stages, a fine-tune off each) and a MiniLM chain of continued pre-training; `heldout` other roots, "
        "seeds and rates, one chain without weight decay (the clock stands still there) and a bf16 save "
        "(no clock across precisions). The hub splits' text fine-tunes train their embeddings too (section "
        "(k)); their LoRA and adapter edges leave them untouched, and so unread. *Clock*: recovered "
        "fine-tuning edges the clock read. *Wrong*: recovered edges no true edge explains; *sure*: of them, "
        "above 0.75; *expected*: the sum of 1 - confidence.",
        "",
        "| graph | setting | edges | directed | wrong | sure wrong | undetermined | expected wrong | clock |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r.graph}` | {r.setting} | {r.edges} | {100 * r.directed / r.edges:.0f} % ({r.directed}) | "
            f"{r.wrong} | {r.sure_wrong} | {r.undetermined} | {r.expected:.2f} | {r.clocked} |"
        )
    lines.append(CLOCK_SECTION.end)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="put the section into docs/RESULTS.md")
    args = parser.parse_args()
    rows = [row for name, size, folder in GRAPHS for row in measure(name, size, folder)]
    CLOCK_SECTION.publish(section(rows), args.write)


if __name__ == "__main__":
    main()
