"""Test tiers, applied to every test by the root conftest.py (select with ``pytest -m``):

* ``unit``: this process only (the in-process Key Vault double included): seconds.
* ``peer``: a process beside pytest: an external peer (kube-apiserver and etcd,
  upstream's binaries, helm) or one the test starts (a kvmount daemon, a CLI run).
* ``node``: kubelet and containerd (tests/node).

A test takes its directory's tier where DIRECTORIES names one; else it is ``peer`` when it
uses, directly or through other fixtures, a fixture marked with ``@starts_process``, or is
marked ``peer`` itself (a test that starts its process in its body); else ``unit``. A unit
test that starts a process fails (``guard_processes``), so none slips into the unit tier.
"""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import pytest

F = TypeVar("F", bound=Callable[..., object])

_MARK = "_kvmount_starts_process"
TESTS = Path(__file__).resolve().parents[1]


class Tier(StrEnum):
    UNIT = "unit"
    PEER = "peer"
    NODE = "node"


# Directories whose every test needs more than this process, whatever its fixtures.
DIRECTORIES = {
    TESTS / "node": Tier.NODE,  # kubelet, containerd
    TESTS / "compat": Tier.PEER,  # upstream's binaries and charts
    TESTS / "chart": Tier.PEER,  # helm
    TESTS / "image": Tier.PEER,  # the built images
}


def starts_process(fixture: F) -> F:
    """Mark a fixture function (below ``@pytest.fixture``) as starting a process: the tests
    that use it are peer tests."""
    setattr(fixture, _MARK, True)
    return fixture


def tier_of(item: pytest.Item) -> Tier:
    for directory, tier in DIRECTORIES.items():
        if item.path.is_relative_to(directory):
            return tier
    if item.get_closest_marker(Tier.PEER) is not None:
        return Tier.PEER
    # pytest keeps the fixtures a test uses, its own and theirs, here (no public accessor).
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.values() if info is not None else ()
    if any(getattr(d.func, _MARK, False) for chain in definitions for d in chain):
        return Tier.PEER
    return Tier.UNIT


_running: list[Tier] = []  # the tier of the test being set up, run or torn down


def entering(item: pytest.Item) -> None:
    _running[:] = [tier_of(item)]


def leaving() -> None:
    """A test's teardown also ends fixtures that earlier tests started (a session's node is
    stopped with `ctr` after the last test, whatever its tier): only cleanup runs there."""
    _running.clear()


def guard_processes() -> None:
    """From now on a unit test that starts a process fails, naming it (kvmount's own code
    starts none, so every process comes from a test or its fixtures)."""
    # The standard library's platform.uname() runs `uname -p` once and caches it; the Azure
    # SDK's user agent asks for it, so whichever test asks first would otherwise trip the guard.
    platform.uname().processor  # noqa: B018 - filling the cache is the point
    original = subprocess.Popen.__init__

    def guarded(self: subprocess.Popen[bytes], args: Any, *more: Any, **options: Any) -> None:
        if _running == [Tier.UNIT]:
            raise AssertionError(
                f"a unit test started a process ({args!r}): start it from a fixture marked "
                "@starts_process, or mark the test (or its module) pytest.mark.peer"
            )
        original(self, args, *more, **options)

    setattr(subprocess.Popen, "__init__", guarded)  # noqa: B010 - mypy refuses assigning a method
