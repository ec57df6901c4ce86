"""Target paths: one clean spelling, below the kubelet root, reached without following links."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvmount.volume import mounts
from kvmount.volume.target import KubeletRoot, OutsideRoot, TargetError, clean, root_from_mounts


@pytest.mark.parametrize(
    ("given", "cleaned"),
    [
        ("/a/b", "/a/b"),
        ("//a//b/", "/a/b"),
        ("/a/./b/.", "/a/b"),
        ("///a", "/a"),
    ],
)
def test_one_spelling(given: str, cleaned: str) -> None:
    assert clean(given) == cleaned


@pytest.mark.parametrize("bad", ["a/b", "", "/a/../b", "/a/b/..", "/a\x00b"])
def test_malformed_paths_are_refused(bad: str) -> None:
    with pytest.raises(OutsideRoot):
        clean(bad)


def test_only_paths_strictly_below_the_root(tmp_path: Path) -> None:
    root = KubeletRoot(str(tmp_path / "kubelet"))
    assert root.check(f"{tmp_path}//kubelet/./pods/x") == f"{tmp_path}/kubelet/pods/x"
    for outside in (f"{tmp_path}/kubelet", f"{tmp_path}/kubelet-other/pods", "/etc/passwd"):
        with pytest.raises(OutsideRoot, match="not below the kubelet root"):
            root.check(outside)


def test_a_root_reached_through_a_link_is_followed_once(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    root = KubeletRoot(str(tmp_path / "link"))
    for spelling in (tmp_path / "link" / "pods" / "v", tmp_path / "real" / "pods" / "v"):
        with root.open(str(spelling), create=True) as opened:
            assert opened is not None
    assert (tmp_path / "real" / "pods" / "v").is_dir()


def test_open_creates_what_is_missing_and_reports_it(tmp_path: Path) -> None:
    root = KubeletRoot(str(tmp_path))
    target = tmp_path / "pods" / "uid" / "mount"
    with root.open(str(target)) as opened:
        assert opened is None, "without create, a missing target is None"
    with root.open(str(target), create=True) as opened:
        assert opened is not None and opened.created
    with root.open(str(target), create=True) as opened:
        assert opened is not None and not opened.created
        opened.rmdir()
    assert not target.exists() and target.parent.is_dir()


@pytest.mark.parametrize("where", ["target", "parent"])
def test_links_and_files_on_the_path_are_refused(tmp_path: Path, where: str) -> None:
    root = KubeletRoot(str(tmp_path))
    target = tmp_path / "pods" / "uid" / "mount"
    target.parent.parent.mkdir()
    (tmp_path / "elsewhere").mkdir()
    linked = target if where == "target" else target.parent
    if where == "target":
        target.parent.mkdir()
    linked.symlink_to(tmp_path / "elsewhere")
    with (
        pytest.raises(TargetError, match=f"'{linked.name}' is a symbolic link"),
        root.open(str(target), True),
    ):
        pass
    assert os.listdir(tmp_path / "elsewhere") == []
    linked.unlink()
    linked.write_text("a file")
    with pytest.raises(TargetError, match="is not a directory"), root.open(str(target), True):
        pass


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_mount_and_unmount_through_the_checked_directory(tmp_path: Path) -> None:
    root = KubeletRoot(str(tmp_path))
    target = tmp_path / "pods" / "uid" / "mount"
    with root.open(str(target), create=True) as opened:
        assert opened is not None and not opened.is_mounted()
        opened.mount_tmpfs(1 << 20)
        try:
            assert opened.is_mounted() and mounts.is_mounted(str(target))
            assert mounts.filesystem_of(str(target)) == "tmpfs"
        finally:
            assert opened.unmount()
        assert not opened.is_mounted() and not opened.unmount()


def _mountinfo(tmp_path: Path, *points: str) -> str:
    lines = [f"{i} 1 0:{i} / {p} rw,relatime shared:{i} - tmpfs tmpfs rw" for i, p in enumerate(points, 30)]
    path = tmp_path / "mountinfo"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_kubelet_root_is_the_parent_of_the_one_pods_mount(tmp_path: Path) -> None:
    # As a pod of upstream's driver chart sees it with kubeletRootDir=/data/kubelet (one space escaped).
    info = _mountinfo(tmp_path, "/", "/csi", "/data/my\\040kubelet/pods", "/etc/hosts")
    assert root_from_mounts(info) == "/data/my kubelet"


def test_no_kubelet_root_from_no_or_several_pods_mounts(tmp_path: Path) -> None:
    assert root_from_mounts(_mountinfo(tmp_path, "/", "/csi")) is None
    assert root_from_mounts(_mountinfo(tmp_path, "/a/kubelet/pods", "/b/kubelet/pods")) is None
    assert root_from_mounts(_mountinfo(tmp_path, "/pods")) is None
    assert root_from_mounts(str(tmp_path / "absent")) is None
