"""`kvmount registrar` and `kvmount livenessprobe` with the args upstream's driver chart
gives its node-driver-registrar and livenessprobe containers, over real sockets and ports."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmount.base import unix_grpc
from kvmount.proto import pluginregistration_pb2 as pb
from kvmount.proto import pluginregistration_pb2_grpc as pb_grpc
from tests.driver.conftest import start_driver, stop_driver
from tests.support import eventually, free_port, start_daemon

pytestmark = pytest.mark.peer  # each test runs kvmount as a process

DRIVER = "secrets-store.csi.k8s.io"
# As the chart renders it: the driver's socket as kubelet sees it.
KUBELET_PATH = "/var/lib/kubelet/plugins/csi-secrets-store/csi.sock"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # pytest's tmp_path is too long for a unix socket path (108 bytes) with the driver's name in it.
    path = Path(tempfile.mkdtemp(prefix="kvsc-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


class Sidecar:
    def __init__(self, base: Path, *args: str) -> None:
        self.log = base / f"{args[0]}.log"
        self.proc = start_daemon(args[0], [sys.executable, "-m", "kvmount.cli", *args], self.log).process

    def stop(self) -> str:
        self.proc.terminate()
        assert self.proc.wait(timeout=20) == 0, self.log.read_text()
        text = self.log.read_text()
        assert "Traceback" not in text, text
        return text


def healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            status: int = answer.status
            return status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0  # not listening yet


def test_registrar_registers_the_driver_it_finds_on_its_socket(short_dir: Path, provider_dir: Path) -> None:
    registry, port = short_dir / "registration", free_port()
    registry.mkdir()
    # Started before the driver, as containers of one pod may be: it waits for the socket.
    registrar = Sidecar(
        short_dir,
        "registrar",
        "--v=5",
        f"--csi-address={short_dir / 'csi.sock'}",
        f"--kubelet-registration-path={KUBELET_PATH}",
        f"--plugin-registration-path={registry}",
        f"--http-endpoint=127.0.0.1:{port}",
    )
    socket = registry / f"{DRIVER}-reg.sock"
    driver = start_driver(short_dir, provider_dir)
    try:
        eventually(socket.exists, timeout=20, what="the registration socket")
        # Its /healthz may begin to listen a moment after the socket is in place.
        eventually(lambda: healthz(port) == 200, timeout=20, what="/healthz ok with the socket in place")
        # Called as kubelet calls it: the driver's own name, the path kubelet dials.
        with unix_grpc.dial(str(socket)) as channel:
            stub = pb_grpc.RegistrationStub(channel)
            info = stub.GetInfo(pb.InfoRequest(), timeout=5)
            assert (info.type, info.name, info.endpoint) == ("CSIPlugin", DRIVER, KUBELET_PATH)
            stub.NotifyRegistrationStatus(pb.RegistrationStatus(plugin_registered=True), timeout=5)
        assert "registered with kubelet" in registrar.log.read_text()
        # kubelet's directory wiped: /healthz says so until the socket is served again.
        socket.unlink()
        assert healthz(port) == 500 or socket.exists()
        eventually(socket.exists, timeout=20, what="the registration socket served again")
        assert healthz(port) == 200
    finally:
        stop_driver(driver)
        registrar.stop()
    assert not socket.exists(), "kubelet forgets the driver once the registrar stops"


def test_livenessprobe_answers_from_the_drivers_probe(short_dir: Path, provider_dir: Path) -> None:
    port = free_port()
    driver = start_driver(short_dir, provider_dir)
    probe = Sidecar(
        short_dir,
        "livenessprobe",
        f"--csi-address={short_dir / 'csi.sock'}",
        "--probe-timeout=3s",
        f"--http-endpoint=0.0.0.0:{port}",
        "-v=2",
    )
    try:
        eventually(
            lambda: healthz(port) == 200, timeout=20, what="/healthz ok while the driver answers Probe"
        )
    finally:
        stop_driver(driver)
    try:
        assert healthz(port) == 500, "a driver gone is a failed liveness check"
    finally:
        log = probe.stop()
    assert "driver probe failed" in log


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["registrar", "--csi-address=/nowhere.sock"], "--kubelet-registration-path is required"),
        (["livenessprobe", "--health-port=0"], "no /healthz address"),
        (["livenessprobe", "--probe-timeout=0s"], "a timeout must be more than 0s"),
    ],
)
def test_bad_flags_are_one_line(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kvmount.cli", *args], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
