"""The stale cache's bounds: age, bytes, and the drop of an object's every version."""

from __future__ import annotations

from kvmount.keyvault.scheduling.stale import ENTRY_OVERHEAD, StaleCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_content_is_served_until_its_age_limit_and_a_stale_serve_does_not_renew_it() -> None:
    clock = Clock()
    cache = StaleCache(60, 10_000, clock)
    cache.keep(("v", "p", "secret", "a", ""), "A", 1)
    clock.now += 59
    assert cache.get(("v", "p", "secret", "a", "")) == ("A", 59)
    clock.now += 1
    assert cache.get(("v", "p", "secret", "a", "")) is None
    assert cache.bytes == 0


def test_the_byte_bound_drops_the_oldest_and_refuses_what_cannot_fit() -> None:
    cache = StaleCache(60, 3 * (100 + ENTRY_OVERHEAD))
    for name in "abcd":
        cache.keep((name,), name, 100)
    assert [cache.get((n,)) is not None for n in "abcd"] == [False, True, True, True]
    assert cache.bytes == 3 * (100 + ENTRY_OVERHEAD)
    cache.keep(("huge",), "x", 10_000)
    assert cache.get(("huge",)) is None and cache.bytes == 3 * (100 + ENTRY_OVERHEAD)


def test_drop_forgets_every_version_of_the_object_only() -> None:
    cache = StaleCache(60, 100_000)
    for key in [
        ("v", "p", "secret", "a", ""),
        ("v", "p", "secret", "a", "1", "history"),
        ("v", "p", "secret", "b", ""),
    ]:
        cache.keep(key, "x", 1)
    cache.drop(("v", "p", "secret", "a"))
    assert cache.get(("v", "p", "secret", "a", "")) is None
    assert cache.get(("v", "p", "secret", "a", "1", "history")) is None
    assert cache.get(("v", "p", "secret", "b", "")) is not None


def test_off_keeps_nothing() -> None:
    cache = StaleCache(0, 100_000)
    cache.keep(("a",), "x", 1)
    assert cache.get(("a",)) is None and cache.bytes == 0
