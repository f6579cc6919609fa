"""The CLI's process keeps the memory it frees, for the next tensor, instead of giving it back to the OS.

glibc gives a freed block back when it was larger than the mmap threshold (128 KiB at first, raised as
large blocks are freed), or trims it from the heap's top, and a block taken again from fresh pages
faults on each 4 KiB page when first written (~1.6 us a page measured here: ``features/buffers.py``).
The feature loop takes and frees blocks of a few MB for each tensor (sketches and their differences,
the sparse-merge screen's reads), so a fresh process faulted ~12,000 times on the MiniLM graph, and
~8,000 with both thresholds raised (``python benchmarks/fingerprint_bench.py --only reading``: the
CLI's row against the API's). A CLI command is the only user of its process, so it raises them; the
Python API leaves the allocator of the process it runs in as it is.
"""

from __future__ import annotations

import ctypes
import sys

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Larger blocks still come from mmap and go back when freed: a whole tensor of a large model, read alone.
MMAP_THRESHOLD = 64 << 20
# Free memory at the heap's top kept for reuse; more goes back to the OS.
TRIM_THRESHOLD = 512 << 20


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; whether it did (not on other C
    libraries or systems, where nothing changes)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    # Both: setting either turns off glibc's own moving of the other (the trim threshold alone doubled the
    # faults).
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
