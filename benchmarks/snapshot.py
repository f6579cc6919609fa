"""Snapshots of `mothertree recover` under many settings, and their comparison: a refactor changes nothing.

    python benchmarks/snapshot.py take OUT GRAPH...     # recover each graph (a folder with truth.json)
    python benchmarks/snapshot.py compare BEFORE AFTER  # exit 1 if any output differs
    python benchmarks/snapshot.py tables OUT.md ZOO SPLIT:SIZE...  # the bench's tables of built splits

Per graph: JSON under every direction, distance and tree count below, text and DOT output, the saved
features (.npz) and the JSON recovered from them. Take a snapshot with the old code (e.g. a worktree of the
previous commit on PYTHONPATH) and one with the new, on the same graphs. Keys the new contract adds are
left out of the comparison (``ADDED_KEYS``); every other value must be equal, floats bit for bit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner

from mothertree.cli import main as cli

SETTINGS: dict[str, list[str]] = {
    "default": [],
    "norm": ["--direction", "norm"],
    "falls": ["--direction", "falls"],
    "rises": ["--direction", "rises", "--lam", "0.5"],
    "l2": ["--distance", "l2"],
    "rank": ["--distance", "rank"],
    "K": ["--trees", "{k}"],
    "K-falls": ["--trees", "{k}", "--direction", "falls"],
    "one-tree": ["--trees", "1", "--distance", "l2"],
}
# Keys of the result JSON that format 1 added: not in snapshots of older code.
ADDED_KEYS = {"top": ("format", "mothertree_version"), "edge": ("known",)}


def take(out: Path, graphs: list[Path]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    runner = CliRunner()
    for graph in graphs:
        truth = json.loads((graph / "truth.json").read_text())
        roots = {e["parent"] for e in truth["edges"]} - {e["child"] for e in truth["edges"]}
        for name, args in SETTINGS.items():
            args = [a.format(k=len(roots)) for a in args]
            extra = ["--save-features", str(out / f"{graph.name}.npz")] if name == "default" else []
            result = runner.invoke(cli, ["recover", str(graph), "--format", "json", "-q", *args, *extra])
            (out / f"{graph.name}.{name}.json").write_text(_output(result))
        for fmt in ("text", "dot"):
            result = runner.invoke(cli, ["recover", str(graph), "--format", fmt, "-q"])
            (out / f"{graph.name}.default.{fmt}").write_text(result.stdout)
        # This graph's files only (``save_feature_sets``: NAME.npz, or NAME-group<k>.npz for several
        # groups), not those of a graph whose name it begins.
        own = [out / f"{graph.name}.npz", *out.glob(f"{graph.name}-group*.npz")]
        saved = sorted(str(p) for p in own if p.is_file())
        result = runner.invoke(cli, ["recover", *saved, "--format", "json", "-q"])
        (out / f"{graph.name}.from-npz.json").write_text(_output(result))
        print(f"{graph.name}: done", file=sys.stderr)


def tables(out: Path, zoo: Path, splits: list[str]) -> None:
    """The tables ``make bench`` prints for each split (``zoo_bench.split_section``), built in ``zoo``."""
    sys.path.insert(0, str(Path(__file__).parent))
    import zoo_bench

    lines = []
    for split in splits:
        name, _, size = split.partition(":")
        rows, _ = zoo_bench.split_section(name, zoo / f"{name}-{size or 'small'}")
        lines += [f"### {name} ({size or 'small'})", *rows, ""]
    out.write_text("\n".join(lines))


def _output(result: Any) -> str:
    return str(result.stdout) if result.exit_code == 0 else f"EXIT {result.exit_code}\n{result.stderr}"


def compare(before: Path, after: Path) -> int:
    """Print every file that differs; return how many do."""
    differ = 0
    files = sorted(before.iterdir())
    for old in files:
        new = after / old.name
        same = new.exists() and (_same_npz(old, new) if old.suffix == ".npz" else _same_text(old, new))
        if not same:
            differ += 1
            print(f"differs: {old.name}")
    print(f"{len(files)} files compared, {differ} differ")
    return differ


def _same_text(old: Path, new: Path) -> bool:
    a, b = old.read_text(), new.read_text()
    if old.suffix != ".json" or a.startswith("EXIT") or b.startswith("EXIT"):
        return a == b
    before, after = json.loads(a), json.loads(b)
    for key in ADDED_KEYS["top"]:
        before.pop(key, None), after.pop(key, None)
    for edge in [*before["edges"], *after["edges"]]:
        for key in ADDED_KEYS["edge"]:
            edge.pop(key, None)
    return bool(before == after)


def _same_npz(old: Path, new: Path) -> bool:
    with np.load(old) as a, np.load(new) as b:
        if set(a) != set(b):
            return False
        for key in a:
            if key == "header":
                headers = [json.loads(str(a[key])), json.loads(str(b[key]))]
                for header in headers:
                    header["metadata"].pop("seconds", None)  # reading time
                if headers[0] != headers[1]:
                    return False
            elif not np.array_equal(a[key], b[key], equal_nan=True):
                return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    taking = commands.add_parser("take")
    taking.add_argument("out", type=Path)
    taking.add_argument("graphs", type=Path, nargs="+")
    comparing = commands.add_parser("compare")
    comparing.add_argument("before", type=Path)
    comparing.add_argument("after", type=Path)
    tabling = commands.add_parser("tables")
    tabling.add_argument("out", type=Path)
    tabling.add_argument("zoo", type=Path)
    tabling.add_argument("splits", nargs="+")
    args = parser.parse_args()
    if args.command == "take":
        take(args.out, args.graphs)
    elif args.command == "tables":
        tables(args.out, args.zoo, args.splits)
    else:
        sys.exit(1 if compare(args.before, args.after) else 0)


if __name__ == "__main__":
    main()
