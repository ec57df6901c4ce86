"""The API server's audit log (policy level Metadata, JSON lines) read as requests.

kube-apiserver writes one event per stage of a request: ``ResponseStarted`` when a
long-running request (a watch) begins to answer, ``ResponseComplete`` (or ``Panic``) when it
ends. Requests are counted once each, by audit ID; a watch with no end yet is open.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WRITES = frozenset({"create", "update", "patch", "delete", "deletecollection"})
NON_RESOURCE = "discovery"
_ENDED = frozenset({"ResponseComplete", "Panic"})


@dataclass(frozen=True)
class Call:
    """One request: who, what, on which resource (``resource/subresource``), and its answer."""

    user: str
    verb: str
    resource: str
    code: int
    ended: bool

    @property
    def key(self) -> str:
        """``verb resource``, as the tables show it."""
        return f"{self.verb} {self.resource}"


def read(path: Path, since: int = 0, until: int | None = None) -> list[dict[str, Any]]:
    """The events written between the byte offsets ``since`` and ``until`` (the end)."""
    with open(path, "rb") as log:
        log.seek(since)
        data = log.read() if until is None else log.read(max(0, until - since))
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def calls(events: Iterable[Mapping[str, Any]]) -> list[Call]:
    """Each request once, in the order it first appears; ``ended`` once any stage ended it."""
    seen: dict[str, Call] = {}
    for event in events:
        audit_id = str(event.get("auditID", ""))
        ended = str(event.get("stage", "")) in _ENDED
        if audit_id in seen:
            if ended:
                old = seen[audit_id]
                code = int((event.get("responseStatus") or {}).get("code") or old.code)
                seen[audit_id] = Call(old.user, old.verb, old.resource, code, True)
            continue
        ref = event.get("objectRef") or {}
        resource = str(ref.get("resource", "")) or NON_RESOURCE  # no object: /api, /apis, /version
        if ref.get("subresource"):
            resource += f"/{ref['subresource']}"
        seen[audit_id] = Call(
            user=str((event.get("user") or {}).get("username", "")),
            verb=str(event.get("verb", "")),
            resource=resource,
            code=int((event.get("responseStatus") or {}).get("code") or 0),
            ended=ended,
        )
    return list(seen.values())


def by_user(found: Iterable[Call], prefix: str) -> list[Call]:
    """The calls of the users whose name starts with ``prefix``."""
    return [c for c in found if c.user.startswith(prefix)]


def tally(found: Iterable[Call]) -> dict[str, int]:
    """How many of each ``verb resource``, most frequent first."""
    return dict(Counter(c.key for c in found).most_common())


def conflicts(found: Iterable[Call]) -> int:
    """Writes answered 409 Conflict (or AlreadyExists, which is 409 too)."""
    return sum(1 for c in found if c.code == 409)


def open_watches(found: Iterable[Call]) -> dict[str, int]:
    """Per user, the watches that have begun to answer and not ended."""
    return dict(Counter(c.user for c in found if c.verb == "watch" and not c.ended))


def per_user(found: Iterable[Call]) -> dict[str, int]:
    """Requests per user (a node's driver or kubelet): whether the cost is the same on every node."""
    return dict(Counter(c.user for c in found))
