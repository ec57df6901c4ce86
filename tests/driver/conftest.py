"""Fixtures: a provider double on a unix socket and `kvmount driver` as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from kvmount.csi import kubelet, standin_kubelet
from kvmount.proto import csi_pb2 as csi
from kvmount.proto import csi_pb2_grpc as csi_grpc
from kvmount.volume import mounts
from tests.conftest import BASE_TEMP
from tests.driver.provider_double import Behaviour, ProviderDouble, serve
from tests.support import Daemon, free_port, start_daemon, starts_process, until_ready

PROVIDER = "double"


@pytest.fixture(scope="session", autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the driver tests mount tmpfs and must run as root")
        pytest.skip("the driver tests mount tmpfs and must run as root")


def await_socket(path: Path, daemon: Daemon, timeout: float = 20.0) -> None:
    """Until ``daemon`` has made its socket at ``path``; fails at once if it exits."""
    until_ready(path.exists, timeout=timeout, what=f"a socket at {path}", daemons=[daemon])


@dataclass
class Driver:
    endpoint: str
    classes_dir: Path
    state_dir: Path
    provider_dir: Path
    log: Path
    proc: subprocess.Popen[bytes]
    channel: grpc.Channel
    metrics_port: int

    @property
    def node(self) -> csi_grpc.NodeStub:
        return csi_grpc.NodeStub(self.channel)

    @property
    def identity(self) -> csi_grpc.IdentityStub:
        return csi_grpc.IdentityStub(self.channel)

    def write_class(
        self,
        name: str,
        parameters: dict[str, str],
        namespace: str = "default",
        provider: str = PROVIDER,
    ) -> None:
        doc: dict[str, Any] = {
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClass",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"provider": provider, "parameters": parameters},
        }
        (self.classes_dir / f"{namespace}-{name}.yaml").write_text(yaml.safe_dump(doc))


@pytest.fixture(scope="session")
def provider_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("providers")


@pytest.fixture(scope="session")
def _provider(provider_dir: Path) -> Iterator[ProviderDouble]:
    server, double = serve(f"unix://{provider_dir}/{PROVIDER}.sock")
    yield double
    server.stop(0)


@pytest.fixture
def provider(_provider: ProviderDouble) -> ProviderDouble:
    """The provider double, with default behaviour and no recorded requests."""
    _provider.behaviour = Behaviour()
    _provider.requests.clear()
    return _provider


def start_driver(base: Path, provider_dir: Path, *extra: str) -> Driver:
    """`kvmount driver` in standalone mode with its directories under ``base``."""
    classes, state = base / "classes", base / "state"
    classes.mkdir(exist_ok=True)
    sock = base / "csi.sock"
    log = base / "driver.log"
    port = free_port()
    cmd = [
        sys.executable, "-m", "kvmount.cli", "driver",
        f"--endpoint=unix://{sock}",
        "--nodeid=test-node",
        f"--standalone-classes-dir={classes}",
        f"--state-dir={state}",
        f"--provider-volume={provider_dir}",
        f"--additional-provider-volume-paths={base / 'more-providers'}",
        f"--metrics-addr=127.0.0.1:{port}",
        f"--kubelet-root-dir={BASE_TEMP[0]}",
        *extra,
    ]  # fmt: skip
    if sock.exists():
        sock.unlink()  # so the wait below sees the new server's socket, not the old one's
    daemon = start_daemon("driver", cmd, log)
    try:
        await_socket(sock, daemon)
    except BaseException:
        daemon.process.kill()
        raise
    channel = grpc.insecure_channel(f"unix://{sock}")
    return Driver(f"unix://{sock}", classes, state, provider_dir, log, daemon.process, channel, port)


def stop_driver(driver: Driver) -> None:
    driver.channel.close()
    driver.proc.terminate()
    driver.proc.wait(timeout=40)
    # Bad input and failures are answered with statuses, never a crash dump.
    assert "Traceback" not in driver.log.read_text(), driver.log.read_text()[-3000:]


@pytest.fixture(scope="session")
@starts_process
def driver(tmp_path_factory: pytest.TempPathFactory, provider_dir: Path) -> Iterator[Driver]:
    started = start_driver(tmp_path_factory.mktemp("driver"), provider_dir)
    yield started
    stop_driver(started)


@pytest.fixture
def kubelet_dir(tmp_path: Path) -> Iterator[Path]:
    """A kubelet root for one test; anything still mounted under it is unmounted afterwards."""
    yield tmp_path
    for point in sorted(mounts.mount_points(), reverse=True):
        if point.startswith(f"{tmp_path}/"):
            mounts.unmount(point)


@dataclass
class Pod:
    name: str
    namespace: str
    uid: str
    target: Path

    def publish_request(self, class_name: str, **kwargs: Any) -> csi.NodePublishVolumeRequest:
        return standin_kubelet.publish_request(
            target=str(self.target),
            class_name=class_name,
            pod_name=self.name,
            pod_namespace=self.namespace,
            pod_uid=self.uid,
            **kwargs,
        )

    def unpublish_request(self) -> csi.NodeUnpublishVolumeRequest:
        return csi.NodeUnpublishVolumeRequest(
            volume_id=kubelet.volume_id(self.uid, "secrets-store-inline"), target_path=str(self.target)
        )


def make_pod(kubelet_dir: Path, name: str = "web", namespace: str = "default") -> Pod:
    uid = str(uuid.uuid4())
    target = Path(kubelet.target_path(str(kubelet_dir), uid, "secrets-store-inline"))
    target.parent.mkdir(parents=True)
    return Pod(name, namespace, uid, target)
