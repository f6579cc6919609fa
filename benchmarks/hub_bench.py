"""The hub splits: trees as a model hub holds them, with every relation (issue 13).

Section (k) of ``docs/RESULTS.md``. Four Model Graphs built by ``zoo build`` from the specs ``hub`` (text:
two slices of all-MiniLM-L6-v2 and a root pre-trained here, fans, a chain of continued pre-training, full
and LoRA fine-tunes, PEFT adapters, bf16/fp16 saves, and copies, ONNX/GGUF exports, int8/NF4/Q8_0/Q4_0
copies, pruned copies and mergekit merges) and ``hub-vision`` (MobileNetV2), each at sizes ``small`` and
``heldout`` (other roots, recipes and derivations, never tuned on). Each is recovered with the defaults and
every relation, with each relation left out (its models are then recovered as fine-tunes, as the paper's
method does), with none, and with the paper's settings (l2 distance, λ 0.3, kurtosis falls, the tree count
given, no relations), then indexed into a new fingerprint store and recovered from the fingerprints alone
(``recover --store``: every relation from what a fingerprint keeps), and scored by
``evaluation.relations.score_relations``.

    python benchmarks/hub_bench.py            # build (first run: about 25 minutes), print the section
    python benchmarks/hub_bench.py --write    # and put it into docs/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from sections import HUB_SECTION  # noqa: E402

from mothertree.evaluation.relations import FOUND, RELATIONS, RelationScore, score_relations  # noqa: E402
from mothertree.pipeline import RELATIONS as FOUND_RELATIONS  # noqa: E402
from mothertree.pipeline import recover  # noqa: E402
from mothertree.zoo.build import build_graph  # noqa: E402
from mothertree.zoo.spec import load_spec  # noqa: E402

OUT = ROOT / ".bench" / "hub"
SPLITS = [("hub", "small"), ("hub", "heldout"), ("hub-vision", "small"), ("hub-vision", "heldout")]
PAPER = "paper's settings, no relations"


@dataclass(frozen=True)
class Run:
    split: str
    name: str
    score: RelationScore
    seconds: float


def configurations(n_trees: int) -> list[tuple[str, dict[str, Any]]]:
    runs: list[tuple[str, dict[str, Any]]] = [("all", {})]
    runs += [
        (f"all but {left}", {"relations": tuple(r for r in FOUND_RELATIONS if r != left)})
        for left in FOUND_RELATIONS
    ]
    runs += [("none", {"relations": ()})]
    paper = {"relations": (), "direction": "falls", "lam": 0.3, "distance": "l2", "n_trees": n_trees}
    return [*runs, (PAPER, paper)]


def measure() -> list[Run]:
    runs = []
    for name, size in SPLITS:
        spec = load_spec(name).sized(size)
        graph = build_graph(spec, OUT / spec.name).path
        truth = json.loads((graph / "truth.json").read_text())
        for label, params in configurations(spec.trees):
            started = time.perf_counter()
            result = recover([graph], **params)
            run = Run(spec.name, label, score_relations(result, truth), time.perf_counter() - started)
            runs.append(run)
            _log(run)
        runs.append(_from_store(spec.name, graph, truth))
        _log(runs[-1])
    return runs


STORE = "all, from the store (fingerprints)"


def _from_store(split: str, graph: Path, truth: dict[str, Any]) -> Run:
    """Index the graph into a new store, then recover from its fingerprints alone (seconds: both)."""
    import tempfile

    from mothertree.indexing import index, recover_store
    from mothertree.store import FingerprintStore

    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        with FingerprintStore(Path(scratch) / "store.db", create=True) as store:
            index([graph], store)
            result = recover_store(store)
        return Run(split, STORE, score_relations(result, truth), time.perf_counter() - started)


def _log(run: Run) -> None:
    s = run.score
    print(
        f"{run.split:20s} {run.name:36s} directed {s.n_directed_correct}/{s.n_edges} relations "
        f"{s.n_relation_correct} wrong {s.wrong_edges} (>0.99: {s.confident_wrong}) expected "
        f"{s.expected_wrong:.2f} {run.seconds:.1f} s",
        file=sys.stderr,
    )


def _ratio(score: RelationScore) -> str:
    if score.wrong_edges == 0:
        return "-"
    return f"{score.wrong_edges / score.expected_wrong:.1f}×" if score.expected_wrong > 0 else "∞"


def _chance(score: RelationScore) -> str:
    return "-" if score.wrong_edges == 0 else f"{score.chance_of_as_many_wrong:.2f}"


def section(runs: list[Run]) -> list[str]:
    import mothertree

    lines = [
        HUB_SECTION.start,
        "## (k) Hub splits: fine-tunes, adapters, copies, quantised copies, pruned copies and merges",
        "",
        f"Produced by `python benchmarks/hub_bench.py --write` on {dt.date.today().isoformat()} "
        f"({os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}, "
        f"mothertree {mothertree.__version__}). Four graphs built by `mothertree zoo build` from the specs "
        "`hub` (text) and `hub-vision`, at sizes `small` and `heldout` (other roots, recipes and "
        "derivations; built and measured once, nothing chosen on them). Text: layers 0-1 of "
        "all-MiniLM-L6-v2 and a root pre-trained 400 steps here (`small`), layers 4-5 and 2-3 "
        "(`heldout`); fans, chains of continued pre-training, full and LoRA fine-tunes, PEFT adapters, "
        "fine-tunes saved bf16/fp16/sharded, and models made from them by the tools users make them with "
        "(`zoo/derive.py`): byte copies, bf16 re-saves, ONNX (`torch.onnx.export`) and GGUF F16 (llama.cpp's "
        "`convert_hf_to_gguf.py`) exports as duplicates; onnxruntime int8 (per tensor, per channel), GGUF "
        "Q8_0 (the converter) and Q4_0 (the `gguf` package), bitsandbytes LLM.int8 and NF4 as quantised "
        "copies; pruned copies (30 %, 50 %); mergekit linear (of two and of three models), SLERP, TIES and "
        "DARE-TIES merges. Vision: "
        "fine-tunes of the ImageNet MobileNetV2 (`small`) and of one pre-trained here (`heldout`), with "
        "copies, safetensors re-saves, fp16 casts, pruned copies and merges (no quantised copy: its ONNX "
        "export folds BatchNorm away, and LLM.int8 changes only its classifier).",
        "",
        "*Edges*: true edges (a merge: one per parent; a duplicate: one, right when the copy is an alias of "
        "its original). *Directed*: placed and oriented right. *Relations*: that, and the relation right. "
        "*Copies as roots*: a quantised, pruned or duplicate copy standing as a root. *Wrong*: recovered "
        "edges no true edge explains (a copy hung under its original as a fine-tune is placed right, its "
        "relation wrong); *expected*: the sum of 1 - confidence over the recovered edges; *ratio*: wrong / "
        "expected (the bar: at most 1.5×); *P(≥ wrong)*: the probability of that many wrong edges or more if "
        "each edge is wrong with probability 1 - confidence (`evaluation.metrics.chance_of_at_least`): where "
        "about one wrong edge is expected, the ratio swings with every edge, and this says whether the count "
        "is a surprise (below 0.05) or luck. *From the store*: `mothertree index` into a new store, then "
        "`recover --store` (seconds: both).",
        "",
        "| split | relations found | edges | directed | relations | copies as roots | wrong | of them "
        "> 0.99 | expected wrong | ratio | P(≥ wrong) | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        s = run.score
        lines.append(
            f"| `{run.split}` | {run.name} | {s.n_edges} | **{s.directed:.0%}** ({s.n_directed_correct}) | "
            f"**{s.relations:.0%}** ({s.n_relation_correct}) | {s.copies_as_roots} | {s.wrong_edges} | "
            f"{s.confident_wrong} | {s.expected_wrong:.2f} | {_ratio(s)} | {_chance(s)} | {run.seconds:.1f} |"
        )
    full = [run for run in runs if run.name == "all"]
    confusion: Counter[tuple[str, str]] = Counter()
    for run in full:
        confusion.update(run.score.confusion)
    lines += [
        "",
        "Relation confusion over the four splits with every relation found (rows: the truth; columns: what "
        "the result says of that edge):",
        "",
        "| true \\ found | " + " | ".join(FOUND) + " |",
        "|---|" + "---|" * len(FOUND),
    ]
    for relation in RELATIONS:
        if any(confusion[(relation, f)] for f in FOUND):
            lines.append(f"| {relation} | " + " | ".join(str(confusion[(relation, f)]) for f in FOUND) + " |")
    lines += ["", HUB_SECTION.end]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="put the section into docs/RESULTS.md")
    args = parser.parse_args()
    HUB_SECTION.publish(section(measure()), args.write)


if __name__ == "__main__":
    main()
