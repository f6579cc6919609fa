"""Fingerprints against the exact path: the same trees? and what reading costs, against `cat`.

Section (i): for every built graph with a ``truth.json`` (the shapes zoo under ``.bench/shapes``, the
zoo's splits and the MiniLM/demo graphs where ``make bench`` built them), recovery from the weights
(``recover``) and from a fresh fingerprint store (``index`` then ``recover --store``), directed accuracy
of each and the edges on which they differ. Section (i2): on one graph (the MiniLM graph where it is
built, else the largest), the time to read it, each way in a fresh process, medians of ``--repeats``
interleaved runs on a warm page cache: ``cat`` of its weight files (the limit), the naive loader
(``benchmarks/naive.py``: every model whole), the exact path, ``index`` into a new store, and both of
those at each ``--previous`` revision.

    python benchmarks/fingerprint_bench.py            # print both sections
    python benchmarks/fingerprint_bench.py --write    # and put them into docs/RESULTS.md
    python benchmarks/fingerprint_bench.py --only reading --previous 3147acc --write
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from sections import FINGERPRINTS, READING  # noqa: E402

from mothertree.evaluation.metrics import score_edges  # noqa: E402
from mothertree.evaluation.truth import load_edges  # noqa: E402
from mothertree.indexing import index, recover_store  # noqa: E402
from mothertree.pipeline import read_features, recover  # noqa: E402
from mothertree.store import FingerprintStore  # noqa: E402

BENCH = ROOT / ".bench"
CANDIDATES = ("shapes/*", "zoo/*", "zoo/variants/*", "minilm-graph", "minilm-lora-graph", "demo")


def graphs() -> list[Path]:
    found = []
    for pattern in CANDIDATES:
        found += sorted(p for p in BENCH.glob(pattern) if (p / "truth.json").is_file())
    return found


def compare(graph: Path) -> dict[str, Any]:
    truth = load_edges(graph / "truth.json")
    exact = {(e.parent, e.child) for e in recover([graph]).edges}
    with tempfile.TemporaryDirectory() as scratch, FingerprintStore(Path(scratch) / "s.sqlite") as store:
        report = index([graph], store)
        estimated = {(e.parent, e.child) for e in recover_store(store).edges}
        per_model = store.size_bytes() / max(len(store), 1)
    return {
        "graph": str(graph.relative_to(BENCH)),
        "models": len(report.indexed) + len(report.aliases),
        "edges": len(truth),
        "exact": score_edges(exact, truth).directed,
        "fingerprints": score_edges(estimated, truth).directed,
        "differ": len(exact - estimated),  # edges of the exact tree the fingerprints do not have
        "bytes_read_per_model": report.bytes_read / max(len(report.indexed) + len(report.aliases), 1),
        "fingerprint_bytes_per_model": per_model,
    }


def weight_files(graph: Path) -> list[Path]:
    return sorted(p for p in graph.rglob("*") if p.suffix in (".safetensors", ".bin") and p.is_file())


def _size(graph: Path) -> int:
    return sum(p.stat().st_size for p in weight_files(graph))


def _timed(code: str, source: Path | None = None) -> float:
    """Seconds the code's ``work()`` takes in a fresh interpreter (imports excluded); ``source``: the
    ``src`` folder of another checkout of mothertree to import instead of this one."""
    wrapped = f"import time\n{code}\nt = time.perf_counter(); work(); print(time.perf_counter() - t)\n"
    env = {**os.environ, "MOTHERTREE_NO_PROGRESS": "1"}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    done = subprocess.run(
        [sys.executable, "-c", wrapped], capture_output=True, text=True, env=env, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


# A way of reading: Python code whose ``work()`` is timed (with the ``src`` to import it from, or None for
# this checkout's), or the files ``cat`` reads.
Way = tuple[str, Path | None] | list[str]
CAT = "cat of the weight files (the limit)"
CAT_BIN = "cat of the `.bin` copy"


def read_times(
    graph: Path, repeats: int, previous: list[tuple[str, Path]] | None = None, binary: Path | None = None
) -> dict[str, float]:
    """Median seconds of each way of reading ``graph``; ``previous``: revisions and their checkouts'
    ``src``, whose exact path and ``index`` are timed beside this one's; ``binary``: the same models as
    PyTorch ``.bin`` files (``bin_copy``), read by the exact path with torch imported beforehand."""
    files = [str(p) for p in weight_files(graph)]
    ways: dict[str, Way] = {
        CAT: files,
        "naive: every model loaded whole": (
            f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
            "import contextlib, io, naive\n"
            f"def work():\n    with contextlib.redirect_stdout(io.StringIO()): naive.main({str(graph)!r})",
            None,
        ),
        "`mothertree recover` on the folder (the CLI)": (CLI.format(graph=str(graph)), None),
        "exact path: `recover` on the folder (the Python API)": (EXACT.format(graph=str(graph)), None),
        "exact path, `--distance l2` (no rank screen)": (EXACT_L2.format(graph=str(graph)), None),
        "`index` into a new store": (INDEX.format(graph=str(graph)), None),
    }
    for revision, source in previous or []:
        ways[f"exact path at {revision}"] = (EXACT.format(graph=str(graph)), source)
        ways[f"`index` at {revision}"] = (INDEX.format(graph=str(graph)), source)
    if binary is not None:
        ways[CAT_BIN] = [str(p) for p in weight_files(binary)]
        ways["exact path on the `.bin` copy"] = ("import torch\n" + EXACT.format(graph=str(binary)), None)
    for way in ways.values():
        if isinstance(way, list):
            subprocess.run(["cat", *way], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    runs: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):  # interleaved, so that a slow spell of the machine falls on every way
        for name, way in ways.items():
            if isinstance(way, list):
                started = time.perf_counter()
                subprocess.run(["cat", *way], stdout=subprocess.DEVNULL, check=True)
                runs[name].append(time.perf_counter() - started)
            else:
                runs[name].append(_timed(*way))
    return {name: statistics.median(seconds) for name, seconds in runs.items()}


def bin_copy(graph: Path) -> Path | None:
    """``graph``'s models saved again by ``torch.save`` as one ``pytorch_model.bin`` each (made once, under
    ``.bench``), or None without torch: what a folder of old checkpoints costs to read."""
    try:
        import torch
        from safetensors.torch import load_file
    except ImportError:
        return None
    target = BENCH / f"{graph.name}-bin"
    if (target / "truth.json").is_file():
        return target
    for model in sorted(p for p in graph.iterdir() if p.is_dir()):
        state: dict[str, Any] = {}
        for shard in sorted(model.glob("*.safetensors")):
            state.update(load_file(shard))
        (target / model.name).mkdir(parents=True, exist_ok=True)
        torch.save(state, target / model.name / "pytorch_model.bin")
        for extra in model.glob("*.json"):
            if not extra.name.endswith(".index.json"):
                shutil.copy(extra, target / model.name / extra.name)
    shutil.copy(graph / "truth.json", target / "truth.json")
    return target


EXACT = "from mothertree.pipeline import recover\ndef work(): recover([{graph!r}])"
# The command line's `recover`, its imports (the start-up) excluded: what it sets up before them, then
# them, then the timed command; its output (the tree) discarded.
CLI = (
    "import contextlib, io\nfrom mothertree import cli\ncli._start_work(True, recovers=True)\n"
    "import mothertree.pipeline\n"
    "def work():\n    with contextlib.redirect_stdout(io.StringIO()):\n"
    "        cli.main(['recover', {graph!r}, '--quiet'], standalone_mode=False)"
)
EXACT_L2 = "from mothertree.pipeline import recover\ndef work(): recover([{graph!r}], distance='l2')"
INDEX = (
    "import tempfile\nfrom pathlib import Path\nfrom mothertree.indexing import index\n"
    "from mothertree.store import FingerprintStore\n"
    "def work():\n    with tempfile.TemporaryDirectory() as d, FingerprintStore(Path(d) / 's.sqlite') as s:\n"
    "        index([{graph!r}], s)"
)


def previous_checkout(revision: str, into: Path) -> Path:
    """A worktree of ``revision`` under ``into``, its moments kernel built where it has one; its ``src``."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(into), revision],
        check=True,
        capture_output=True,
    )
    if (into / "src" / "mothertree" / "features" / "_moments.c").is_file():
        subprocess.run(
            [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
            cwd=into,
            check=True,
            capture_output=True,
        )
    return into / "src"


def accuracy_section(rows: list[dict[str, Any]], command: str) -> list[str]:
    lines = [
        FINGERPRINTS.start,
        "## (i) Fingerprints: recovery from the store against recovery from the weights",
        "",
        f"`{command}` on {platform.machine()}, {os.cpu_count()} cores, {dt.date.today().isoformat()}. Each "
        "graph recovered from its folder (the exact path) and from a fresh store (`index`, then "
        "`recover --store`: moments exact, distances from 1,024 sampled coordinates per tensor, ranks "
        "from 48 x 48 sampled blocks); default settings both.",
        "",
        "| graph | models | edges | directed, exact | directed, fingerprints | edges that differ "
        "| MB read per model | fingerprint kB per model |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['graph']} | {r['models']} | {r['edges']} | {100 * r['exact']:.1f} % "
            f"| {100 * r['fingerprints']:.1f} % | {r['differ']} | {r['bytes_read_per_model'] / 1e6:.1f} "
            f"| {r['fingerprint_bytes_per_model'] / 1e3:.0f} |"
        )
    total = sum(r["edges"] for r in rows)
    right_exact = sum(round(r["exact"] * r["edges"]) for r in rows)
    right_prints = sum(round(r["fingerprints"] * r["edges"]) for r in rows)
    lines += [
        f"| **all** | {sum(r['models'] for r in rows)} | {total} | {right_exact}/{total} | "
        f"{right_prints}/{total} | {sum(r['differ'] for r in rows)} | | |",
        "",
        "The time each way takes to read a graph is section (i2).",
        FINGERPRINTS.end,
    ]
    return lines


def compared_values(graph: Path) -> tuple[int, int, int]:
    """What the exact path reads of ``graph``: its models, compared tensors, and values per model."""
    (features, *_), _ = read_features([graph])
    return features.n_models, features.n_tensors, int(features.numel.sum())


def reading_section(timed: Path, times: dict[str, float], repeats: int, command: str) -> list[str]:
    models, tensors, values = compared_values(timed)
    lines = [
        READING.start,
        "## (i2) Reading: each way against `cat` of the same bytes",
        "",
        f"`{command}` on {platform.machine()}, {os.cpu_count()} cores, {dt.date.today().isoformat()}. "
        f"Reading `{timed.relative_to(BENCH)}` ({_size(timed) / 1e6:.0f} MB of weight files), each way in "
        f"a fresh process (imports excluded), medians of {repeats} interleaved runs on a warm page cache:",
        "",
        "| way | seconds | × cat |",
        "|---|---|---|",
    ]
    for name, seconds in times.items():
        limit = times[CAT_BIN] if "`.bin` copy" in name else times[CAT]
        lines.append(f"| {name} | {seconds:.3f} | {seconds / limit:.1f} |")
    lines += [
        "",
        "`index` reads every byte once (a fingerprint holds the exact moments of every weight tensor, "
        "which orient the trees, at three precisions); the exact path reads the tensors it compares (and "
        f"the clock's sampled rows): here {tensors} tensors, {values:,} values a model "
        f"({4 * values * models / 1e6:.0f} MB as float32 for the {models} models). What they cost beyond "
        "`cat` is arithmetic: the moments kernel "
        "(`features/_moments.c`: one pass, float64, as stored and rounded to fp16 and bf16), and on the "
        "exact path the pairwise Gram products and the first pass of `--distance auto`'s rank screen "
        "(each model's nearest in its first four tensors where the two differ: `features/screen.py`), "
        "on two threads while the calling thread reads (and then reads the weight-decay clock's rows). "
        "The CLI's row is the command users run: its process also keeps the memory it frees "
        "(`_allocator`: fewer page faults) and loads BLAS on one thread (no threadpoolctl scan), which "
        "the Python API leaves to the process it runs in. Times exclude the imports (section "
        "(g)). The `.bin` copy is the same models saved again by `torch.save` (one `pytorch_model.bin` "
        "each), read with torch imported beforehand; its rows are against `cat` of the `.bin` files.",
        READING.end,
    ]
    return lines


def timed_graph(found: list[Path]) -> Path:
    """The MiniLM graph (ten real MiniLMs, the issue's measure) where built, else the largest."""
    minilm = BENCH / "minilm-graph"
    return minilm if minilm in found else max(found, key=_size)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="put the sections into docs/RESULTS.md")
    parser.add_argument("--only", choices=("accuracy", "reading"), help="measure one section")
    parser.add_argument(
        "--previous",
        metavar="REV",
        action="append",
        default=[],
        help="also time the exact path and `index` of this git revision (repeatable)",
    )
    args = parser.parse_args()
    found = graphs()
    if not found:
        sys.exit("no built graph under .bench: run `make bench-shapes` (or `make bench-small`) first")
    command = (
        "python benchmarks/fingerprint_bench.py"
        + (f" --only {args.only}" if args.only else "")
        + (f" --repeats {args.repeats}" if args.repeats != 3 else "")
        + "".join(f" --previous {revision}" for revision in args.previous)
    )
    if args.only != "reading":
        rows = []
        for graph in found:
            rows.append(compare(graph))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        FINGERPRINTS.publish(accuracy_section(rows, command), args.write)
    if args.only == "accuracy":
        return
    timed = timed_graph(found)
    with tempfile.TemporaryDirectory() as scratch:
        previous = [
            (revision, previous_checkout(revision, Path(scratch) / f"previous-{n}"))
            for n, revision in enumerate(args.previous)
        ]
        try:
            times = read_times(timed, args.repeats, previous, bin_copy(timed))
        finally:
            if previous:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False)
    READING.publish(reading_section(timed, times, args.repeats, command), args.write)


if __name__ == "__main__":
    main()
