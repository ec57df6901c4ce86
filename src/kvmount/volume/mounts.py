"""tmpfs mount, unmount and is-mounted, through mount(2) and umount2(2).

The system calls are made through ctypes rather than by running mount(8):
the driver image then needs no util-linux, a publish forks no process, and
failures arrive as an errno the caller can map to a status instead of a
localised message on stderr.
"""

from __future__ import annotations

import ctypes
import errno
import os

_MS_NOSUID = 0x2
_MS_NODEV = 0x4
# Never unmount whatever a symlink at the target path points to.
_UMOUNT_NOFOLLOW = 0x8

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.mount.restype = ctypes.c_int
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.umount2.restype = ctypes.c_int


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash in paths as \ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points() -> set[str]:
    """Every mount point of this process's mount namespace."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        return {_unescape(line.split(" ", 5)[4]) for line in fh if line.strip()}


MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


def filesystem_of(path: str) -> str:
    """The type (tmpfs, ext4, ...) of the file system ``path`` lies on."""
    real = os.path.realpath(path)
    best, kind = "", ""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            fields, _, rest = line.partition(" - ")
            point = _unescape(fields.split(" ", 5)[4])
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            # Later lines are mounted later: on the same point, the last one is on top.
            if inside and len(point) >= len(best):
                best, kind = point, rest.split(" ", 1)[0]
    return kind


def is_mounted(path: str) -> bool:
    """Whether ``path`` itself is a mount point (not merely inside one)."""
    return os.path.realpath(path) in mount_points()


def mount_tmpfs(path: str, size_bytes: int) -> None:
    """Mount a fresh tmpfs of at most ``size_bytes`` at ``path`` (an existing directory).

    The root of the tmpfs is 0755 so non-root containers can read it; setuid
    bits and device files mean nothing on a secrets volume.
    """
    options = f"size={size_bytes},mode=0755".encode()
    if _libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", _MS_NOSUID | _MS_NODEV, options) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)


def unmount(path: str) -> bool:
    """Unmount ``path``; False when nothing was mounted there."""
    if _libc.umount2(os.fsencode(path), _UMOUNT_NOFOLLOW) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOENT):
        return False
    raise OSError(code, os.strerror(code), path)
