"""Daemons the tests start: a process with its log, readiness that fails fast when it
exits, and a stop that cannot hang."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tests.support.wait import NotInTime, eventually

T = TypeVar("T")

TAIL = 3000  # characters of a log quoted in a failure


@dataclass
class Daemon:
    """A started program and the file its stdout and stderr go to."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, chars: int = TAIL) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, timeout: float = 20.0) -> int:
        return stop_process(self.process, timeout)


def start_daemon(
    name: str,
    argv: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    own_group: bool = False,
) -> Daemon:
    """``argv`` with stdin closed and its output appended to ``log``.

    ``own_group``: a new session, so the daemon and its children can be killed as one.
    """
    with open(log, "ab") as out:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            start_new_session=own_group,
        )
    return Daemon(name, process, log)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """SIGTERM, then SIGKILL if it is still running after ``timeout`` s; its exit status."""
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def until_ready(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    daemons: Sequence[Daemon],
    poll: float | None = None,
) -> T:
    """``eventually(check)``, failing at once with its log's end when one of ``daemons``
    exits, and with every log's end when time runs out."""

    def alive_check() -> T | None:
        for daemon in daemons:
            if daemon.process.poll() is not None:
                code = daemon.process.returncode
                raise AssertionError(f"{daemon.name} exited ({code}) before {what}:\n{daemon.tail()}")
        return check()

    try:
        return eventually(alive_check, timeout=timeout, what=what, poll=poll)
    except NotInTime as late:
        tails = "\n".join(f"--- {daemon.name} ({daemon.log}):\n{daemon.tail()}" for daemon in daemons)
        raise NotInTime(f"{late}\n{tails}") from None


def serves(path: Path) -> bool:
    """Whether a unix socket at ``path`` accepts a connection (a stale file does not)."""
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True
