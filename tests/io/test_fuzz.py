"""Property: any mutation of a valid checkpoint is read or refused with a project error, quickly, in bounded
memory (see tests/fuzzing.py). ``make fuzz`` runs the long campaign (benchmarks/fuzz.py)."""

from __future__ import annotations

import random
import resource
from pathlib import Path

import pytest
from fuzzing import TARGETS, TIME_LIMIT_S, Seeds, Target, run_one, write_seeds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("torch")
pytest.importorskip("peft")

pytestmark = pytest.mark.slow

EXAMPLES = 150  # per reader; about a minute in all on 2 cores
MEMORY_GROWTH_LIMIT_MB = 1024


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Seeds:
    return write_seeds(tmp_path_factory.mktemp("seeds"))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-work")


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_mutated_inputs_are_read_or_refused(target: Target, seeds: Seeds, work: Path) -> None:
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    outcomes: dict[str, int] = {}
    folder = work / target.name.replace(" ", "-")
    folder.mkdir(exist_ok=True)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,  # the time limit is enforced inside, by an alarm that interrupts a hang
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(st.randoms(use_true_random=False))
    def check(rng: random.Random) -> None:
        outcome, data = run_one(target, seeds, folder, rng)
        outcomes[outcome.kind] = outcomes.get(outcome.kind, 0) + 1
        assert outcome.kind in ("read", "refused"), (
            f"{target.name}: {outcome.kind} ({outcome.detail}) on a {len(data)}-byte input "
            f"starting {data[:120]!r}"
        )
        assert outcome.seconds < TIME_LIMIT_S

    check()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 - peak_before
    assert grown < MEMORY_GROWTH_LIMIT_MB, f"peak memory grew by {grown} MB"
    # The mutations must reach the parsers, not only break files at their first byte.
    assert outcomes.get("refused", 0) > 0, outcomes
