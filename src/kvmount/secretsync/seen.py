"""What one process last saw of the Secrets it syncs, and the owners waiting to be added to them.

The driver may not list or watch Secrets (its RBAC on them is get, create, update), so it keeps
the Secret each write answered or each read returned, and writes only when what a volume needs
differs from that copy. The copy holds a digest of the data, not the data: the content lives in
the volumes and, once, in the API server. A copy is read again after ``SEEN_FOR`` (a Secret
deleted or edited by hand is noticed within that time, or at once on the next change of its
content, whose write then fails on the stale resourceVersion and reads again).

Many volumes of a node that share a Secret queue for its lock; each names its owners here first,
so whichever volume writes adds every queued owner in one update and the others find theirs
already present (``PendingOwners``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["SEEN_FOR", "PendingOwners", "Seen", "SeenSecrets", "digest"]

# How long a Secret last seen is trusted without reading it again (jittered down by up to a
# quarter, so the nodes of a cluster do not re-read together): one GET per Secret per node per
# hour at most, whatever the number of volumes.
SEEN_FOR = 3600.0


def digest(data: Mapping[str, str]) -> str:
    """A Secret's data (base64 values, as the API carries them), reduced to compare, never to show."""
    return hashlib.sha256(json.dumps(dict(data), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Seen:
    """A Secret as last read or written: everything but its data (and managedFields), and the
    digest of the data."""

    secret: dict[str, Any]
    data: str
    until: float


class SeenSecrets:
    """Thread-safe; keyed "namespace/name". Holds only the Secrets this process syncs, each for
    at most ``SEEN_FOR``."""

    def __init__(self, seen_for: float = SEEN_FOR) -> None:
        self._seen_for = seen_for
        self._lock = threading.Lock()
        self._held: dict[str, Seen] = {}

    def get(self, key: str) -> Seen | None:
        """The copy, deep enough to edit; None if none is held or it is due for a read."""
        now = time.monotonic()
        with self._lock:
            held = self._held.get(key)
            if held is not None and held.until <= now:
                del self._held[key]
                held = None
        return None if held is None else Seen(copy.deepcopy(held.secret), held.data, held.until)

    def put(self, key: str, secret: Mapping[str, Any]) -> Seen:
        """Hold ``secret`` as read or written (a copy without data or managedFields); returns
        a copy of what is held, to edit."""
        kept = {k: copy.deepcopy(v) for k, v in secret.items() if k != "data"}
        meta = kept.setdefault("metadata", {})
        # Not sent back: an update that omits them leaves the server's as they are.
        meta.pop("managedFields", None)
        now = time.monotonic()
        until = now + self._seen_for * random.uniform(0.75, 1.0)
        with self._lock:
            # Expired copies go here, so memory follows the Secrets synced within the last hour.
            self._held = {k: s for k, s in self._held.items() if s.until > now}
            held = self._held[key] = Seen(kept, digest(secret.get("data") or {}), until)
        return Seen(copy.deepcopy(kept), held.data, until)

    def drop(self, key: str) -> None:
        with self._lock:
            self._held.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)


class PendingOwners:
    """Owner references (by uid) that volumes waiting for a Secret's lock need on it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, dict[str, dict[str, str]]] = {}

    @contextmanager
    def waiting(self, key: str, refs: Sequence[dict[str, str]]) -> Iterator[None]:
        """``refs`` are pending on ``key`` while the caller waits and writes; a caller that
        failed leaves nothing behind for the others to add."""
        with self._lock:
            pending = self._pending.setdefault(key, {})
            for ref in refs:
                pending.setdefault(ref["uid"], ref)
        try:
            yield
        finally:
            with self._lock:
                pending = self._pending.get(key, {})
                for ref in refs:
                    pending.pop(ref["uid"], None)
                if not pending:
                    self._pending.pop(key, None)

    def of(self, key: str) -> list[dict[str, str]]:
        """Every reference pending on ``key``, oldest first."""
        with self._lock:
            return list(self._pending.get(key, {}).values())
