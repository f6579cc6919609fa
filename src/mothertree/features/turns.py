"""Values handed on from tensor to tensor in the feature loop's order, while the tensors are compared on
several threads.

Some choices of the loop depend on every earlier tensor: a model found non-finite in one tensor is left
out of every later one; the rank screen (``features/screen.py``) counts the tensors each model was ranked
in. Each comparison takes its turn (``before``: waits until every earlier tensor has handed on, and takes
the last value handed on) and hands on its own (``hand_on``), so the choices are the ones one thread
reading tensor after tensor would make, whichever thread finishes first.

Comparisons start in tensor order (a ``ThreadPoolExecutor`` takes its queue in order), and each hands on
before it waits on nothing else, so the earliest one waiting is always running: no deadlock. A tensor no
one compares is ``skip``ped; ``close`` releases every waiter when the loop stops.
"""

from __future__ import annotations

import threading
from functools import partial
from typing import Generic, TypeVar

T = TypeVar("T")


class TurnsClosedError(RuntimeError):
    """The loop stopped (an error, or Ctrl-C) while a comparison waited for its turn."""


_SKIPPED = object()  # a tensor that hands on the value it was given


class Turns(Generic[T]):
    """A value handed on along the tensors ``0, 1, 2, ...``; ``start`` is what the first one is given."""

    def __init__(self, start: T) -> None:
        self._start = start
        self._handed: dict[int, object] = {}
        self._latest = -1  # the last tensor that handed on a value: those before it are forgotten
        self._closed = False
        self._condition = threading.Condition()

    def before(self, t: int) -> T:
        """The value the tensors before ``t`` handed on, once they all have.

        Raises:
            TurnsClosedError: ``close`` was called meanwhile.
        """
        with self._condition:
            for s in range(t - 1, -1, -1):
                self._condition.wait_for(partial(self._settled, s))
                if self._closed:
                    raise TurnsClosedError("the feature loop stopped")
                value = self._handed[s]
                if value is not _SKIPPED:
                    return value  # type: ignore[return-value]
            return self._start

    def hand_on(self, t: int, value: T) -> None:
        with self._condition:
            self._handed[t] = value
            self._latest = max(self._latest, t)
            for s in [s for s in self._handed if s < t]:
                del self._handed[s]  # no tensor after t looks further back than t; those before have looked
            self._condition.notify_all()

    def skip(self, t: int) -> None:
        """Tensor ``t`` hands on what it was given (no one compares it, or its comparison failed); nothing
        where it has handed on already."""
        with self._condition:
            if t not in self._handed and t > self._latest:
                self._handed[t] = _SKIPPED
                self._condition.notify_all()

    def close(self) -> None:
        """Release every comparison still waiting (they raise ``TurnsClosedError``)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def _settled(self, s: int) -> bool:
        return s in self._handed or self._closed
