"""The feature loop's reused stack buffers (``features/buffers.py``): pure bookkeeping, no model needed."""

from __future__ import annotations

import numpy as np

from mothertree.features.buffers import WarmBuffers


def test_a_buffer_given_back_is_taken_again_for_a_stack_it_holds() -> None:
    buffers = WarmBuffers(budget=1 << 20)
    first = buffers.take(1000)
    buffers.give(first)
    again = buffers.take(800)
    assert again is first  # the same memory, already paged in
    assert buffers.take(800) is not first  # taken: not handed out twice


def test_the_smallest_buffer_that_holds_the_stack_is_taken() -> None:
    buffers = WarmBuffers(budget=1 << 20)
    small, large = np.empty(100, np.float32), np.empty(10_000, np.float32)
    buffers.give(large)
    buffers.give(small)
    assert buffers.take(50) is small
    assert buffers.take(50) is large
    assert buffers.take(50).size == 50  # none left: a new one


def test_buffers_beyond_the_budget_are_let_go_smallest_first() -> None:
    buffers = WarmBuffers(budget=4 * 1_500)
    large, small, tiny = (np.empty(n, np.float32) for n in (1_000, 400, 200))
    for buffer in (tiny, large, small):
        buffers.give(buffer)
    assert buffers.kept_bytes == 4 * 1_400  # the 200-value one went
    assert buffers.take(300) is small
