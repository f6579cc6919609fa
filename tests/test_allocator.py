"""The CLI's allocator setting (``_allocator``)."""

from __future__ import annotations

import platform
import sys

import pytest

from mothertree import _allocator


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt"
)
def test_glibc_takes_both_thresholds() -> None:
    assert _allocator.keep_freed_memory()


def test_elsewhere_nothing_is_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert not _allocator.keep_freed_memory()
