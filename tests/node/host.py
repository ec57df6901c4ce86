"""What a node leaves on the host, and how to take it back.

kubelet and containerd change more than their own directories: kubelet mounts
tmpfs and bind mounts under its root and links container logs into
/var/log/containers; containerd's shims outlive containerd and serve sockets under
/run/containerd/s; containers get cgroups under /k8s.io. A test run must leave the
machine as it found it, whatever failed, so each piece here is recorded before the
node starts and undone, best effort, at teardown. (What nodes share, kubelet's
kernel tunables and these directories themselves: tests/node/machine.py.)
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

# Host paths outside the node's directory that kubelet or containerd create.
CONTAINER_LOG_LINKS = Path("/var/log/containers")
SHIM_SOCKETS = Path("/run/containerd/s")
# containerd's CRI puts containers in cgroup "/k8s.io/<id>" (kubelet gives no parent
# without QoS cgroups); runc removes each container's when it is deleted, the parent stays.
CGROUP_PARENT = "k8s.io"

_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, in mount order (/proc/self/mountinfo)."""
    prefix = str(root).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with spaces and such octal-escaped.
        point = line.split()[4].encode().decode("unicode_escape")
        if point == str(root) or point.startswith(prefix):
            points.append(point)
    return points


def unmount_all(root: Path) -> list[str]:
    """Unmount everything under ``root``, newest first, lazily if busy; what is still mounted."""
    for _ in range(3):  # a mount may be stacked on one that was made earlier
        points = mounts_under(root)
        if not points:
            return []
        for point in reversed(points):
            if _libc.umount2(point.encode(), 0) != 0:
                _libc.umount2(point.encode(), _MNT_DETACH)
    return mounts_under(root)


def processes_mentioning(marker: str) -> list[int]:
    """PIDs whose command line contains ``marker`` (the node's private directory): the
    containerd shims, which detach from containerd's process group, and anything they left."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


def shim_socket(pid: int) -> Path | None:
    """The socket a containerd shim serves, from its command line (``-namespace N -id I
    -address A``): containerd 1.6 names it after sha256("A/N/I"). A killed shim leaves it."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return None
    flags = dict(zip(argv[1::2], argv[2::2], strict=False))
    if not {"-namespace", "-id", "-address"} <= flags.keys():
        return None
    key = f"{flags['-address']}/{flags['-namespace']}/{flags['-id']}"
    return SHIM_SOCKETS / hashlib.sha256(key.encode()).hexdigest()


def kill_group(
    proc: subprocess.Popen[bytes], timeout: float = 15.0, first: signal.Signals = signal.SIGTERM
) -> None:
    """``first`` (SIGTERM) to the process group ``proc`` leads (started with start_new_session),
    then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, first)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group, even after the leader exited
    proc.wait()


def kill_pids(pids: list[int], timeout: float = 10.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def remove_log_links(root: Path) -> None:
    """kubelet's /var/log/containers links into ``root``; the directory too if nothing else is in it."""
    if not CONTAINER_LOG_LINKS.is_dir():
        return
    for link in CONTAINER_LOG_LINKS.iterdir():
        if link.is_symlink() and os.readlink(link).startswith(str(root) + "/"):
            link.unlink()


def cgroup_parents() -> set[Path]:
    """The CRI cgroup parent in every hierarchy where it exists now."""
    root = Path("/sys/fs/cgroup")
    candidates = [root / CGROUP_PARENT, *root.glob(f"*/{CGROUP_PARENT}")]  # v2, and each v1 hierarchy
    return {path for path in candidates if path.is_dir()}


def remove_cgroups(container_ids: list[str], timeout: float = 15.0) -> list[Path]:
    """Kill what is left in these containers' cgroups and rmdir them; those that remain.

    Only this node's containers are touched: another node on this machine shares the
    parent (tests/node/machine.py removes it). A cgroup stays busy until its last process
    has been reaped, so this tries again until the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        mine = (parent / cid for parent in cgroup_parents() for cid in container_ids)
        left = sorted(cgroup for cgroup in mine if cgroup.is_dir())
        for cgroup in left:
            # Container processes whose shim is gone have no other handle.
            with contextlib.suppress(OSError, ValueError):
                kill_pids([int(pid) for pid in (cgroup / "cgroup.procs").read_text().split()], timeout=2)
            remove_if_empty(cgroup)
        left = [cgroup for cgroup in left if cgroup.is_dir()]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def remove_if_empty(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(OSError):  # not there, or in use by another node on this machine
            path.rmdir()
