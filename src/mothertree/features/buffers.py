"""Buffers the feature loop hands back and takes again, so that its stacks reuse memory already paged in.

A fresh page of memory costs a page fault when first written: measured here ~1.6 us a 4 KiB page, so
a 10-model stack of one 384 x 384 float32 tensor (5.9 MB, 1,440 pages) cost 2.3 ms to fill fresh and
0.2 ms to fill again, while copying it from the page cache is ~0.6 ms. glibc only sometimes keeps freed
large blocks mapped (its thresholds move with what was freed), so a fresh process faulted ~16,000
times in the MiniLM graph's loop, and cost a core ~25 ms more than the same loop run a second time.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


class WarmBuffers:
    """Flat float32 buffers, taken for a stack and given back once it is compared.

    ``take(count)`` returns the smallest buffer given back that holds ``count`` values, else a new one;
    ``give`` keeps a buffer for the next ``take`` while all kept hold at most ``budget`` bytes (beyond
    that the smallest are let go). One thread takes and gives (the loop's reading thread)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._free: list[npt.NDArray[np.float32]] = []

    def take(self, count: int) -> npt.NDArray[np.float32]:
        fitting = [k for k, buffer in enumerate(self._free) if buffer.size >= count]
        if not fitting:
            return np.empty(count, dtype=np.float32)
        best = min(fitting, key=lambda k: self._free[k].size)
        return self._free.pop(best)

    def give(self, buffer: npt.NDArray[np.float32]) -> None:
        self._free.append(buffer)
        self._free.sort(key=lambda kept: kept.size, reverse=True)
        while self.kept_bytes > self.budget:
            self._free.pop()

    @property
    def kept_bytes(self) -> int:
        return sum(buffer.nbytes for buffer in self._free)
