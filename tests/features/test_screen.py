"""The nearest-rank screen (``features/screen.py``) on synthetic distances (a pure rule: no weights)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from mothertree.features.screen import NearestScreen
from mothertree.features.turns import TurnsClosedError

# Three models of RMS 1 (moments [mean, m2, m3, m4]): 0 and 1 are a pair, 2 a copy of 1 in some tensors.
MOMENTS = np.array([[0.0, 1.0, 0.0, 3.0]] * 3)


def distances(copy: bool) -> np.ndarray:
    d = np.array([[0.0, 0.1, 0.3], [0.1, 0.0, 0.2], [0.3, 0.2, 0.0]])
    if copy:
        d[1, 2] = d[2, 1] = 0.0  # 2 is 1 in this tensor: its nearest, and equal
    return d


# Tensor by tensor: whether 2 is a copy of 1 there.
COPIES = [False, True, False, False, True, False, False]


def chosen(screen: NearestScreen, t: int) -> list[tuple[int, int]]:
    return screen.pairs(t, [0, 1, 2], distances(COPIES[t]), MOMENTS)


def test_each_model_is_ranked_in_its_first_tensors_where_it_differs_and_wherever_it_is_equal():
    screen = NearestScreen(3, budget=2)
    picked = [chosen(screen, t) for t in range(len(COPIES))]
    # Model 0 (nearest 1) differs everywhere: its first two tensors. Models 1 and 2 are ranked wherever
    # they are equal (tensors 1 and 4), and in their first two tensors where they differ (0 and 2).
    assert [[pair for pair in pairs if pair[0] == 0] for pairs in picked] == [[(0, 1)]] * 2 + [[]] * 5
    for model in (1, 2):
        assert [t for t, pairs in enumerate(picked) if any(i == model for i, _ in pairs)] == [0, 1, 2, 4]


def test_the_choice_does_not_depend_on_the_order_the_threads_run_in():
    sequential = NearestScreen(3, budget=2)
    expected = [chosen(sequential, t) for t in range(len(COPIES))]
    threaded = NearestScreen(3, budget=2)
    got: dict[int, list[tuple[int, int]]] = {}
    threads = [
        threading.Thread(target=lambda t=t: got.__setitem__(t, chosen(threaded, t)))
        for t in reversed(range(len(COPIES)))  # the last tensor first: each waits for its turn
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert [got[t] for t in range(len(COPIES))] == expected


def test_a_skipped_tensor_hands_on_what_it_was_given():
    screen = NearestScreen(3, budget=1)
    assert (0, 1) in chosen(screen, 0)
    screen.turns.skip(1)
    screen.turns.skip(2)
    assert (0, 1) not in chosen(screen, 3)  # model 0 spent its one tensor in tensor 0


def test_closing_releases_a_comparison_waiting_for_its_turn():
    screen = NearestScreen(3)
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            chosen(screen, 3)  # tensors 0 to 2 never come
        except TurnsClosedError as exc:
            raised.append(exc)

    waiting = threading.Thread(target=wait)
    waiting.start()
    screen.turns.close()
    waiting.join(timeout=10)
    assert not waiting.is_alive() and len(raised) == 1
    with pytest.raises(TurnsClosedError):
        chosen(screen, 5)
