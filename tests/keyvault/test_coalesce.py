"""Coalescing of identical reads: one in flight serves all, briefly remembered, failures never kept."""

from __future__ import annotations

import threading
import time

import pytest

from kvmount.keyvault.coalesce import Coalescer


def test_concurrent_callers_share_one_read() -> None:
    coalescer = Coalescer(5)
    calls = 0
    gate = threading.Event()

    def read() -> str:
        nonlocal calls
        calls += 1
        gate.wait(5)
        return "value"

    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(coalescer.run("k", read))) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(5)
    assert results == ["value"] * 8 and calls == 1
    assert coalescer.run("k", lambda: "new") == "value", "still inside the window"
    assert coalescer.run("other", lambda: "other") == "other", "another key reads for itself"


def test_window_expires_and_zero_disables() -> None:
    coalescer = Coalescer(0.1)
    assert coalescer.run("k", lambda: 1) == 1
    time.sleep(0.15)
    assert coalescer.run("k", lambda: 2) == 2
    off = Coalescer(0)
    counter = iter(range(3))
    assert [off.run("k", lambda: next(counter)) for _ in range(3)] == [0, 1, 2]


def test_failures_are_not_kept() -> None:
    coalescer = Coalescer(5)

    def fail() -> str:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        coalescer.run("k", fail)
    assert coalescer.run("k", lambda: "ok") == "ok"
