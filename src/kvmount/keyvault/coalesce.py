"""Node-wide coalescing of identical Key Vault reads.

When P pods on a node mount the same objects with the same identity at about
the same time (a rotation round, a deployment's pods starting together), one
read serves them all: callers of a read already in flight wait for it, and a
result is reused for a short window. The key holds the vault, the principal
allowed to read, the object and the requested version, so content is never
shared across identities. Failures are not kept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar, cast

T = TypeVar("T")


class Coalescer:
    def __init__(self, window_seconds: float) -> None:
        self._window = window_seconds
        self._entries: dict[Hashable, tuple[Future[Any], float]] = {}
        self._lock = threading.Lock()

    def run(self, key: Hashable, compute: Callable[[], T]) -> T:
        if self._window <= 0:
            return compute()
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            entry = self._entries.get(key)
            owner = entry is None
            if entry is None:
                entry = (Future(), now)
                self._entries[key] = entry
        future = entry[0]
        if not owner:
            return cast(T, future.result())
        try:
            result = compute()
        except BaseException as err:
            with self._lock:
                self._entries.pop(key, None)
            future.set_exception(err)
            raise
        with self._lock:
            # The window starts when the read completes: a slow read is not stale on arrival.
            self._entries[key] = (future, time.monotonic())
        future.set_result(result)
        return result

    def _expire(self, now: float) -> None:
        stale = [k for k, (f, at) in self._entries.items() if f.done() and now - at >= self._window]
        for key in stale:
            del self._entries[key]
