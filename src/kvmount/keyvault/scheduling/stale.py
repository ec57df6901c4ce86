"""Stale-if-error: the last content one principal was served, kept for an outage.

Opt-in (--serve-stale-on-error). Each successful read is kept under the key read sharing uses
(vault, principal, object, requested version; or a type's listing, for objectNamePattern and
objectTags), so content only ever goes back to the identity it was read for; a mount's own
credential is proved before (mount.py). Kept in memory only, bounded in bytes
(--stale-cache-bytes, oldest dropped first), never past its age limit, and dropped when Key
Vault says the object is gone or forbidden. A stale serve does not renew an
entry: the age counts from the read Key Vault answered.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A few MiB: thousands of secrets (a secret is at most 25 KB), a small share of the provider's memory.
DEFAULT_STALE_CACHE_BYTES = 4 * 1024 * 1024
# Counted for each entry on top of its content: the key, the entry and the answer's objects.
ENTRY_OVERHEAD = 512


@dataclass(frozen=True)
class StaleServe:
    """One object answered from the stale cache: what, how old, and why Key Vault was not used."""

    what: str
    age_seconds: float
    reason: str


@dataclass
class _Kept:
    value: Any
    size: int
    read_at: float


class StaleCache:
    """Content by read key, at most ``max_age`` seconds old and ``max_bytes`` in all;
    ``max_age`` 0 keeps nothing."""

    def __init__(self, max_age: float, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self.max_bytes = max_bytes
        self._clock = clock
        # In the order they were read, so expiry and the byte bound drop the oldest first.
        self._kept: OrderedDict[tuple[Any, ...], _Kept] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_age > 0

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    def keep(self, key: tuple[Any, ...], value: Any, size: int) -> None:
        """Remember ``value`` (about ``size`` bytes of content) as read just now."""
        if not self.enabled:
            return
        size += ENTRY_OVERHEAD
        with self._lock:
            self._remove(key)
            self._expire(self._clock())
            if size > self.max_bytes:
                return
            self._kept[key] = _Kept(value, size, self._clock())
            self._bytes += size
            while self._bytes > self.max_bytes:
                self._remove(next(iter(self._kept)))

    def get(self, key: tuple[Any, ...]) -> tuple[Any, float] | None:
        """The value kept for ``key`` and its age in seconds, if it is younger than max_age."""
        if not self.enabled:
            return None
        now = self._clock()
        with self._lock:
            self._expire(now)
            kept = self._kept.get(key)
            return None if kept is None else (kept.value, now - kept.read_at)

    def drop(self, prefix: tuple[Any, ...]) -> None:
        """Forget every key that starts with ``prefix`` (an object's versions and listings)."""
        n = len(prefix)
        with self._lock:
            for key in [k for k in self._kept if k[:n] == prefix]:
                self._remove(key)

    def _expire(self, now: float) -> None:
        while self._kept:
            key, kept = next(iter(self._kept.items()))
            if now - kept.read_at < self.max_age:
                return
            self._remove(key)

    def _remove(self, key: tuple[Any, ...]) -> None:
        kept = self._kept.pop(key, None)
        if kept is not None:
            self._bytes -= kept.size
