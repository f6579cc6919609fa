"""One BLAS thread for the feature loops' linear algebra.

That algebra is many small problems: SVDs and Cholesky factors of 128 x 256 sketched differences (48 x 48
sampled blocks from fingerprints), Gram products of a few models' chunks. OpenBLAS splits each over its
thread pool, whose hand-offs cost more than the work, and a pool beside the moments kernel's threads, the
compare threads or another process on the machine oversubscribes the cores. Measured on 2 cores: one
call's 64 SVDs of 128 x 256 matrices took 0.13-0.27 s on OpenBLAS's two threads and 0.09 s on one, the
machine otherwise idle; beside a training run on the other core, `recover` of the MiniLM graph (10
models) took 2.4-3.7 s with two and 0.33 s with one.
"""

from __future__ import annotations

import os
import sys
from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache
from typing import Any

# What BLAS libraries read their thread count from as they load.
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
_loaded_on_one_thread = False


def load_on_one_thread() -> bool:
    """For a process whose only work is mothertree's (a CLI command): BLAS on one thread from the moment
    it loads, so that no loop needs to find and limit it (``ThreadpoolController`` reads every library
    the process loaded: ~7 ms). Only before numpy is imported, and where the user set no thread count;
    whether it did. The variables pass on to child processes (Dask workers: the same work)."""
    global _loaded_on_one_thread
    if "numpy" in sys.modules or any(name in os.environ for name in THREAD_VARIABLES):
        return False
    os.environ.update(dict.fromkeys(THREAD_VARIABLES, "1"))
    _loaded_on_one_thread = True
    return True


@lru_cache(maxsize=1)
def _controller() -> Any:
    # scipy.linalg carries an OpenBLAS of its own: loaded first, so that the controller sees both.
    import scipy.linalg  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def one_blas_thread() -> AbstractContextManager[Any]:
    """Within it, every BLAS library numpy and scipy loaded runs on one thread (restored after)."""
    if _loaded_on_one_thread:
        return nullcontext()
    return _controller().limit(limits=1, user_api="blas")
