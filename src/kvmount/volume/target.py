"""A volume's target directory, checked and reached without following symbolic links.

kubelet names the directory a volume is mounted on (``<root>/pods/<uid>/volumes/...``).
A symbolic link anywhere on that path would send the tmpfs mount, and later the
unmount and the removal, somewhere else on the node. So a target path is
cleaned (one spelling per directory, so locks and comparisons agree), must lie
below the kubelet root the component is configured with, and is walked one
component at a time with O_NOFOLLOW from that root. The mount is made through
the descriptor of the directory that was checked (``/proc/self/fd/N``), and
unmount and removal name the last component relative to its checked parent,
so a link swapped in after the check is never followed either.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from kvmount.volume import mounts

DEFAULT_KUBELET_ROOT = "/var/lib/kubelet"
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_MODE = 0o750


class TargetError(ValueError):
    """A target path that cannot be used; the message names the path and the rule."""


class OutsideRoot(TargetError):
    """A target path that is malformed or not below the kubelet root: a bad request."""


def clean(path: str, field: str = "target_path") -> str:
    """``path`` without ``//``, ``/./`` or a trailing ``/``: the one spelling of a directory."""
    if not path.startswith("/") or "\x00" in path:
        raise OutsideRoot(f"{field} {path[:200]!r} must be an absolute path")
    if ".." in path.split("/"):
        raise OutsideRoot(f"{field} {path[:200]!r} must not contain '..'")
    # POSIX lets normpath keep exactly two leading slashes; Linux reads them as one.
    return "/" + posixpath.normpath(path).lstrip("/")


def _mount_id(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key == "mnt_id":
                return int(value)
    raise OSError(errno.ENOTSUP, "no mnt_id in /proc/self/fdinfo")


class Opened:
    """A checked target: its parent directory held open, and the name below it."""

    def __init__(self, path: str, parent_fd: int, name: str, created: bool) -> None:
        self.path = path
        self.parent_fd = parent_fd
        self.name = name
        self.created = created

    def _open(self) -> int:
        try:
            return os.open(self.name, _DIR | os.O_NOFOLLOW, dir_fd=self.parent_fd)
        except OSError as err:
            if err.errno in (errno.ENOTDIR, errno.ELOOP):
                raise TargetError(_not_a_directory(self.path, self.name, self.parent_fd)) from None
            raise

    def is_mounted(self) -> bool:
        """Whether something is mounted on the directory itself (it is the root of another mount)."""
        fd = self._open()
        try:
            return _mount_id(fd) != _mount_id(self.parent_fd)
        finally:
            os.close(fd)

    def mount_tmpfs(self, size_bytes: int) -> None:
        fd = self._open()
        try:
            mounts.mount_tmpfs(f"/proc/self/fd/{fd}", size_bytes)
        finally:
            os.close(fd)

    def unmount(self) -> bool:
        """Unmount the top mount on the directory; False when nothing was mounted there."""
        return mounts.unmount(f"/proc/self/fd/{self.parent_fd}/{self.name}")

    def rmdir(self) -> None:
        """Remove the directory if it is empty; OSError(ENOTEMPTY) otherwise."""
        os.rmdir(self.name, dir_fd=self.parent_fd)


def _not_a_directory(path: str, name: str, dir_fd: int) -> str:
    try:
        is_link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        is_link = False
    what = "a symbolic link" if is_link else "not a directory"
    return (
        f"target_path {path[:200]!r}: {name[:64]!r} is {what}; kvmount mounts only on a real "
        "directory below the kubelet root, reached without following links"
    )


def root_from_mounts(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """kubelet's root directory as this process's mounts show it, or None when they do not.

    A driver pod mounts kubelet's ``<root>/pods`` at the same path (upstream's chart does,
    from its value kubeletRootDir, and passes the driver no flag naming it), so a pod on a
    node whose kubelet root is not /var/lib/kubelet finds it here. Only one mount point
    named ``pods`` counts: none or several (a host process that sees every node's mounts)
    give None, and the caller keeps its default.
    """
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as fh:
            points = {_unescape(line.split(" ")[4]) for line in fh if line.count(" ") >= 4}
    except OSError:
        return None
    roots = {posixpath.dirname(p) for p in points if posixpath.basename(p) == "pods" and p != "/pods"}
    return roots.pop() if len(roots) == 1 else None


def _unescape(field: str) -> str:
    """A mountinfo path: the kernel writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


class KubeletRoot:
    """The kubelet root directory (its ``--root-dir``) that every target path must lie below."""

    def __init__(self, path: str) -> None:
        self.path = clean(path, "kubelet root dir")
        # The root itself is the operator's choice and may be a link (/var/lib/kubelet -> /data/kubelet).
        self.real = os.path.realpath(self.path)

    def check(self, target: str) -> str:
        """The clean spelling of ``target``; OutsideRoot unless it lies strictly below the root."""
        path = clean(target)
        if not any(path.startswith(f"{base.rstrip('/')}/") for base in (self.path, self.real)):
            raise OutsideRoot(
                f"target_path {path[:200]!r} is not below the kubelet root {self.path!r} "
                "(set the driver's --kubelet-root-dir to kubelet's --root-dir)"
            )
        return path

    def _parts(self, path: str) -> list[str]:
        for base in (self.path, self.real):
            if path.startswith(f"{base.rstrip('/')}/"):
                return path[len(base.rstrip("/")) + 1 :].split("/")
        raise AssertionError("check() let through a path outside the root")

    @contextmanager
    def open(self, target: str, create: bool = False) -> Iterator[Opened | None]:
        """The checked target (its parent held open), or None when it does not exist and not
        ``create``. With ``create`` missing directories are made, as CSI asks of a plugin."""
        path = self.check(target)
        *parents, name = self._parts(path)
        fd = os.open(self.real, _DIR)
        try:
            for part in parents:
                child = self._step(fd, part, path, create)
                os.close(fd)
                fd = child
                if fd < 0:
                    yield None
                    return
            created = False
            if create:
                created = _mkdir(fd, name)
            elif not _exists(fd, name):
                yield None
                return
            opened = Opened(path, fd, name, created)
            os.close(opened._open())  # the last component is a real directory too
            yield opened
        finally:
            if fd >= 0:
                os.close(fd)

    def _step(self, fd: int, part: str, path: str, create: bool) -> int:
        """The directory ``part`` below ``fd``, opened without following a link; -1 if missing."""
        if create:
            _mkdir(fd, part)
        try:
            return os.open(part, _DIR | os.O_NOFOLLOW, dir_fd=fd)
        except FileNotFoundError:
            return -1
        except OSError as err:
            if err.errno in (errno.ENOTDIR, errno.ELOOP):
                raise TargetError(_not_a_directory(path, part, fd)) from None
            raise


def _mkdir(dir_fd: int, name: str) -> bool:
    """Create ``name`` below ``dir_fd``; False if something of that name exists already."""
    try:
        os.mkdir(name, _MODE, dir_fd=dir_fd)
    except FileExistsError:
        return False
    return True


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
