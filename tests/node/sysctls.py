"""kubelet's kernel tunables, put back by the last test node on the machine.

kubelet assumes it owns the machine and sets a few sysctls when it starts
(protectKernelDefaults off). Test sessions may run nodes side by side, so the
values from before are recorded once, by the first node to start, in a
machine-wide directory, and written back by the last one to stop. A node that
was killed without teardown is noticed by its dead process; its record stays
the truth for the next node.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

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
_BEFORE = "sysctls-before.json"


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
    """Held by one node from before its kubelet starts until after it stopped."""

    def __init__(self, name: str) -> None:
        self._me = STATE / f"{os.getpid()}-{name}"

    def acquire(self) -> None:
        with _locked():
            before = STATE / _BEFORE
            # Kept if there: written by a running node, or by one killed without teardown,
            # after whose kubelet the current values are not the machine's own.
            if not before.exists():
                before.write_text(json.dumps(read()))
            self._me.touch()

    def release(self) -> list[str]:
        """The tunables that could not be put back (none while another node runs)."""
        failed: list[str] = []
        with _locked():
            self._me.unlink(missing_ok=True)
            before = STATE / _BEFORE
            if not _others(self._me) and before.exists():
                failed = write(json.loads(before.read_text()))
                before.unlink()
            if not any(STATE.iterdir()):
                STATE.rmdir()
        return failed
