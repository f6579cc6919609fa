"""``make fuzz``: the long fuzz campaign over the readers, section (e) of ``docs/RESULTS.md``.

For each reader of ``tests/fuzzing.py`` (safetensors headers, shard indexes, PEFT adapter configs, zip
``.bin`` files), ``--inputs`` mutations of a valid seed, each from its own seeded random stream (input ``i``
of reader ``r`` is the same on every run), opened with ``open_checkpoint`` and read in full. Counted: valid
reads, project errors (``MotherTreeError``, by class), crashes (any other exception), hangs (over
``TIME_LIMIT_S``); time per input and peak memory. The process runs under an address-space limit
(``--memory-gib``) so that a blow-up is a MemoryError (a crash), not a swap storm. Every crash and hang is
saved under ``.bench/fuzz/findings`` with the input that caused it.

    python benchmarks/fuzz.py                  # print the section
    python benchmarks/fuzz.py --write          # and put it into docs/RESULTS.md (``make fuzz``)
    python benchmarks/fuzz.py --inputs 500     # a shorter run
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import random
import resource
import shutil
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from fuzzing import TARGETS, TIME_LIMIT_S, Seeds, Target, clean, run_one, write_seeds  # noqa: E402
from sections import FUZZ  # noqa: E402

FUZZ_DIR = ROOT / ".bench" / "fuzz"


@dataclass
class Tally:
    target: str
    kinds: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    seconds: list[float] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)


def campaign(target: Target, seeds: Seeds, n_inputs: int, quiet: bool) -> Tally:
    work = FUZZ_DIR / "work" / target.name.replace(" ", "-")
    work.mkdir(parents=True, exist_ok=True)
    clean(work)
    tally = Tally(target.name)
    for i in tqdm(
        range(n_inputs), desc=target.name, disable=quiet or not sys.stderr.isatty(), file=sys.stderr
    ):
        rng = random.Random(f"{target.name}:{i}")
        outcome, data = run_one(target, seeds, work, rng)
        tally.kinds[outcome.kind] += 1
        tally.seconds.append(outcome.seconds)
        if outcome.kind == "refused":
            tally.refusals[outcome.detail] += 1
        elif outcome.kind in ("crash", "hang"):
            finding = FUZZ_DIR / "findings" / f"{work.name}-{i}.input"
            finding.parent.mkdir(parents=True, exist_ok=True)
            finding.write_bytes(data)
            tally.findings.append(f"input {i}: {outcome.kind}, {outcome.detail} (saved as `{finding.name}`)")
    return tally


def section(
    tallies: list[Tally], n_inputs: int, seconds: float, peak_mb: float, memory_gib: float
) -> list[str]:
    lines = [
        FUZZ.start,
        "## (e) Fuzzing the readers",
        "",
        f"Measured {dt.date.today().isoformat()} on {platform.machine()}, Python "
        f"{platform.python_version()}, {n_inputs:,} inputs per reader, {seconds / 60:.1f} min in all, peak "
        f"RSS {peak_mb:,.0f} MB under a {memory_gib:g} GiB address-space limit. Command: `make fuzz` "
        "(`python benchmarks/fuzz.py --write`).",
        "",
        "Each input is a mutation of a valid file written by the real writer (safetensors, "
        "`torch.save`, peft `save_pretrained`, an index as transformers writes it): byte flips, cuts, "
        "splices and interesting integers, or a JSON value replaced by a huge integer, a deep nest, a "
        "path or a wrong type, or the pickle inside a zip `.bin` mutated and the archive rebuilt "
        "(`tests/fuzzing.py`). It is opened with `open_checkpoint` and every tensor read. A crash is any "
        f"exception that is not a `MotherTreeError`; a hang is a run over {TIME_LIMIT_S} s. `make test` "
        "runs 150 inputs per reader of the same kind (`tests/io/test_fuzz.py`).",
        "",
        "| reader | inputs | valid reads | project errors | crashes | hangs | median / max time per input |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for tally in tallies:
        times = np.array(tally.seconds)
        lines.append(
            f"| {tally.target} | {sum(tally.kinds.values()):,} | {tally.kinds['read']:,} | "
            f"{tally.kinds['refused']:,} | {tally.kinds['crash']} | {tally.kinds['hang']} | "
            f"{np.median(times) * 1000:.1f} ms / {times.max() * 1000:.0f} ms |"
        )
    lines += ["", "Project errors by class:", ""]
    for tally in tallies:
        classes = ", ".join(f"{name} {count:,}" for name, count in tally.refusals.most_common())
        lines.append(f"- {tally.target}: {classes}")
    findings = [f"- {tally.target}: {finding}" for tally in tallies for finding in tally.findings]
    lines += ["", "Findings (crashes and hangs):" if findings else "No crash and no hang.", *findings]
    lines.append(FUZZ.end)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inputs", type=int, default=10_000, help="inputs per reader (default 10,000)")
    parser.add_argument("--memory-gib", type=float, default=8.0, help="address-space limit (default 8 GiB)")
    parser.add_argument("--write", action="store_true", help="put the section into docs/RESULTS.md")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    args = parser.parse_args()
    # Mutated pickles make torch warn (an unusual protocol, ...): the outcome is what is counted.
    warnings.simplefilter("ignore")
    limit = int(args.memory_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    start = time.perf_counter()
    seed_folder = FUZZ_DIR / "seeds"
    if seed_folder.exists():
        shutil.rmtree(seed_folder)
    seeds = write_seeds(seed_folder)
    tallies = [campaign(target, seeds, args.inputs, args.quiet) for target in TARGETS]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = section(tallies, args.inputs, time.perf_counter() - start, peak_mb, args.memory_gib)
    FUZZ.publish(lines, args.write)
    if any(tally.findings for tally in tallies):
        sys.exit(1)


if __name__ == "__main__":
    main()
