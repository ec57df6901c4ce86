"""The shared waiting and daemon helpers do what the tests rely on."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import NotInTime, eventually, free_port, serves, start_daemon, stop_process, until_ready


def test_eventually_returns_the_first_truthy_result() -> None:
    answers = iter([None, 0, "", {"found": 1}])
    assert eventually(lambda: next(answers), timeout=5, what="an answer") == {"found": 1}


def test_eventually_names_what_it_waited_for() -> None:
    began = time.monotonic()
    with pytest.raises(NotInTime, match=r"not within 0.2s: the moon turning blue"):
        eventually(lambda: False, timeout=0.2, what="the moon turning blue")
    assert time.monotonic() - began < 2  # the deadline holds, not a pause after it


def test_eventually_sees_a_change_promptly() -> None:
    flag = threading.Event()
    threading.Timer(0.05, flag.set).start()
    began = time.monotonic()
    assert eventually(flag.is_set, timeout=5, what="the flag") is True
    assert time.monotonic() - began < 1  # polled, not one long sleep


def test_eventually_lets_a_check_error_through() -> None:
    def broken() -> bool:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        eventually(broken, timeout=5, what="anything")


def test_free_port_is_bindable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))


@pytest.mark.peer
def test_until_ready_fails_at_once_with_the_log_when_the_daemon_exits(tmp_path: Path) -> None:
    code = "import sys; print('cannot start: no config'); sys.exit(3)"
    daemon = start_daemon("broken", [sys.executable, "-c", code], tmp_path / "broken.log")
    began = time.monotonic()
    with pytest.raises(AssertionError, match=r"(?s)broken exited \(3\) before a socket.*no config"):
        until_ready(lambda: False, timeout=30, what="a socket", daemons=[daemon])
    assert time.monotonic() - began < 10


@pytest.mark.peer
def test_a_daemon_serves_and_stops(tmp_path: Path) -> None:
    sock = tmp_path / "d.sock"
    code = (
        "import socket, sys, time; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen();"
        "time.sleep(60)"
    )
    assert not serves(sock)
    daemon = start_daemon("listener", [sys.executable, "-c", code, str(sock)], tmp_path / "listener.log")
    try:
        until_ready(lambda: serves(sock), timeout=30, what="the listener", daemons=[daemon])
    finally:
        assert stop_process(daemon.process, timeout=5) != 0  # SIGTERM ended it
    assert daemon.process.poll() is not None
