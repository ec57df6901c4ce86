"""Fixtures: the driver installed into a scratch plugin directory, and mount targets."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmount.volume import mounts
from kvmount.volume.target import KubeletRoot
from tests.flexvolume.driver import Driver
from tests.support import starts_process


@pytest.fixture
@starts_process
def driver(tmp_path: Path) -> Driver:
    installed = Driver(str(tmp_path / "plugins"), str(tmp_path / "kv.log"))
    done = installed.install("--kubelet-root-dir", str(tmp_path))
    assert done.returncode == 0, done
    return installed


@pytest.fixture
def root(tmp_path: Path) -> KubeletRoot:
    """The kubelet root the targets lie below."""
    return KubeletRoot(str(tmp_path))


@pytest.fixture
def target(tmp_path: Path) -> Iterator[str]:
    """A pod volume directory; whatever a test leaves mounted there is unmounted."""
    path = str(tmp_path / "pods" / "uid" / "volumes" / "azure~kv" / "secrets")
    yield path
    while os.path.exists(path) and mounts.unmount(path):
        pass
