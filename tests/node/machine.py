"""What all test nodes on a machine share, put back by the last one to stop.

kubelet assumes it owns the machine and sets a few sysctls when it starts
(protectKernelDefaults off); kubelet and containerd create host directories that
every node uses (/run/containerd/s for shim sockets, /var/log/containers, the
/k8s.io cgroup parents). Test sessions may run nodes side by side, so the
sysctls and which of those directories were absent are recorded once, by the
first node to start, in a machine-wide directory, and the last one to stop
writes the values back and removes the directories (if empty). A node that was
killed without teardown is noticed by its dead process; its record stays the
truth for the next node.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from tests.node.host import CGROUP_PARENT, CONTAINER_LOG_LINKS, SHIM_SOCKETS, remove_if_empty

# The tunables kubelet's setupKernelTunables writes.
KUBELET_SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)
STATE = Path("/run/kvmount-test-nodes")
_BEFORE = "before.json"


def _path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read() -> dict[str, str]:
    return {name: _path(name).read_text().strip() for name in KUBELET_SYSCTLS}


def write(values: dict[str, str]) -> list[str]:
    """Write back every tunable that differs; the names that could not be written."""
    failed = []
    for name, value in values.items():
        try:
            if _path(name).read_text().strip() != value:
                _path(name).write_text(value)
        except OSError:
            failed.append(name)
    return failed


def shared_dirs() -> list[Path]:
    """Host directories a node may create, children before parents."""
    cgroups = Path("/sys/fs/cgroup")
    parents = [cgroups / CGROUP_PARENT, *(h / CGROUP_PARENT for h in cgroups.iterdir() if h.is_dir())]
    return [SHIM_SOCKETS, SHIM_SOCKETS.parent, CONTAINER_LOG_LINKS, *parents]


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    # The lock is on STATE's parent, which always exists, so the last node can remove
    # STATE itself under it.
    fd = os.open(STATE.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        STATE.mkdir(mode=0o700, exist_ok=True)
        yield
    finally:
        os.close(fd)


def _alive(entry: Path) -> bool:
    pid = int(entry.name.split("-", 1)[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _others(me: Path) -> list[Path]:
    """Nodes of live processes other than ``me``; entries of dead ones are dropped."""
    others = []
    for entry in STATE.glob("[0-9]*-*"):
        if entry == me:
            continue
        if _alive(entry):
            others.append(entry)
        else:
            entry.unlink(missing_ok=True)
    return others


class Guard:
    """Held by one node from before its containerd starts until after it stopped."""

    def __init__(self, name: str) -> None:
        self._me = STATE / f"{os.getpid()}-{name}"

    def acquire(self) -> None:
        with _locked():
            before = STATE / _BEFORE
            # Kept if there: written by a running node, or by one killed without teardown,
            # after whose kubelet the current values are not the machine's own.
            if not before.exists():
                absent = [str(path) for path in shared_dirs() if not path.exists()]
                before.write_text(json.dumps({"sysctls": read(), "absent": absent}))
            self._me.touch()

    def release(self) -> list[str]:
        """The tunables that could not be put back (none while another node runs)."""
        failed: list[str] = []
        with _locked():
            self._me.unlink(missing_ok=True)
            before = STATE / _BEFORE
            if not _others(self._me) and before.exists():
                record = json.loads(before.read_text())
                failed = write(record["sysctls"])
                remove_if_empty(*(Path(path) for path in record["absent"]))
                before.unlink()
            if not any(STATE.iterdir()):
                STATE.rmdir()
        return failed
