"""Service account tokens kept for reuse, by kubelet's rule: a token is requested again once
80 % of its lifetime has passed (or 24 hours, whichever comes first), not on every use.

Rotation asks for a pod's tokens on every poll; without reuse that is one TokenRequest per
audience per volume per poll. Entries are dropped when their token expires, so what is held
is bounded by the pods this process serves and the audiences they need.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# kubelet's thresholds (its token manager): past 80 % of the life, or older than a day.
REFRESH_FRACTION = 0.8
MAX_AGE_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class TokenKey:
    """What makes a token reusable: the account, the audience, the lifetime asked, the bound pod."""

    namespace: str
    account: str
    audience: str
    seconds: int
    pod_uid: str = ""


@dataclass(frozen=True)
class _Held:
    token: str
    expiration: str  # the API's RFC 3339 spelling, passed on as kubelet does
    refresh_at: float
    expires_at: float


def request_body(audience: str, seconds: int, bound_pod: tuple[str, str] | None) -> dict[str, Any]:
    """A TokenRequest for ``audience`` (none: the API server's), bound to (pod name, uid) if given."""
    spec: dict[str, Any] = {"audiences": [audience] if audience else [], "expirationSeconds": seconds}
    if bound_pod is not None:
        spec["boundObjectRef"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": bound_pod[0],
            "uid": bound_pod[1],
        }
    return {"spec": spec}


def _expiry(timestamp: str) -> float | None:
    try:
        return datetime.datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return None


class TokenCache:
    """Thread-safe; ``clock`` is wall time (token expiry is wall time)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._held: dict[TokenKey, _Held] = {}
        self._lock = threading.Lock()

    def get(self, key: TokenKey) -> tuple[str, str] | None:
        """(token, expirationTimestamp) while the token is fresh enough to reuse, else None."""
        with self._lock:
            held = self._held.get(key)
        if held is None or self._clock() >= held.refresh_at:
            return None
        return held.token, held.expiration

    def put(self, key: TokenKey, token: str, expiration: str, issued_at: float) -> None:
        """Keep a token issued at ``issued_at``; one whose expiry cannot be read is not kept."""
        expires_at = _expiry(expiration)
        if not token or expires_at is None or expires_at <= issued_at:
            return
        life = min((expires_at - issued_at) * REFRESH_FRACTION, MAX_AGE_SECONDS)
        now = self._clock()
        with self._lock:
            self._held = {k: v for k, v in self._held.items() if v.expires_at > now}
            self._held[key] = _Held(token, expiration, issued_at + life, expires_at)

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)
