"""``make bench``: accuracy, speed and memory of mothertree, written to ``docs/RESULTS.md``.

Every figure in that file comes from one run of this script; never edit it by hand.
``--small`` builds the zoo's splits at their ``small`` size (3 trees x 7 models instead of 5 x 21), skips
the largest MDST sizes and uses one repeat: a quick run, whose header says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_mdst  # noqa: E402
import zoo_bench  # noqa: E402

from mothertree.evaluation.metrics import score_edges  # noqa: E402
from mothertree.evaluation.truth import load_edges  # noqa: E402
from mothertree.features.extract import extract_features  # noqa: E402
from mothertree.features.rank import DEFAULT_SKETCH_ROWS, LOW_RANK_FRACTION  # noqa: E402
from mothertree.features.select import select_tensors  # noqa: E402
from mothertree.io import discover, open_checkpoint  # noqa: E402
from mothertree.pipeline import read_features, recover_trees  # noqa: E402
from mothertree.zoo.text import MINILM_LORA_GRAPH, build_text_graph  # noqa: E402

BENCH_DIR = ROOT / ".bench"


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_kb / 2**20:.0f} GiB RAM, Python {platform.python_version()}, "
        f"numpy {np.__version__}"
    )


def measure(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MiB, and stdout of one run of ``command`` (see ``peak_rss.py``)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        launcher = [sys.executable, str(ROOT / "benchmarks" / "peak_rss.py"), report.name, *command]
        output = subprocess.run(launcher, capture_output=True, text=True, check=True).stdout
        measured = json.loads(Path(report.name).read_text())
    if measured["exit_code"] != 0:
        raise RuntimeError(f"{' '.join(command)} failed")
    return measured["wall_s"], measured["peak_rss_mib"], output


SETTINGS: list[tuple[str, dict[str, object]]] = [
    (
        "direction=auto (default): distance places edges, the cue the tree fits best picks the root",
        {"direction": "auto"},
    ),
    ("direction=norm: distance places edges, weight-norm growth picks the root", {"direction": "norm"}),
    ("λ=0.3, direction=falls: the paper's method and default sign", {"lam": 0.3, "direction": "falls"}),
    ("λ=0.3, direction=rises: the paper's method, other sign", {"lam": 0.3, "direction": "rises"}),
    ("λ=0: distance only (which end is the root is arbitrary)", {"lam": 0.0, "direction": "falls"}),
]

# (confidence, correct) of every recovered edge, gathered over graphs and settings for the calibration table.
CONFIDENCES: list[tuple[float, bool]] = []


def accuracy_table(graph: Path, *, ranks: bool = False) -> list[str]:
    truth = load_edges(graph / "truth.json")
    feature_sets, _ = read_features([graph], ranks=ranks)
    features = max(feature_sets, key=lambda f: f.n_models)
    index = {model: i for i, model in enumerate(features.model_ids)}
    kurtosis, norms = features.summed_kurtosis(), features.log_norms()
    falls = sum(kurtosis[index[c]] < kurtosis[index[p]] for p, c in truth)
    grows = sum(norms[index[c]] > norms[index[p]] for p, c in truth)
    relative = features.relative_distances()
    along_edges = [relative[index[p], index[c]] for p, c in truth]
    rows = [
        f"Compared tensors: {features.n_tensors} ({features.tensor_names[0]}, ...). "
        f"Along the {len(truth)} true edges, kurtosis (summed over the tensors) falls from parent to child "
        f"on {falls}, the weight norm grows on {grows}; relative distance parent-child "
        f"{min(along_edges):.3f}-{max(along_edges):.3f} (unrelated weights: about 1.41).",
        "",
        "| setting | trees found (`--trees auto`; truth 1) | directed accuracy | undirected accuracy |",
        "|---|---|---|---|",
    ]
    settings = SETTINGS
    if ranks:
        features_rank_share = features.low_rank_share()
        rows[0] += (
            f" Rank of the difference to the nearest model: {features_rank_share:.0%} of the cap "
            f"(`--distance auto` uses rank below {LOW_RANK_FRACTION:.0%})."
        )
        settings = (
            SETTINGS
            + [
                (f"{label.split(':')[0]}, distance=rank", {**params, "distance": "rank"})
                for label, params in SETTINGS
            ]
            + [("direction=norm, distance=auto", {"direction": "norm", "distance": "auto"})]
        )
    for label, params in settings:
        result = recover_trees(feature_sets, n_trees="auto", **params)  # type: ignore[arg-type]
        score = score_edges({(e.parent, e.child) for e in result.edges}, truth)
        if params == {"direction": "auto"}:
            CONFIDENCES.extend((e.confidence, (e.parent, e.child) in truth) for e in result.edges)
        directed = f"{score.directed:.0%} ({score.n_directed_correct}/{score.n_edges})"
        undirected = f"{score.undirected:.0%} ({score.n_undirected_correct}/{score.n_edges})"
        rows.append(f"| {label} | {len(result.trees)} | {directed} | {undirected} |")
    return rows


def calibration_table(more: list[tuple[float, bool]]) -> list[str]:
    """Edges binned into quarters by confidence (equal counts), with the directed accuracy of each."""
    ranked = sorted(CONFIDENCES + more)
    rows = ["| confidence | edges | directed accuracy |", "|---|---|---|"]
    quarters = np.array_split(np.arange(len(ranked)), 4)
    for members in quarters:
        if members.size == 0:
            continue
        inside = [ranked[i] for i in members]
        accuracy = sum(correct for _, correct in inside) / len(inside)
        rows.append(f"| {inside[0][0]:.2f}-{inside[-1][0]:.2f} | {len(inside)} | {accuracy:.0%} |")
    return rows


def sketch_table(graph: Path) -> list[str]:
    """Sketched rank estimates against exact ranks (a sketch as tall as the matrix is the identity)."""
    refs, _ = discover(graph)
    checkpoints = [open_checkpoint(ref) for ref in refs]
    tensors = select_tensors([c.tensors for c in checkpoints])
    results = {}
    for sketch_rows in (DEFAULT_SKETCH_ROWS, max(t.shape[0] for t in tensors)):
        started = time.perf_counter()
        features, _ = extract_features(
            checkpoints, [r.id for r in refs], tensors, ranks=True, sketch_rows=sketch_rows
        )
        results[sketch_rows] = (features, time.perf_counter() - started)
    for checkpoint in checkpoints:
        checkpoint.close()
    (sketched, sketched_s), (exact, exact_s) = results.values()
    assert sketched.ranks is not None and exact.ranks is not None
    below_cap = exact.ranks < DEFAULT_SKETCH_ROWS
    off_diagonal = ~np.eye(exact.n_models, dtype=bool)[None, :, :].repeat(exact.n_tensors, axis=0)
    counted = below_cap & off_diagonal
    agree = (sketched.ranks[counted] == exact.ranks[counted]).mean()
    return [
        f"Ranks of every pairwise difference of every compared tensor of the MiniLM LoRA graph "
        f"({int(counted.sum())} with exact rank below the sketch's {DEFAULT_SKETCH_ROWS} rows): the sketched "
        f"estimate equals the exact rank on {agree:.1%} of them. Feature extraction with ranks took "
        f"{sketched_s:.1f} s sketched, {exact_s:.1f} s exact (one run each).",
    ]


def memory_table(graph: Path, repeats: int) -> list[str]:
    python = sys.executable
    commands = {
        "mothertree recover (streaming)": [
            str(Path(python).parent / "mothertree"),
            "recover",
            str(graph),
            "--format",
            "json",
            "--quiet",
        ],
        "naive: every model loaded whole": [python, str(ROOT / "benchmarks" / "naive.py"), str(graph)],
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    outputs = {}
    for _ in range(repeats):
        for name, command in commands.items():
            wall, rss, out = measure(command)
            runs[name].append((wall, rss))
            outputs[name] = {(e["parent"], e["child"]) for e in json.loads(out)["edges"]}
    same = len(set(map(frozenset, outputs.values()))) == 1
    median = {
        name: (statistics.median(w for w, _ in r), statistics.median(m for _, m in r))
        for name, r in runs.items()
    }
    ours, naive = median["mothertree recover (streaming)"], median["naive: every model loaded whole"]
    rows = ["| reader | wall time (s) | peak RSS (MiB) |", "|---|---|---|"]
    rows += [f"| {name} | {wall:.2f} | {rss:.0f} |" for name, (wall, rss) in median.items()]
    rows += [
        "",
        f"Ratios (same run, medians of {repeats}): peak RSS {ours[1] / naive[1]:.0%} of the naive "
        f"baseline, wall time {ours[0] / naive[0]:.0%}. Both recovered the same edges: {same}.",
    ]
    return rows


def mdst_table(small: bool) -> list[str]:
    sizes = (100, 500, 1000) if small else (100, 500, 1000, 2000)
    rows = ["| n | costs | ours (s) | networkx (s) |", "|---|---|---|---|"]
    for row in bench_mdst.run(sizes=sizes, repeats=1 if small else 3):
        nx_s = f"{row['networkx_s']:.3f}" if row["networkx_s"] is not None else "not run (minutes, GBs)"
        rows.append(f"| {row['n']} | {row['kind']} | {row['ours_s']:.3f} | {nx_s} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    repeats = 1 if args.small else 3
    size = "small" if args.small else "full"
    command = "make bench-small" if args.small else "make bench"
    from mothertree.zoo.demo import build_demo_graph
    from mothertree.zoo.variants import build_variant

    splits = {name: zoo_bench.build_split(name, size) for name, _ in zoo_bench.SPLITS}
    split_rows = []
    summary = [
        "| split | ours (defaults: auto, K auto) | ours: auto, K given | ours: norm only, K given "
        "| paper: falls, K given | paper: rises, K given | paper: oracle sign per tree, K given |",
        "|---|---|---|---|---|---|---|",
    ]

    def report_split(name: str, title: str, graph: Path, size_label: str) -> list[str]:
        rows, accuracies = zoo_bench.split_section(name, graph)
        CONFIDENCES.extend(zoo_bench.CONFIDENCES)
        zoo_bench.CONFIDENCES.clear()
        values = list(accuracies.values())
        label = name if size_label == size else f"{name} ({size_label})"
        summary.append(f"| {label} | " + " | ".join(f"{v:.0%}" for v in values[:6]) + " |")
        return [f"### {title} (`{name}`, size {size_label})", "", *rows, ""]

    for name, title in zoo_bench.SPLITS:
        split_rows += report_split(name, title, splits[name], size)
    # A quick run also reports the full-size splits that happen to be built already (it builds none).
    full_built = {
        name: zoo_bench.split_dir(name, "full")
        for name, _ in zoo_bench.SPLITS
        if args.small and (zoo_bench.split_dir(name, "full") / "truth.json").is_file()
    }
    full_rows: list[str] = []
    for name, title in zoo_bench.SPLITS:
        if name in full_built:
            full_rows += report_split(name, title, full_built[name], "full")
    if full_built:
        full_rows += [
            "Per-phase time and memory at full size (one run each):",
            "",
            *zoo_bench.phases_section(list(full_built.values()), measure, 1),
            "",
        ]

    print("building / loading the demo graph ...", file=sys.stderr)
    demo = build_demo_graph()
    print("building / loading the MiniLM graph ...", file=sys.stderr)
    minilm = build_text_graph(BENCH_DIR / "minilm-graph")
    print("building / loading the MiniLM LoRA graph ...", file=sys.stderr)
    minilm_lora = build_text_graph(BENCH_DIR / "minilm-lora-graph", MINILM_LORA_GRAPH)

    sections = [
        "# mothertree benchmark results",
        "",
        f"Produced by `{command}` (`benchmarks/run.py`) on {dt.date.today().isoformat()}.",
        f"Machine: {machine()}.",
        "",
        "## (a) The zoo: the paper's experiments on our own Model Graphs",
        "",
        "Directed accuracy is the paper's metric: a true edge counts when placement and direction are right. "
        "Splits are built by `mothertree zoo build <spec>` from the specs in `src/mothertree/zoo/specs/` "
        f"(size `{size}`). K given = the number of roots; clustering accuracy = share of models in the "
        "right tree after matching found trees to true ones. Per tree: directed accuracy of each true tree.",
        "",
        "Held out: no threshold was tuned on these splits. The `--trees auto` cut (relative distance 0.5), "
        "the low-rank fraction of `--distance auto` (0.25), the sparsity share that switches to the "
        "common-support distance (1 %) and the cue order of `--direction auto` were all fixed before the zoo "
        "existed, on the graphs of (a2) and on unit examples. The `--direction auto` method itself (choose "
        "the cue per tree) was written after seeing the small `text-ft` split, where the norm grew on only "
        "7 of 18 edges; it has no tuned parameter, and the other splits were measured after it.",
        "",
        *(
            [
                "The full size (5 trees x 21 = 105 models per split) is not in this run: `make bench` builds "
                "and measures it (hours of CPU on this machine).",
                "",
            ]
            if args.small and not full_built
            else []
        ),
        *summary,
        "",
        *split_rows,
        *full_rows,
        "### Robustness: every model of a split pruned, cast to fp16, or quantised to int8",
        "",
        "Variants written by `mothertree.zoo.variants.build_variant` (magnitude pruning with "
        "`torch.nn.utils.prune.l1_unstructured`, fp16 casts, bitsandbytes int8) and read back by mothertree.",
        "",
        f"`vision-ft` ({size}; no int8 row: bitsandbytes quantises `nn.Linear` layers; MobileNetV2's only "
        "one is its task head, which differs in shape between tasks and is never compared):",
        "",
        *zoo_bench.variants_section(splits["vision-ft"], build_variant, int8=False),
        "",
        f"`text-ft` ({size}):",
        "",
        *zoo_bench.variants_section(splits["text-ft"], build_variant, int8=True),
        "",
        "### Runtime and peak RSS per phase, against the naive whole-model baseline (same run)",
        "",
        f"Each command in a fresh process, medians of {repeats}. Peak RSS in brackets: after imports / "
        "reading / clustering / tree step. Naive: every model loaded whole, then pairs compared "
        "(`benchmarks/naive.py`, the paper's code's approach, same distances and tree step). Half of the "
        "vision models are `.bin` pickles, which both readers open with torch (a few hundred MiB of RSS on "
        "import alone), and each is only 9 MB: there memory is torch's, not the weights'.",
        "",
        *zoo_bench.phases_section([splits["vision-ft"], splits["text-ft"]], measure, repeats),
        "",
        "## (a2) Earlier, smaller graphs (1 → 3 → 6)",
        "",
        f"### Demo graph: ImageNet MobileNetV2, 1 → 3 → 6 (`mothertree demo`, built in `{demo}`)",
        "",
        *accuracy_table(demo),
        "",
        "### MiniLM graph: all-MiniLM-L6-v2, 1 → 3 → 6 (`mothertree.zoo.text.MINILM_GRAPH`)",
        "",
        *accuracy_table(minilm),
        "",
        "### MiniLM LoRA graph: all-MiniLM-L6-v2, 1 → 3 → 6 LoRA fine-tunes of ranks 8/16/32/64, merged "
        "(`mothertree.zoo.text.MINILM_LORA_GRAPH`)",
        "",
        *accuracy_table(minilm_lora, ranks=True),
        "",
        *sketch_table(minilm_lora),
        "",
        "### Confidence against correctness",
        "",
        "Every edge recovered with the default settings above (zoo splits, their variants, the smaller "
        "graphs), in four equal-count bins by confidence (`Edge.confidence`: the smaller of the placement "
        "and direction margins).",
        "",
        *calibration_table(zoo_bench.CONFIDENCES),
        "",
        "## (b) Reading: streaming vs loading every model whole",
        "",
        f"On the MiniLM graph (10 models, 90 MB each in fp32; some sharded, one bf16), each command in a "
        f"fresh process, medians of {repeats} runs.",
        "",
        *memory_table(minilm, repeats),
        "",
        "## (c) Minimum directed spanning tree",
        "",
        "Our Chu-Liu-Edmonds vs `networkx.minimum_spanning_arborescence` on dense cost matrices "
        "(random, and tree-like: distances between points placed by a random walk along a random tree).",
        "",
        *mdst_table(args.small),
        "",
    ]
    out = ROOT / "docs" / "RESULTS.md"
    out.write_text("\n".join(sections))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
