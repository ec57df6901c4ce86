"""Token reuse by kubelet's rule: until 80 % of the life (at most a day), then a new one."""

from __future__ import annotations

import datetime

from kvmount.kube.tokens import TokenCache, TokenKey

KEY = TokenKey("ns", "default", "api://AzureADTokenExchange", 3600, "uid-1")


def stamp(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_reused_until_eighty_percent_of_the_life() -> None:
    now = [1_000_000.0]
    cache = TokenCache(clock=lambda: now[0])
    cache.put(KEY, "t1", stamp(now[0] + 3600), issued_at=now[0])
    now[0] += 0.79 * 3600
    assert cache.get(KEY) == ("t1", stamp(1_000_000.0 + 3600))
    assert cache.get(TokenKey("ns", "default", "other", 3600, "uid-1")) is None
    now[0] += 0.02 * 3600
    assert cache.get(KEY) is None


def test_a_day_at_most_and_expired_tokens_dropped() -> None:
    now = [1_000_000.0]
    cache = TokenCache(clock=lambda: now[0])
    cache.put(KEY, "long", stamp(now[0] + 7 * 86400), issued_at=now[0])
    now[0] += 86400 + 1
    assert cache.get(KEY) is None
    now[0] += 7 * 86400
    cache.put(TokenKey("ns", "b", "a", 600), "t", stamp(now[0] + 600), issued_at=now[0])
    assert len(cache) == 1  # the expired one is gone


def test_unreadable_expiry_is_not_kept() -> None:
    cache = TokenCache()
    cache.put(KEY, "t", "not a time", issued_at=0.0)
    assert cache.get(KEY) is None and len(cache) == 0
