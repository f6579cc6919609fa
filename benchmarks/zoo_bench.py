"""The zoo's splits, measured as the paper measured MoTHer: the tables of ``docs/RESULTS.md`` section (a).

Every split is built (or found built) from its spec in ``mothertree/zoo/specs`` under ``.bench/zoo``;
``--small`` uses each spec's ``small`` size. Nothing here is tuned on the splits it reports.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mothertree.evaluation.metrics import clustering_accuracy, score_edges, true_trees
from mothertree.evaluation.truth import EdgeSet, load_edges
from mothertree.features.featureset import FeatureSet
from mothertree.features.low_rank import LowRankRule
from mothertree.pipeline import read_features
from mothertree.tree.recover import TreeRecovery
from mothertree.zoo.build import STATE_FILE, build_graph
from mothertree.zoo.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
ZOO_DIR = ROOT / ".bench" / "zoo"

# (spec, what it is); LoRA splits are also measured with the l2 and the rank distance.
SPLITS = [
    ("vision-ft", "FT, vision: MobileNetV2 full fine-tunes"),
    ("text-ft", "FT, text: MiniLM (2 layers) full fine-tunes"),
    ("text-lora-f", "LoRA-F, text: LoRA rank 16, merged"),
    ("text-lora-v", "LoRA-V, text: LoRA ranks 8/16/32/64, merged"),
    ("text-mixed", "mixed, text: full and LoRA fine-tunes, some LoRA leaves stored as PEFT adapters"),
]
LORA_SPLITS = {"text-lora-f", "text-lora-v", "text-mixed"}
# Specs with a `heldout` size: other seeds, tasks and learning rates, never used to set anything.
HELDOUT_SPLITS = ("vision-ft", "text-ft", "text-lora-v", "text-mixed")
PRUNING_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)
DEFAULT = "ours, defaults: direction auto, distance auto, K auto"
PAPER_FALLS = "paper: l2 (plain mean), λ=0.3, kurtosis falls, K given"
PAPER_RISES = "paper: l2 (plain mean), λ=0.3, kurtosis rises, K given"
PAPER_ORACLE = "paper: l2 (plain mean), λ=0.3, sign set right per tree by hand (oracle), K given"
# Every edge recovered with the default settings, for the calibration tables: its graph, whether that
# graph was left out of the confidence fit, its two margins, its confidence, and whether it is right.
EDGE_RECORDS: list[dict[str, Any]] = []
# The graphs whose edges fit `mothertree.tree.calibration` (its docstring): the small splits, their
# variants, the full vision split and the MiniLM graphs of section (a2).
FIT_GRAPHS = {f"{name}-small" for name, _ in SPLITS} | {"vision-ft-full", "minilm-graph", "minilm-lora-graph"}


def used_in_fit(graph: Path) -> bool:
    return graph.name in FIT_GRAPHS or graph.name.startswith(("vision-ft-small-", "text-ft-small-"))


PHASE_PEAKS = ("imports_peak_mib", "read_peak_mib", "cluster_peak_mib", "tree_peak_mib")


def split_dir(name: str, size: str) -> Path:
    return ZOO_DIR / f"{name}-{size}"


def build_split(name: str, size: str) -> Path:
    spec = load_spec(name).sized(size)
    print(f"building / loading {spec.name} ({spec.n_models} models) ...", file=sys.stderr)
    return build_graph(spec, split_dir(name, size)).path


def record_edges(recovery: TreeRecovery, truth: EdgeSet, graph: Path) -> None:
    """Keep every edge of a default-settings recovery for the calibration tables."""
    index = {m: i for i, m in enumerate(recovery.model_ids_)}
    for edge in recovery.edges_:
        child = index[edge.child]
        EDGE_RECORDS.append(
            {
                "graph": graph.name,
                "heldout": not used_in_fit(graph),
                "placement": float(recovery.placement_margins_[child]),
                "direction": float(recovery.direction_probabilities_[child]),
                "confidence": edge.confidence,
                "correct": (edge.parent, edge.child) in truth,
            }
        )


def _one_group(graph: Path, *, ranks: bool | Literal["auto"]) -> FeatureSet:
    feature_sets, broken = read_features([graph], ranks=ranks)
    if broken or len(feature_sets) != 1:
        raise RuntimeError(f"{graph}: expected one comparable group and no broken model, got {broken}")
    return feature_sets[0]


def _truth(graph: Path) -> tuple[EdgeSet, dict[str, Any]]:
    return load_edges(graph / "truth.json"), json.loads((graph / "truth.json").read_text())


def _fit(features: FeatureSet, *, paper_l2: bool = False, **params: Any) -> TreeRecovery:
    """``TreeRecovery(**params).fit``; ``paper_l2``: on the paper's distance, the plain mean over tensors
    of the per-tensor RMS distances (ours weights them by sqrt(numel) and joins low-rank pairs first)."""
    if not paper_l2:
        return TreeRecovery(**params).fit(features)
    plain = np.nanmean(features.rms_distances, axis=0)
    plain = np.where(np.isnan(plain), np.nanmax(plain), plain)
    return TreeRecovery(**params).fit_matrices(
        plain,
        features.summed_kurtosis(),
        features.model_ids,
        log_norms=features.log_norm_pairs(),
        relative_distances=features.relative_distances(),
        known_parents=features.known_parents,
    )


def _score_row(label: str, recovery: TreeRecovery, truth: EdgeSet) -> tuple[str, float]:
    predicted = {(e.parent, e.child) for e in recovery.edges_}
    score = score_edges(predicted, truth)
    assigned = dict(zip(recovery.model_ids_, recovery.labels_.tolist(), strict=True))
    clustering = clustering_accuracy(assigned, truth)
    per_tree = " / ".join(f"{t.directed:.0%}" for t in score.per_tree)
    row = (
        f"| {label} | {int(recovery.labels_.max()) + 1} | {clustering:.0%} | "
        f"**{score.directed:.0%}** ({score.n_directed_correct}/{score.n_edges}) | {per_tree} | "
        f"{score.undirected:.0%} |"
    )
    return row, score.directed


def settings_for(name: str, k: int) -> list[tuple[str, dict[str, Any]]]:
    settings: list[tuple[str, dict[str, Any]]] = [
        (DEFAULT, {"n_trees": "auto", "direction": "auto"}),
        ("ours: direction auto, K given", {"n_trees": k, "direction": "auto"}),
        ("ours: norm cue only, K given", {"n_trees": k, "direction": "norm"}),
        (PAPER_FALLS, {"n_trees": k, "direction": "falls", "lam": 0.3, "paper_l2": True}),
        (PAPER_RISES, {"n_trees": k, "direction": "rises", "lam": 0.3, "paper_l2": True}),
    ]
    if name in LORA_SPLITS:
        settings += [
            ("ours: auto, l2 distance, K given", {"n_trees": k, "direction": "auto", "distance": "l2"}),
            ("ours: auto, rank distance, K given", {"n_trees": k, "direction": "auto", "distance": "rank"}),
            (
                "paper: λ=0.3, falls, rank distance, K given",
                {"n_trees": k, "direction": "falls", "lam": 0.3, "distance": "rank"},
            ),
        ]
    return settings


def oracle_row(falls: TreeRecovery, rises: TreeRecovery, truth: EdgeSet) -> tuple[str, float]:
    """The paper's method with the kurtosis sign set right by hand per tree: the better sign per tree."""
    scores = [score_edges({(e.parent, e.child) for e in r.edges_}, truth) for r in (falls, rises)]
    per_tree = [
        max(a, b, key=lambda t: t.directed)
        for a, b in zip(scores[0].per_tree, scores[1].per_tree, strict=True)
    ]
    correct = sum(round(t.directed * t.n_edges) for t in per_tree)
    total = sum(t.n_edges for t in per_tree)
    assigned = dict(zip(falls.model_ids_, falls.labels_.tolist(), strict=True))
    trees = " / ".join(f"{t.directed:.0%}" for t in per_tree)
    row = (
        f"| {PAPER_ORACLE} | {int(falls.labels_.max()) + 1} | {clustering_accuracy(assigned, truth):.0%} | "
        f"**{correct / total:.0%}** ({correct}/{total}) | {trees} | - |"
    )
    return row, correct / total


# Per tree measured with direction auto: (graph, whether its chosen cue holds on most of its true edges).
CUE_RECORDS: list[tuple[str, bool]] = []


def cue_lines(recovery: TreeRecovery, features: FeatureSet, truth: EdgeSet, graph: Path) -> list[str]:
    """Per true tree: the cue ``direction="auto"`` chose, and how the cues really moved along its edges."""
    index = {m: i for i, m in enumerate(features.model_ids)}
    kurtosis, norms = features.summed_kurtosis(), features.log_norms()
    tree_of_model = dict(zip(recovery.model_ids_, recovery.labels_.tolist(), strict=True))
    lines = []
    for root, edges in true_trees(truth):
        falls = sum(kurtosis[index[c]] < kurtosis[index[p]] for p, c in edges)
        grows = sum(norms[index[c]] > norms[index[p]] for p, c in edges)
        cue = recovery.cues_[tree_of_model[root]]
        held = {
            "kurtosis falls": falls,
            "kurtosis rises": len(edges) - falls,
            "norm grows": grows,
            "norm shrinks": len(edges) - grows,
        }
        parts = [part for part in cue.split(" + ") if part in held]
        CUE_RECORDS.append((graph.name, all(2 * held[part] > len(edges) for part in parts)))
        holds = ", ".join(f"{part} on {held[part]}" for part in parts) or "no cue"
        lines.append(
            f"- tree of `{root}`: auto took **{cue}** ({holds} of its {len(edges)} true edges); "
            f"kurtosis falls on {falls}, the norm grows on {grows}."
        )
    return lines


def missing_root_line(features: FeatureSet, truth: EdgeSet) -> str:
    """Delete each tree's root in turn: its models must stay apart from the other trees (K auto)."""
    tree_of = {m: k for k, (_, edges) in enumerate(true_trees(truth)) for e in edges for m in e}
    crossing, orphan_trees = 0, []
    for root, _ in true_trees(truth):
        keep = [i for i, m in enumerate(features.model_ids) if m != root]
        recovery = TreeRecovery(n_trees="auto", direction="auto").fit(features.subset(keep))
        crossing += sum(tree_of[e.parent] != tree_of[e.child] for e in recovery.edges_)
        orphans = {
            label
            for m, label in zip(recovery.model_ids_, recovery.labels_, strict=True)
            if tree_of[m] == tree_of[root]
        }
        orphan_trees.append(len(orphans))
    return (
        f"Each tree's root deleted in turn (K auto): its other models formed {orphan_trees} tree(s) of their "
        f"own; edges joining them to an unrelated tree: {crossing}."
    )


def build_summary(graph: Path) -> list[str]:
    """How the split was built: time, size on disk, what the fine-tunes reached, how far they moved."""
    _, truth = _truth(graph)
    state = json.loads((graph / STATE_FILE).read_text())["models"]
    models = truth["models"]
    tuned = [m for m in models.values() if m["parent"] is not None]
    roots = [m for m in models.values() if m["parent"] is None]
    seconds = sum(float(r.get("seconds", 0.0)) for r in state.values())
    size_mb = sum(f.stat().st_size for f in graph.rglob("*") if f.is_file()) / 1e6
    accuracy = [m["accuracy"] for m in tuned]
    baseline = [m.get("chance") or m.get("majority") for m in tuned]
    change = [m["relative_change_from_parent"] for m in tuned]
    lines = [
        f"{len(models)} models ({len(roots)} trees), {size_mb:.0f} MB on disk, trained in "
        f"{seconds / 60:.0f} min of one core (sum of the models' training times).",
        f"Fine-tunes: held-out accuracy median {statistics.median(accuracy):.2f} (min {min(accuracy):.2f}; "
        f"chance or majority-class rate median {statistics.median(baseline):.2f}, max {max(baseline):.2f}); "
        f"relative weight change from the parent ‖W_child − W_parent‖ / ‖W_parent‖ median "
        f"{statistics.median(change):.4f} (range {min(change):.4f}–{max(change):.4f}).",
    ]
    scratch = [m for m in roots if "random init" in str(m.get("task"))]
    if scratch:
        reached = ", ".join(f"{m['accuracy']:.2f}" for m in scratch)
        lines.append(
            f"Roots pre-trained here from random inits: {len(scratch)}, {scratch[0]['steps']} steps each, "
            f"held-out accuracy on their pre-training task {reached} ({scratch[0]['task']})."
        )
    return lines


def trend_line(features: FeatureSet, truth: EdgeSet) -> str:
    index = {m: i for i, m in enumerate(features.model_ids)}
    kurtosis, norms = features.summed_kurtosis(), features.log_norms()
    falls = sum(kurtosis[index[c]] < kurtosis[index[p]] for p, c in truth)
    grows = sum(norms[index[c]] > norms[index[p]] for p, c in truth)
    gaps = [abs(kurtosis[index[c]] - kurtosis[index[p]]) for p, c in truth]
    return (
        f"Along the {len(truth)} true edges the child's kurtosis (summed over {features.n_tensors} tensors) "
        f"is lower than its parent's on **{falls}** ({falls / len(truth):.0%}; median |Δ| "
        f"{statistics.median(gaps):.3g}); the weight norm grows on {grows} ({grows / len(truth):.0%})."
    )


def split_section(name: str, graph: Path) -> tuple[list[str], dict[str, float]]:
    truth, raw = _truth(graph)
    k = sum(1 for m in raw["models"].values() if m["parent"] is None)
    # LoRA splits: every pair's rank, for the explicit rank rows; others as `--distance auto` reads them.
    features = _one_group(graph, ranks=True if name in LORA_SPLITS else "auto")
    rows = [
        *build_summary(graph),
        "",
        trend_line(features, truth),
        "",
        "| setting | trees found | clustering accuracy | directed accuracy | per tree | undirected |",
        "|---|---|---|---|---|---|",
    ]
    accuracies = {}
    fitted = {}
    for label, params in settings_for(name, k):
        recovery = fitted[label] = _fit(features, **params)
        row, directed = _score_row(label, recovery, truth)
        if label == DEFAULT:
            record_edges(recovery, truth, graph)
        rows.append(row)
        accuracies[label] = directed
        if label == PAPER_RISES:
            row, directed = oracle_row(fitted[PAPER_FALLS], recovery, truth)
            rows.append(row)
            accuracies[PAPER_ORACLE] = directed
    rows += ["", missing_root_line(features, truth)]
    rows += ["", "Direction cue per tree (`direction=auto`, K given):", ""]
    rows += cue_lines(fitted["ours: direction auto, K given"], features, truth, graph)
    rows += ["", distance_line(fitted[DEFAULT], features, truth)]
    return rows, accuracies


def distance_line(recovery: TreeRecovery, features: FeatureSet, truth: EdgeSet) -> str:
    """What `--distance auto` saw: the pairs it judged clearly low-rank, and the true edges among them."""
    low = LowRankRule().pairs(features)
    index = {m: i for i, m in enumerate(features.model_ids)}
    on_edges = sum(bool(low[index[p], index[c]]) for p, c in truth)
    return (
        f"`--distance auto` used **{recovery.distance_}**: {int(low.sum()) // 2} pairs judged clearly "
        f"low-rank (joined first, by rank), {on_edges} of them true edges (of {len(truth)})."
    )


def variants_section(graph: Path, build_variant: Callable[..., Path], int8: bool) -> list[str]:
    """Accuracy when every model of the split is pruned / cast to fp16 / quantised to int8."""
    truth, raw = _truth(graph)
    k = sum(1 for m in raw["models"].values() if m["parent"] is None)
    variants = [f"prune:{level}" for level in PRUNING_LEVELS] + ["fp16"] + (["int8"] if int8 else [])
    rows = [
        "| variant | ours: auto, K given | ours: auto, K auto | paper: falls, K given "
        "| clustering (K given) |",
        "|---|---|---|---|---|",
    ]
    for variant in ["original", *variants]:
        folder = graph
        if variant != "original":
            folder = build_variant(
                graph, ZOO_DIR / "variants" / f"{graph.name}-{variant.replace(':', '-')}", variant
            )
        features = _one_group(folder, ranks="auto")
        cells = []
        for params in (
            {"n_trees": k, "direction": "auto"},
            {"n_trees": "auto", "direction": "auto"},
            {"n_trees": k, "direction": "falls", "lam": 0.3, "paper_l2": True},
        ):
            recovery = _fit(features, **params)
            score = score_edges({(e.parent, e.child) for e in recovery.edges_}, truth)
            cells.append(f"{score.directed:.0%}")
            if params == {"n_trees": "auto", "direction": "auto"} and variant != "original":
                record_edges(recovery, truth, folder)
        given = _fit(features, n_trees=k, direction="auto")
        clustering = clustering_accuracy(
            dict(zip(given.model_ids_, given.labels_.tolist(), strict=True)), truth
        )
        rows.append(f"| {variant} | {' | '.join(cells)} | {clustering:.0%} |")
    return rows


def phases_section(
    graphs: Sequence[Path], measure: Callable[[list[str]], tuple[float, float, str]], repeats: int
) -> list[str]:
    """Per-phase time and peak RSS of recovery, and the naive whole-model baseline, in the same run."""
    python = sys.executable
    rows = [
        "| graph | models | read + features (s) | clustering (s) | tree step (s) | peak RSS (MiB) | "
        "naive: wall (s) | naive: peak RSS (MiB) | ratio RSS | ratio wall |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for graph in graphs:
        _, raw = _truth(graph)
        k = sum(1 for m in raw["models"].values() if m["parent"] is None)
        ours, naive, phases = [], [], []
        for _ in range(repeats):
            wall, rss, out = measure([python, str(ROOT / "benchmarks" / "phases.py"), str(graph), str(k)])
            ours.append((wall, rss))
            phases.append(json.loads(out))
            wall, rss, _ = measure([python, str(ROOT / "benchmarks" / "naive.py"), str(graph)])
            naive.append((wall, rss))

        def med(values: list[float]) -> float:
            return float(statistics.median(values))

        o_wall, o_rss = med([w for w, _ in ours]), med([r for _, r in ours])
        n_wall, n_rss = med([w for w, _ in naive]), med([r for _, r in naive])
        read_s, cluster_s, tree_s = (
            med([p[key] for p in phases]) for key in ("read_s", "cluster_s", "tree_s")
        )
        after = " / ".join(f"{med([p[key] for p in phases]):.0f}" for key in PHASE_PEAKS)
        rows.append(
            f"| {graph.name} | {phases[0]['n_models']} | {read_s:.2f} | {cluster_s:.4f} | {tree_s:.4f} | "
            f"{o_rss:.0f} ({after}) | {n_wall:.2f} | {n_rss:.0f} | {o_rss / n_rss:.0%} | "
            f"{o_wall / n_wall:.0%} |"
        )
    return rows
