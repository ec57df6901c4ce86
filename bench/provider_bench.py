"""The provider measurements: each runs every contender in the same run, interleaved.

Every function takes the contenders and returns plain numbers by contender name;
bench/compare.py turns them into bench/RESULTS.md.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from bench.contenders import VAULT, Contender, Vault, kind_of


def _rotated(contenders: list[Contender], turn: int) -> list[Contender]:
    """Each round starts with another contender, so none always runs first (or after a given one)."""
    turn %= len(contenders)
    return contenders[turn:] + contenders[:turn]


def warm(contenders: list[Contender], vault: Vault, secrets: dict[str, str]) -> None:
    """A first mount each: credentials, clients and connections exist afterwards."""
    for c in contenders:
        c.mount(vault.attributes(1), secrets)


def latency(
    contenders: list[Contender], vault: Vault, secrets: dict[str, str], objects: int, repeat: int
) -> dict[str, float]:
    """p50 seconds of one mount of ``objects`` objects, nothing else running."""
    samples: dict[str, list[float]] = {c.name: [] for c in contenders}
    attributes = vault.attributes(objects)
    for turn in range(repeat):
        for c in _rotated(contenders, turn):
            began = time.perf_counter()
            c.mount(attributes, secrets)
            samples[c.name].append(time.perf_counter() - began)
    return {name: statistics.median(s) for name, s in samples.items()}


def cpu_per_object(
    contenders: list[Contender], vault: Vault, secrets: dict[str, str], objects: int, mounts: int, rounds: int
) -> dict[str, float]:
    """Provider CPU seconds per object fetched: /proc CPU time around blocks of sequential mounts."""
    spent = dict.fromkeys((c.name for c in contenders), 0.0)
    attributes = vault.attributes(objects)
    for turn in range(rounds):
        for c in _rotated(contenders, turn):
            before = c.cpu()
            for _ in range(mounts):
                c.mount(attributes, secrets)
            spent[c.name] += c.cpu() - before
    return {name: cpu / (objects * mounts * rounds) for name, cpu in spent.items()}


def _run_concurrently(
    c: Contender, attributes: dict[str, str], secrets: dict[str, str], concurrency: int, mounts: int
) -> float:
    """Mounts per second with ``concurrency`` mounts in flight at all times."""
    with ThreadPoolExecutor(concurrency) as pool:
        began = time.perf_counter()
        list(pool.map(lambda _: c.mount(attributes, secrets), range(mounts)))
        return mounts / (time.perf_counter() - began)


def throughput(
    contenders: list[Contender],
    vault: Vault,
    secrets: dict[str, str],
    objects: int,
    concurrency: int,
    mounts: int,
    rounds: int,
) -> dict[str, float]:
    """Median mounts per second over ``rounds`` interleaved rounds of ``mounts`` mounts."""
    rates: dict[str, list[float]] = {c.name: [] for c in contenders}
    attributes = vault.attributes(objects)
    for turn in range(rounds):
        for c in _rotated(contenders, turn):
            rates[c.name].append(_run_concurrently(c, attributes, secrets, concurrency, mounts))
    return {name: statistics.median(r) for name, r in rates.items()}


def _counted(vault: Vault, call: Callable[[], object]) -> dict[str, int]:
    vault.kv.reset_log()
    call()
    counts = Counter(kind_of(e) for e in vault.kv.requests())
    return {kind: counts.get(kind, 0) for kind in ("read", "challenge", "token", "discovery")}


def requests_per_mount(
    contenders: list[Contender], vault: Vault, objects: int
) -> dict[str, dict[str, dict[str, int]]]:
    """Requests at the double for a mount of ``objects`` objects by an identity the provider has
    not seen (first), the same mount again (repeat), and once one object has a new version."""
    found: dict[str, dict[str, dict[str, int]]] = {}
    attributes = vault.attributes(objects)
    for c in contenders:
        secrets = vault.identity()

        def once(c: Contender = c, secrets: dict[str, str] = secrets) -> None:
            c.mount(attributes, secrets)

        first, repeat = _counted(vault, once), _counted(vault, once)
        vault.kv.put_secret(VAULT, vault.names[0], f"changed for {c.name} at {time.time()}")
        found[c.name] = {"first": first, "repeat": repeat, "after a change": _counted(vault, once)}
    return found


def rotation(
    contenders: list[Contender],
    vault: Vault,
    secrets: dict[str, str],
    pods: int,
    objects: int,
    workers: int,
    window: float = 5.0,
) -> dict[str, dict[str, int]]:
    """One rotation poll of ``pods`` pods sharing a class on one node: each pod's Mount carries
    its current versions, ``workers`` at a time (kvmount's driver rotates 4 volumes at a time)."""
    attributes = vault.attributes(objects)
    found: dict[str, dict[str, int]] = {}
    current = {
        c.name: {v.id: v.version for v in c.mount(attributes, secrets).object_version} for c in contenders
    }
    # A poll comes an interval (2 minutes) after the last reads: past kvmount's window.
    time.sleep(window + 0.5)
    for c in contenders:

        def poll(c: Contender = c) -> None:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda _: c.mount(attributes, secrets, current[c.name]), range(pods)))

        found[c.name] = _counted(vault, poll)
    return found


def memory_after(
    contenders: list[Contender],
    vault: Vault,
    secrets: dict[str, str],
    mounts: int,
    objects: int,
    concurrency: int,
) -> tuple[dict[str, float], dict[str, float]]:
    """(RSS MiB after ``mounts`` mounts, mounts per second while making them), by contender.

    The mounts use a new identity each tenth mount, so credential and client caches fill as on
    a node with many workloads."""
    rss: dict[str, float] = {}
    rate: dict[str, float] = {}
    identities = [vault.identity() for _ in range(max(1, mounts // 10))]
    for c in contenders:
        began = time.perf_counter()

        def one(i: int, c: Contender = c) -> None:
            c.mount(vault.attributes(objects, i % 40), identities[i % len(identities)])

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(mounts)))
        rate[c.name] = mounts / (time.perf_counter() - began)
        rss[c.name] = c.rss()
    return rss, rate
