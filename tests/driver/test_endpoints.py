"""The driver's metrics and health endpoint under 1,000 idle connections: it answers, and SIGTERM stops it."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

import pytest

from tests.driver.conftest import start_driver, stop_driver
from tests.support import eventually

pytestmark = pytest.mark.peer  # each test runs kvmount as a process

IDLE = 1000


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("Threads:"))


def healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        status: int = response.status
        return status


def serving(port: int) -> bool:
    """The endpoint accepts connections (the driver may open it just after its CSI socket)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_idle_connections_neither_stall_nor_outlive_the_driver(tmp_path: Path, provider_dir: Path) -> None:
    driver = start_driver(tmp_path, provider_dir)
    idle: list[socket.socket] = []
    try:
        eventually(lambda: serving(driver.metrics_port), timeout=10, what="the metrics endpoint listens")
        assert healthz(driver.metrics_port) == 200
        threads = threads_of(driver.proc.pid)
        idle = [socket.create_connection(("127.0.0.1", driver.metrics_port), timeout=5) for _ in range(IDLE)]
        assert healthz(driver.metrics_port) == 200, "a scrape is answered beside the idle connections"
        assert threads_of(driver.proc.pid) <= threads + 2, "no thread per connection"

        start = time.monotonic()
        stop_driver(driver)  # SIGTERM, then waits for the exit
        assert time.monotonic() - start < 10
        assert driver.proc.returncode == 0
    finally:
        for sock in idle:
            sock.close()
        if driver.proc.poll() is None:
            driver.proc.kill()
