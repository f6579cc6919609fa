"""Sections of ``docs/RESULTS.md`` written by their own commands, which ``make bench`` keeps as they are.

Each sits between two HTML comments; its command replaces it in place (or appends it), and ``run.py``,
which rewrites the rest of the file, copies it over unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "RESULTS.md"


@dataclass(frozen=True)
class Section:
    start: str
    end: str

    def current(self, results_file: Path) -> str:
        """The section already in ``results_file`` (markers included), or ``""``."""
        text = results_file.read_text() if results_file.exists() else ""
        if self.start not in text or self.end not in text:
            return ""
        return self.start + text.split(self.start, 1)[1].split(self.end, 1)[0] + self.end

    def write(self, lines: list[str], results_file: Path) -> None:
        """Put ``lines`` (which begin with ``start`` and end with ``end``) into ``results_file``."""
        text = results_file.read_text() if results_file.exists() else ""
        block = "\n".join(lines)
        if self.start in text and self.end in text:
            before, rest = text.split(self.start, 1)
            text = before + block + rest.split(self.end, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        results_file.write_text(text)

    def publish(self, lines: list[str], write: bool) -> None:
        """Print the section (stdout), and with ``write`` put it into ``docs/RESULTS.md``."""
        print("\n".join(lines))
        if write:
            self.write(lines, RESULTS)


SHAPES = Section("<!-- shapes: benchmarks/shapes_bench.py -->", "<!-- /shapes -->")
FUZZ = Section("<!-- fuzz: benchmarks/fuzz.py -->", "<!-- /fuzz -->")
REPORT = Section("<!-- report: benchmarks/report_bench.py -->", "<!-- /report -->")
STARTUP = Section("<!-- startup: benchmarks/startup.py -->", "<!-- /startup -->")
SCALE = Section("<!-- scale: benchmarks/scale_bench.py -->", "<!-- /scale -->")
FINGERPRINTS = Section("<!-- fingerprints: benchmarks/fingerprint_bench.py -->", "<!-- /fingerprints -->")
READING = Section("<!-- reading: benchmarks/fingerprint_bench.py -->", "<!-- /reading -->")
RELATIONS_SECTION = Section("<!-- relations: benchmarks/relations_bench.py -->", "<!-- /relations -->")
HUB_SECTION = Section("<!-- hub: benchmarks/hub_bench.py -->", "<!-- /hub -->")
CLOCK_SECTION = Section("<!-- clock: benchmarks/clock_bench.py -->", "<!-- /clock -->")
CALIBRATION = Section("<!-- calibration: benchmarks/direction_calibration.py -->", "<!-- /calibration -->")
KEPT = (
    SHAPES,
    FUZZ,
    REPORT,
    STARTUP,
    SCALE,
    FINGERPRINTS,
    READING,
    RELATIONS_SECTION,
    HUB_SECTION,
    CLOCK_SECTION,
    CALIBRATION,
)
