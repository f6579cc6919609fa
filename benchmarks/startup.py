"""How long the command takes to start: section (g) of ``docs/RESULTS.md``.

Each command is run ``--repeats`` times, interleaved with the others (so that a busy moment costs every
row alike), on a warm page cache; the medians are reported, with the ratio to ``python -c "import numpy"``
(issue 12 asks ``mothertree --help`` for at most 1.5x that).

    python benchmarks/startup.py            # print the section
    python benchmarks/startup.py --write    # and put it into docs/RESULTS.md (``make bench-startup``)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from sections import STARTUP  # noqa: E402

MOTHERTREE = str(Path(sys.executable).with_name("mothertree"))
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    'python -c "import numpy"': [sys.executable, "-c", "import numpy"],
    "mothertree --help": [MOTHERTREE, "--help"],
    "mothertree recover --help": [MOTHERTREE, "recover", "--help"],
    "mothertree --version": [MOTHERTREE, "--version"],
    'python -c "import mothertree; mothertree.recover"': [
        sys.executable,
        "-c",
        "import mothertree; mothertree.recover",
    ],
}
BASELINE = 'python -c "import numpy"'


def seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--write", action="store_true", help="put the section into docs/RESULTS.md")
    args = parser.parse_args()
    for command in COMMANDS.values():  # warm the page cache and the bytecode caches
        seconds(command)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            times[name].append(seconds(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    lines = [
        STARTUP.start,
        "## (g) Start-up",
        "",
        f"Measured {dt.date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}: medians of {args.repeats} interleaved runs, warm caches. Command: "
        "`make bench-startup` (`python benchmarks/startup.py --write`). The command line imports only click "
        "and the names of its options up front; each command imports what it runs.",
        "",
        f"| command | median | vs `{BASELINE}` |",
        "|---|---:|---:|",
        *(
            f"| `{name}` | {value:.3f} s | {value / medians[BASELINE]:.2f}x |"
            for name, value in medians.items()
        ),
        STARTUP.end,
    ]
    STARTUP.publish(lines, args.write)


if __name__ == "__main__":
    main()
