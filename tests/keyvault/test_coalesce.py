"""Coalescing of identical reads: one in flight serves all; a completed read serves a new mount
only if it was in flight when the mount began, and rotation polls within the window; failures are
never kept."""

from __future__ import annotations

import gc
import sys
import threading
import time
import weakref
from concurrent.futures import Future

import pytest

from kvmount.keyvault.scheduling.coalesce import Coalescer


def joined(thread: threading.Thread) -> bool:
    """The thread waits for the shared read's result (its stack is inside Future.result)."""
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == "result" and "concurrent" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def test_concurrent_callers_share_one_read() -> None:
    coalescer = Coalescer(5)
    calls = 0
    started = threading.Event()
    gate = threading.Event()

    def read() -> str:
        nonlocal calls
        calls += 1
        started.set()
        gate.wait(5)
        return "value"

    results: list[str] = []
    first = threading.Thread(target=lambda: results.append(coalescer.run("k", read, since=time.monotonic())))
    first.start()
    assert started.wait(5)
    # The read is in flight: every later caller, new mount or poll, joins it.
    others = [
        threading.Thread(
            target=lambda poll=i % 2 == 0: results.append(
                coalescer.run("k", read, since=None if poll else time.monotonic())
            )
        )
        for i in range(7)
    ]
    for t in others:
        t.start()
    deadline = time.monotonic() + 5
    while not all(joined(t) for t in others):
        assert time.monotonic() < deadline, "callers did not join the read in flight"
    gate.set()
    for t in [first, *others]:
        t.join(5)
    assert results == ["value"] * 8 and calls == 1
    assert coalescer.run("k", lambda: "poll", since=None) == "value", "a poll inside the window"
    assert coalescer.run("other", lambda: "other", since=None) == "other", "another key reads for itself"


def test_a_new_mount_takes_only_reads_in_flight_when_it_began() -> None:
    coalescer = Coalescer(60)
    began = time.monotonic()
    assert coalescer.run("k", lambda: "old", since=began) == "old"
    # The value changed after that read: a mount starting now must see the change...
    assert coalescer.run("k", lambda: "new", since=time.monotonic()) == "new"
    # ...a mount that began while the newest read was in flight may take it, as may a rotation poll.
    assert coalescer.run("k", lambda: "newer", since=began) == "new"
    assert coalescer.run("k", lambda: "newer", since=None) == "new"


def test_window_expires_and_zero_disables() -> None:
    coalescer = Coalescer(0.1)
    assert coalescer.run("k", lambda: 1, since=None) == 1
    deadline = time.monotonic() + 0.15
    while time.monotonic() < deadline:
        pass
    assert coalescer.run("k", lambda: 2, since=None) == 2
    off = Coalescer(0)
    counter = iter(range(3))
    assert [off.run("k", lambda: next(counter), since=None) for _ in range(3)] == [0, 1, 2]


def test_failures_are_not_kept() -> None:
    coalescer = Coalescer(5)

    def fail() -> str:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        coalescer.run("k", fail, since=None)
    assert coalescer.run("k", lambda: "ok", since=None) == "ok"


class _Content:
    """A read's result that can be watched for release."""


def test_completed_reads_hold_only_their_content() -> None:
    """Within the window a completed read keeps its result but not its Future (about 1.6 KiB),
    and a read superseded by a newer one of the same key keeps nothing (memory, bench/RESULTS.md)."""
    coalescer = Coalescer(60)
    box = [_Content()]
    watch = weakref.ref(box[0])
    assert coalescer.run("k", lambda: box[0], since=time.monotonic()) is watch()
    assert not any(isinstance(v, Future) for e in coalescer._entries.values() for v in vars(e).values())
    box.clear()
    gc.collect()
    assert watch() is not None, "a rotation poll within the window may still take it"
    newer = _Content()
    assert coalescer.run("k", lambda: newer, since=time.monotonic()) is newer
    gc.collect()
    assert watch() is None
    assert coalescer.run("k", _Content, since=None) is newer
