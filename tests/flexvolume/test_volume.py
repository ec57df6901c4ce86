"""The tmpfs side of mount and unmount, with Key Vault replaced by fixed files."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import pytest

from kvmount.flexvolume import volume
from kvmount.keyvault import File, MountResult, Settings
from kvmount.volume import mounts
from kvmount.volume.target import KubeletRoot, TargetError

OPTIONS = json.dumps({"keyvaultname": "kv1", "keyvaultobjectnames": "a", "keyvaultobjecttypes": "secret"})


TIMEOUT = 60.0


class FixedMounter:
    files: ClassVar[list[File]] = [File("a", 0o644, b"value"), File("dir/b", 0o600, b"other")]
    settings: ClassVar[list[Settings]] = []

    def __init__(self, settings: Settings) -> None:
        self.settings.append(settings)

    def mount_attributes(
        self,
        attributes: Mapping[str, str],
        secrets: Mapping[str, str] | None,
        default_mode: int,
        deadline: float | None = None,
    ) -> MountResult:
        assert default_mode == 0o644 and deadline is not None
        return MountResult(list(self.files), [("secret/a", "v1")])

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def fixed_keyvault(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(volume, "KeyVaultMounter", FixedMounter)


def read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def test_mount_writes_the_files_on_a_fresh_tmpfs(target: str, root: KubeletRoot) -> None:
    volume.mount(target, OPTIONS, root, TIMEOUT)
    assert mounts.is_mounted(target)
    assert read(os.path.join(target, "a")) == b"value"
    assert stat.S_IMODE(os.stat(os.path.join(target, "dir", "b")).st_mode) == 0o600
    assert FixedMounter.settings[-1].nmi_port == 2579


def test_mount_again_keeps_the_first_content(
    target: str, root: KubeletRoot, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume.mount(target, OPTIONS, root, TIMEOUT)
    monkeypatch.setattr(FixedMounter, "files", [File("a", 0o644, b"changed")])
    volume.mount(target, OPTIONS, root, TIMEOUT)
    assert read(os.path.join(target, "a")) == b"value"
    volume.unmount(target, root)
    assert not mounts.is_mounted(target)
    volume.unmount(target, root)


def test_a_write_failure_unmounts_the_tmpfs(
    target: str, root: KubeletRoot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(volume, "TMPFS_SIZE", 8192)
    monkeypatch.setattr(FixedMounter, "files", [File("big", 0o644, b"x" * 65536)])
    with pytest.raises(OSError):
        volume.mount(target, OPTIONS, root, TIMEOUT)
    assert not mounts.is_mounted(target)


def test_the_nmi_port_option_reaches_the_mounter(target: str, root: KubeletRoot) -> None:
    volume.mount(target, json.dumps({**json.loads(OPTIONS), "nmiport": "30579"}), root, TIMEOUT)
    assert FixedMounter.settings[-1].nmi_port == 30579


@pytest.mark.parametrize("link", ["target", "parent"])
def test_a_symlinked_target_is_refused_and_nothing_mounted(
    target: str, root: KubeletRoot, tmp_path: Path, link: str
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked = Path(target) if link == "target" else Path(target).parent
    linked.parent.mkdir(parents=True, exist_ok=True)
    if link == "parent":
        (elsewhere / "secrets").mkdir()
    linked.symlink_to(elsewhere)
    with pytest.raises(TargetError, match="is a symbolic link"):
        volume.mount(target, OPTIONS, root, TIMEOUT)
    assert not [p for p in mounts.mount_points() if p.startswith(str(tmp_path))]
    with pytest.raises(TargetError, match="is a symbolic link"):
        volume.unmount(target, root)
    assert linked.is_symlink()


def test_a_target_outside_the_kubelet_root_is_refused(tmp_path: Path) -> None:
    inner = KubeletRoot(str(tmp_path / "kubelet"))
    with pytest.raises(TargetError, match="not below the kubelet root"):
        volume.mount(str(tmp_path / "pods" / "x"), OPTIONS, inner, TIMEOUT)
    assert not (tmp_path / "pods").exists()
