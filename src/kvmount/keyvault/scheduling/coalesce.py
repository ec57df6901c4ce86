"""Node-wide coalescing of identical Key Vault reads.

When P pods on a node mount the same objects with the same identity at about
the same time (a rotation round, a deployment's pods starting together), one
read serves them all: callers of a read already in flight wait for it. A new
mount takes a completed read only if that read was still in flight when the
mount began (its own reads may wait in the fetch queue), so a mount that starts
after a change always sees it; rotation polls, which upstream answers no
fresher, may take any read completed within the window. The key holds the
vault, the principal allowed to read, the object and the requested version, so
content is never shared across identities. Failures are not kept.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar, cast

T = TypeVar("T")


@dataclass
class _Read:
    # While the read is in flight; its callers wait on it. A completed read keeps only its
    # result: a Future (with its Condition, lock and deque) is about 1.6 KiB, and at 1,000
    # reads/s a 5 s window keeps thousands of completed reads (bench/RESULTS.md).
    future: Future[Any] | None
    result: Any = None
    done_at: float = 0.0


class Coalescer:
    def __init__(self, window_seconds: float) -> None:
        self._window = window_seconds
        self._entries: dict[Hashable, _Read] = {}
        # Completed reads in the order they completed, so expiry looks only at the oldest
        # (scanning every entry on every read cost a third of a read's CPU at 1,000 reads/s).
        self._completed: deque[tuple[Hashable, _Read]] = deque()
        self._lock = threading.Lock()

    def run(self, key: Hashable, compute: Callable[[], T], *, since: float | None) -> T:
        """compute()'s result, or that of an identical read in flight. A completed read is
        taken if it completed after ``since`` (a new mount's start, time.monotonic()); with
        ``since`` None (a rotation poll), any read completed within the window."""
        if self._window <= 0:
            return compute()
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            entry = self._entries.get(key)
            if entry is not None and entry.future is None and (since is None or entry.done_at >= since):
                return cast(T, entry.result)
            joined = entry.future if entry is not None else None
            if joined is None:
                if entry is not None:
                    # Superseded: its place in the expiry queue stays, its content need not.
                    entry.result = None
                entry = _Read(Future())
                self._entries[key] = entry
        if joined is not None:
            return cast(T, joined.result())
        assert entry is not None and entry.future is not None
        future = entry.future
        try:
            result = compute()
        except BaseException as err:
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
            future.set_exception(err)
            raise
        # The window starts when the read completes: a slow read is not stale on arrival.
        with self._lock:
            entry.result, entry.future = result, None
            entry.done_at = time.monotonic()
            self._completed.append((key, entry))
        future.set_result(result)
        return result

    def _expire(self, now: float) -> None:
        while self._completed and now - self._completed[0][1].done_at >= self._window:
            key, entry = self._completed.popleft()
            if self._entries.get(key) is entry:
                del self._entries[key]
