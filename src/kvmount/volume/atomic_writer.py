"""Replace the whole content of a volume at once, as Kubernetes does for secret volumes.

Layout of a target directory::

    ..2024_05_01_10_00_00.k3j2h1/   one version of the content (hidden)
    ..data -> ..2024_05_01_10_00_00.k3j2h1
    tls.crt -> ..data/tls.crt       one user-visible link per top-level entry

A new version is written in full to a fresh hidden directory, then ``..data``
is switched to it by renaming a symlink over it, which is atomic. A reader
that resolves ``..data`` once (or opens any one file) therefore sees either
the old or the new version in full, never a mix or a partial file. Callers
serialise writes to one target directory.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass

DATA_LINK = "..data"
_LINK_TMP = "..link_tmp"
_MAX_MODE = 0o777


@dataclass(frozen=True)
class Payload:
    """One file of a volume: a relative path, its mode bits and its bytes."""

    path: str
    mode: int
    contents: bytes


class PayloadError(ValueError):
    """A file list that must not be written; the message names the path and the rule."""


def _check_path(path: str) -> None:
    if not path:
        raise PayloadError("file path is empty")
    if "\x00" in path:
        raise PayloadError(f"file path {path!r} contains a NUL byte")
    if path.startswith("/"):
        raise PayloadError(f"file path {path!r} is absolute; paths must be relative to the volume")
    parts = path.split("/")
    if ".." in parts:
        raise PayloadError(f"file path {path!r} contains '..'; paths must stay inside the volume")
    if path == ".":
        raise PayloadError("file path '.' names the volume itself, not a file in it")
    if os.path.normpath(path) != path:
        raise PayloadError(f"file path {path!r} is not clean (no '.', '//' or trailing '/')")
    if parts[0].startswith(".."):
        raise PayloadError(f"file path {path!r} starts with '..', which is reserved for the writer")
    if any(len(p.encode()) > 255 for p in parts):
        raise PayloadError(f"file path {path[:64]!r}...: a path component is longer than 255 bytes")


def validate(files: Iterable[Payload]) -> dict[str, Payload]:
    """The files by path, after checking every path and mode; raises PayloadError."""
    by_path: dict[str, Payload] = {}
    for f in files:
        _check_path(f.path)
        if not 0 <= f.mode <= _MAX_MODE:
            raise PayloadError(f"file {f.path!r}: mode {f.mode} is outside 0..0777")
        if f.path in by_path:
            raise PayloadError(f"file path {f.path!r} appears twice")
        by_path[f.path] = f
    for path in by_path:
        parent = os.path.dirname(path)
        while parent:
            if parent in by_path:
                raise PayloadError(f"file path {parent!r} is both a file and the directory of {path!r}")
            parent = os.path.dirname(parent)
    return by_path


def _top(path: str) -> str:
    return path.split("/", 1)[0]


class AtomicWriter:
    def __init__(self, target_dir: str, gid: int | None = None) -> None:
        self.target = target_dir
        self.gid = gid

    def current_version(self) -> str | None:
        """The hidden directory ``..data`` points to, or None before the first write."""
        try:
            return os.readlink(os.path.join(self.target, DATA_LINK))
        except FileNotFoundError:
            return None

    def _read_version(self, version: str) -> dict[str, tuple[int, int, bytes]]:
        root = os.path.join(self.target, version)
        found: dict[str, tuple[int, int, bytes]] = {}
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                full = os.path.join(dirpath, name)
                st = os.lstat(full)
                with open(full, "rb") as fh:
                    found[os.path.relpath(full, root)] = (stat.S_IMODE(st.st_mode), st.st_gid, fh.read())
        return found

    def _unchanged(self, version: str | None, files: dict[str, Payload]) -> bool:
        if version is None:
            return False
        try:
            current = self._read_version(version)
        except OSError:
            return False
        if current.keys() != files.keys():
            return False
        return all(
            mode == files[p].mode and data == files[p].contents and (self.gid is None or gid == self.gid)
            for p, (mode, gid, data) in current.items()
        )

    def _write_version(self, files: dict[str, Payload]) -> str:
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
        root = tempfile.mkdtemp(prefix=stamp, dir=self.target)
        try:
            os.chmod(root, 0o755)
            for f in files.values():
                full = os.path.join(root, f.path)
                parent = os.path.dirname(full)
                if not os.path.isdir(parent):
                    os.makedirs(parent)
                    self._fix_dirs(root, parent)
                fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                try:
                    view = memoryview(f.contents)
                    while view:
                        view = view[os.write(fd, view) :]
                    if self.gid is not None:
                        os.fchown(fd, -1, self.gid)
                    os.fchmod(fd, f.mode)
                finally:
                    os.close(fd)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return os.path.basename(root)

    def _fix_dirs(self, root: str, leaf: str) -> None:
        # makedirs honours the umask; the directories must be traversable by the pod.
        path = leaf
        while path != root:
            os.chmod(path, 0o755)
            if self.gid is not None:
                os.chown(path, -1, self.gid)
            path = os.path.dirname(path)

    def _link(self, name: str, dest: str) -> None:
        """Point ``name`` (in the target) at ``dest``, replacing a file or link atomically."""
        path = os.path.join(self.target, name)
        try:
            if os.readlink(path) == dest:
                return
        except FileNotFoundError:
            pass
        except OSError:  # EINVAL: a regular file or a directory is in the way
            if os.path.isdir(path) and not os.path.islink(path):
                raise PayloadError(f"{name!r} already exists in the volume as a directory") from None
        tmp = os.path.join(self.target, _LINK_TMP)
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(dest, tmp)
        os.rename(tmp, path)

    def write(self, files: Iterable[Payload]) -> bool:
        """Make the volume hold exactly ``files``; False when it already did (nothing written)."""
        by_path = validate(files)
        old = self.current_version()
        if self._unchanged(old, by_path):
            return False
        new = self._write_version(by_path)
        try:
            self._link(DATA_LINK, new)
        except BaseException:
            shutil.rmtree(os.path.join(self.target, new), ignore_errors=True)
            raise
        new_top = {_top(p) for p in by_path}
        for name in sorted(new_top):
            self._link(name, f"{DATA_LINK}/{name}")
        self._remove_stale(new, new_top)
        return True

    def _remove_stale(self, current: str, keep: set[str]) -> None:
        for name in os.listdir(self.target):
            path = os.path.join(self.target, name)
            if name.startswith(".."):
                # Earlier versions, and leftovers of a write that crashed midway.
                if name in (current, DATA_LINK):
                    continue
                if os.path.islink(path):
                    os.unlink(path)
                else:
                    shutil.rmtree(path, ignore_errors=True)
                continue
            if name not in keep and os.path.islink(path) and os.readlink(path).startswith(f"{DATA_LINK}/"):
                os.unlink(path)
