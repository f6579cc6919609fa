"""BLAS on one thread (``features/blas.py``), each case in a fresh interpreter: a thread count is read as
a BLAS library loads, and this test process has numpy loaded long since."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mothertree.features.blas import THREAD_VARIABLES

REPORT = """
import json, os, sys
from mothertree.features import blas
started = blas.load_on_one_thread()
import numpy, scipy.linalg
from threadpoolctl import threadpool_info
print(json.dumps({
    "started": started,
    "threads": sorted({info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}),
    "limits_at_each_loop": type(blas.one_blas_thread()).__name__ != "nullcontext",
}))
"""


def report(code: str, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**clean, **env}
    )
    return dict(json.loads(done.stdout))


def test_a_process_that_sets_it_before_numpy_loads_blas_on_one_thread() -> None:
    got = report(REPORT)
    assert got == {"started": True, "threads": [1], "limits_at_each_loop": False}


def test_a_thread_count_the_user_set_is_theirs() -> None:
    got = report(REPORT, OPENBLAS_NUM_THREADS="2")
    assert got["started"] is False and got["limits_at_each_loop"] is True


def test_too_late_once_numpy_is_loaded() -> None:
    got = report("import numpy\n" + REPORT)
    assert got["started"] is False and got["limits_at_each_loop"] is True
