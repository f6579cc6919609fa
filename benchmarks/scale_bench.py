"""Scale: index and recover folders of thousands of tiny models through the fingerprint store.

The models are *synthetic*, as the issue that asked for this defines them: four 64x64 float32 matrices
each; a random recursive tree (each model's parent drawn uniformly among the models before it); the root
Gaussian, each child its parent plus small Gaussian noise; saved with safetensors, one file per model,
with the true edges in ``truth.json``. They measure the machinery (reading, the store, the candidate graph,
the sparse tree step), not direction on real fine-tunes (the zoo does that).

    python benchmarks/scale_bench.py                # 1,000 and 10,000: build (once), index, recover, score
    python benchmarks/scale_bench.py --write        # and put it into docs/RESULTS.md (`make bench-scale`)

Each phase runs in its own process so that its peak RSS is its own (``resource.getrusage``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from sections import SCALE  # noqa: E402

SCALE_DIR = ROOT / ".bench" / "scale"
SHAPE = (64, 64)
NOISE = 2e-3


def build(n_models: int, folder: Path, seed: int = 0) -> Path:
    """Write ``n_models`` tiny models along a random tree into ``folder`` (skipped when complete)."""
    from safetensors.numpy import save_file

    truth_file = folder / "truth.json"
    if truth_file.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"m{k:06d}" for k in range(n_models)]
    parents = [-1] + [int(rng.integers(0, k)) for k in range(1, n_models)]
    weights: list[dict[str, np.ndarray]] = []
    for k in range(n_models):
        if parents[k] < 0:
            tensors = {f"layer.{t}.weight": rng.normal(0, 0.05, SHAPE).astype(np.float32) for t in range(4)}
        else:
            tensors = {
                name: (value + rng.normal(0, NOISE, SHAPE)).astype(np.float32)
                for name, value in weights[parents[k]].items()
            }
        weights.append(tensors)
        save_file(tensors, str(folder / f"{names[k]}.safetensors"))
    edges = [{"parent": names[p], "child": names[k]} for k, p in enumerate(parents) if p >= 0]
    truth_file.write_text(json.dumps({"edges": edges}))
    return folder


def _phase(code: str) -> dict[str, float]:
    """Run ``code`` in a fresh interpreter; its last line is JSON; add the process's peak RSS."""
    wrapped = (
        "import json, resource, time\n"
        "started = time.perf_counter()\n"
        f"{code}\n"
        "out['seconds'] = time.perf_counter() - started\n"
        "out['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "MOTHERTREE_NO_PROGRESS": "1"}
    done = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"a phase failed:\n{done.stderr}")
    found = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    print(json.dumps(found), file=sys.stderr, flush=True)
    return found


def measure(n_models: int) -> dict[str, Any]:
    folder = SCALE_DIR / f"tiny-{n_models}"
    # Built in a process of its own: building holds every model's weights, and a phase started from a
    # process that large inherits its peak RSS (Linux keeps ru_maxrss across fork and exec).
    _phase(
        f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
        "from pathlib import Path\n"
        "from scale_bench import build\n"
        f"build({n_models}, Path({str(folder)!r}))\n"
        "out = {}\n"
    )
    store = SCALE_DIR / f"tiny-{n_models}.sqlite"
    store.unlink(missing_ok=True)
    indexed = _phase(
        "from mothertree.indexing import index\n"
        "from mothertree.store import FingerprintStore\n"
        f"with FingerprintStore({str(store)!r}) as s:\n"
        f"    r = index([{str(folder)!r}], s)\n"
        "    out = {'indexed': len(r.indexed), 'bytes_read': r.bytes_read,\n"
        "           'store_mb': s.size_bytes() / 1e6}\n"
    )
    recovered = _phase(
        "from mothertree.indexing import recover_store\n"
        "from mothertree.store import FingerprintStore\n"
        "from mothertree.evaluation.metrics import score_edges\n"
        "from mothertree.evaluation.truth import load_edges\n"
        f"with FingerprintStore({str(store)!r}) as s:\n"
        "    result = recover_store(s)\n"
        "out = {'recover_seconds': time.perf_counter() - started}\n"
        f"truth = load_edges({str(folder / 'truth.json')!r})\n"
        "found = {(e.parent, e.child) for e in result.edges}\n"
        "score = score_edges(found, truth)\n"
        "wrong = [e for e in result.edges if (e.parent, e.child) not in truth]\n"
        "out.update({'directed': score.directed, 'undirected': score.undirected,\n"
        "            'trees': len(result.trees), 'observed_wrong': len(wrong),\n"
        "            'wrong_above_099': sum(e.confidence > 0.99 for e in wrong),\n"
        "            'expected_wrong': sum(1 - e.confidence for e in result.edges)})\n"
    )
    # `add`: a model the store has not seen, a child of one in the middle of the tree made as the others
    # were, written outside the folder; the store is a copy, so that every run starts from the same one.
    parent = f"m{n_models // 2:06d}"
    added = _phase(
        "import shutil, tempfile\n"
        "from pathlib import Path\n"
        "import numpy as np\n"
        "from safetensors.numpy import load_file, save_file\n"
        "from mothertree.indexing import add, query\n"
        "from mothertree.store import FingerprintStore\n"
        "scratch = Path(tempfile.mkdtemp())\n"
        "copy = scratch / 'store.sqlite'\n"
        f"shutil.copy({str(store)!r}, copy)\n"
        f"model = {str(folder / f'm{n_models - 1:06d}.safetensors')!r}\n"
        "rng = np.random.default_rng(1)\n"
        f"weights = load_file({str(folder / f'{parent}.safetensors')!r})\n"
        f"child = {{k: (v + rng.normal(0, {NOISE}, v.shape)).astype(np.float32)\n"
        "         for k, v in weights.items()}\n"
        "new = scratch / 'new.safetensors'\n"
        "save_file(child, str(new))\n"
        "with FingerprintStore(copy) as s:\n"
        "    t = time.perf_counter(); q = query(model, s); query_s = time.perf_counter() - t\n"
        "    t = time.perf_counter(); a = add(new, s); add_s = time.perf_counter() - t\n"
        "out = {'query_s': query_s, 'parent': q.parent.parent if q.parent else None, 'add_s': add_s,\n"
        f"       'add_parent': a.parent.parent if a.parent else None, 'true_parent': {parent!r}}}\n"
        "shutil.rmtree(scratch)\n"
    )
    return {"n_models": n_models, "index": indexed, "recover": recovered, "query": added}


TREE_STEP = """
import numpy as np
from mothertree.features.pairs import GroupFingerprints, nearest_pairs
from mothertree.features.reductions import central_moments
from mothertree.tree.sparse import PairLookup, sparse_trees
rng = np.random.default_rng(0)
n, n_tensors, numel = {n}, 4, 1024
parents = np.array([-1] + [int(rng.integers(0, k)) for k in range(1, n)])
samples, moments = [], np.zeros((3, n_tensors, n, 4))
for t in range(n_tensors):
    values = np.empty((n, numel), dtype=np.float32)
    values[0] = rng.normal(0, 0.05, numel)
    noise = rng.normal(0, {noise}, (n, numel)).astype(np.float32)
    for k in range(1, n):
        values[k] = values[parents[k]] + noise[k]
    del noise
    samples.append(values)
    moments[:, t] = central_moments(values)[None]
started = time.perf_counter()
stored = np.zeros((n_tensors, n), dtype=np.int64)  # every tensor F32
group = GroupFingerprints(np.full(n_tensors, numel), samples, moments, stored)
first, second = nearest_pairs(group.vectors(), 10)
stats = group.pair_stats(first, second)
def compute(i, j):
    found = group.pair_stats(i, j)
    return {{"squared": found.squared, "norm_change": found.norm_change,
            "kurtosis_change": found.kurtosis_change, "skew": found.skew}}
trees = sparse_trees(n, first, second, stats.distance, stats.relative,
                     PairLookup(compute, antisymmetric=("norm_change", "kurtosis_change", "skew")))
out = {{"tree_step_s": time.perf_counter() - started, "pairs": int(len(first)),
        "directed": float((trees.parents[1:] == parents[1:]).mean()), "trees": int(trees.labels.max()) + 1}}
"""


def tree_step(n_models: int) -> dict[str, Any]:
    """The tree step alone (candidate graph, pair statistics, sparse trees) on synthetic fingerprints
    held in memory: 4 tensors of 1,024 values per model, whole (no sampling), along a random tree."""
    return {"n_models": n_models, **_phase(TREE_STEP.format(n=n_models, noise=NOISE))}


def section(runs: list[dict[str, Any]], steps: list[dict[str, Any]], command: str) -> list[str]:
    lines = [
        SCALE.start,
        "## (h) Scale: the fingerprint store on thousands of (synthetic) models",
        "",
        f"`{command}` on {platform.machine()}, {os.cpu_count()} cores, {dt.date.today().isoformat()}. "
        "Synthetic "
        "models (four 64x64 float32 matrices each, a random recursive tree, each child its parent plus "
        f"Gaussian noise of {NOISE}; one safetensors file per model): they measure the machinery, not "
        "direction on real fine-tunes. Each phase in a fresh process; peak RSS is that process's. Groups of "
        "more than 2,000 models are recovered on the sparse candidate graph (faiss HNSW, each model's 10 "
        "nearest; `tree/sparse.py`); smaller ones on the dense path.",
        "",
        "| models | index (s) | index peak RSS (MiB) | store (MB) | recover (s) | recover peak RSS (MiB) "
        "| directed | wrong edges (expected) | wrong > 0.99 | trees | `query` one model (s) "
        "| `add` one new model (s) | its parent |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        i, r, q = run["index"], run["recover"], run["query"]
        lines.append(
            f"| {run['n_models']:,} | {i['seconds']:.1f} | {i['peak_rss_mb']:.0f} | {i['store_mb']:.0f} "
            f"| {r['recover_seconds']:.1f} | {r['peak_rss_mb']:.0f} | {100 * r['directed']:.2f} % "
            f"| {r['observed_wrong']} ({r['expected_wrong']:.1f}) | {r['wrong_above_099']} | {r['trees']} "
            f"| {q['query_s']:.2f} | {q['add_s']:.2f} "
            f"| {'right' if q['add_parent'] == q['true_parent'] else 'wrong'} (`{q['add_parent']}`) |"
        )
    lines += [
        "",
        "The tree step alone, on synthetic fingerprints built in memory (4 tensors of 1,024 values per "
        "model along a random tree; candidate graph, pair statistics and sparse trees; the time excludes "
        "building the data, the peak RSS includes it):",
        "",
        "| models | candidate pairs | tree step (s) | peak RSS (MiB) | directed | trees |",
        "|---|---|---|---|---|---|",
    ]
    for step in steps:
        lines.append(
            f"| {step['n_models']:,} | {step['pairs']:,} | {step['tree_step_s']:.1f} "
            f"| {step['peak_rss_mb']:.0f} "
            f"| {100 * step['directed']:.2f} % | {step['trees']} |"
        )
    lines += [
        "",
        "`query` reads the model, then compares its fingerprint with every fingerprint of its architecture "
        "in the store (one blob at a time) before recovering it among its 16 nearest: linear in the "
        "store's size. `add` does the same for a model the store has not seen (a new child of "
        "the middle model, made as the others were) and commits its fingerprint; *its parent* is "
        "where `add` placed it.",
        SCALE.end,
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--tree-step", type=int, nargs="*", default=[1000, 10000, 100000])
    parser.add_argument("--write", action="store_true", help="put the section into docs/RESULTS.md")
    args = parser.parse_args()
    steps = [tree_step(n) for n in args.tree_step]
    runs = []
    for n_models in args.models:
        started = time.perf_counter()
        runs.append(measure(n_models))
        print(f"({time.perf_counter() - started:.0f} s in all, building included)", file=sys.stderr)
    command = "python benchmarks/scale_bench.py --models " + " ".join(map(str, args.models))
    command += " --tree-step " + " ".join(map(str, args.tree_step))
    SCALE.publish(section(runs, steps, command), args.write)


if __name__ == "__main__":
    main()
