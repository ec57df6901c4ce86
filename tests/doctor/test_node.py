"""`kvmount doctor --node`: the driver and provider processes on their sockets, their health
endpoints, and the CSI tmpfs volumes mounted under kubelet's directory."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmount.cli import main
from kvmount.volume.mounts import mount_tmpfs, unmount
from tests.doctor.test_access import row
from tests.support import Daemon, free_port, start_daemon, starts_process, until_ready


def _start(argv: list[str], sock: Path, log: Path) -> Daemon:
    daemon = start_daemon(argv[0], [sys.executable, "-m", "kvmount.cli", *argv], log)
    try:
        until_ready(sock.exists, timeout=30, what=f"{argv[0]}: a socket at {sock}", daemons=[daemon])
    except BaseException:
        daemon.process.kill()
        raise
    return daemon


@pytest.fixture
@starts_process
def node(tmp_path: Path) -> Iterator[tuple[Path, Path, int, int]]:
    """(provider directory, driver socket, provider health port, driver metrics port): both running."""
    providers, kubelet = tmp_path / "providers", tmp_path / "kubelet"
    providers.mkdir()
    kubelet.mkdir()
    health, metrics = free_port(), free_port()
    provider = _start(
        ["provider", f"--endpoint=unix://{providers / 'azure.sock'}", f"--healthz-port={health}",
         f"--prometheus-port={free_port()}"],
        providers / "azure.sock",
        tmp_path / "provider.log",
    )  # fmt: skip
    driver = _start(
        ["driver", f"--endpoint=unix://{tmp_path / 'csi.sock'}", "--nodeid=node-1",
         f"--standalone-classes-dir={tmp_path}", f"--state-dir={tmp_path / 'state'}",
         f"--provider-volume={providers}", f"--metrics-addr=127.0.0.1:{metrics}",
         f"--kubelet-root-dir={kubelet}"],
        tmp_path / "csi.sock",
        tmp_path / "driver.log",
    )  # fmt: skip
    try:
        yield providers, tmp_path / "csi.sock", health, metrics
    finally:
        for daemon in (provider, driver):
            daemon.stop(timeout=30)


def test_a_healthy_node(
    node: tuple[Path, Path, int, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    providers, csi_socket, health, metrics = node
    kubelet = tmp_path / "kubelet"
    volume = kubelet / "pods" / "uid-1" / "volumes" / "kubernetes.io~csi" / "secrets" / "mount"
    volume.mkdir(parents=True)
    mount_tmpfs(str(volume), 1 << 20)
    try:
        code = main(
            ["doctor", "--node", "--provider-dir", str(providers), "--driver-socket", str(csi_socket),
             "--kubelet-dir", str(kubelet), "--health-url", f"http://127.0.0.1:{health}/healthz",
             "--metrics-url", f"http://127.0.0.1:{metrics}/metrics"]
        )  # fmt: skip
    finally:
        unmount(str(volume))
    lines = capsys.readouterr().out.splitlines()
    assert code == 0, lines
    assert "secrets-store.csi.k8s.io" in row(lines, "driver socket") and "ready" in row(
        lines, "driver socket"
    )
    assert row(lines, "provider azure").startswith("ok ") and "kvmount" in row(lines, "provider azure")
    assert row(lines, "health").startswith("ok ") and "HTTP 200" in row(lines, "health")
    assert row(lines, "driver metrics").endswith("  publishes: 0 ok, 0 failed; rotations: 0 ok, 0 failed")
    assert "1 CSI tmpfs volumes" in row(
        lines, "mounts"
    ) and "uid-1/volumes/kubernetes.io~csi/secrets/mount" in (row(lines, "mounts"))


def test_cause_provider_socket_not_answering(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A provider that died leaves its socket file: the driver finds it, and every mount waits on it."""
    providers = tmp_path / "providers"
    providers.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(providers / "azure.sock"))
    stale.close()  # bound, never listening: what a crashed provider leaves
    code = main(
        ["doctor", "--node", "--provider-dir", str(providers), "--driver-socket", str(tmp_path / "csi.sock"),
         "--kubelet-dir", str(tmp_path)]
    )  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    provider = row(lines, "provider azure")
    assert (
        provider.startswith("FAIL")
        and "is not answering" in provider
        and "-> restart the provider" in provider
    )
    driver = row(lines, "driver socket")
    assert driver.startswith("FAIL") and "does not exist -> is the driver running on this node?" in driver


def test_cause_no_provider_installed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["doctor", "--node", "--provider-dir", str(tmp_path), "--driver-socket", str(tmp_path / "csi.sock"),
         "--kubelet-dir", str(tmp_path)]
    )  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    line = row(lines, "provider socket")
    assert (
        line.startswith("FAIL")
        and f"no provider socket in {tmp_path} -> is the provider's pod running" in line
    )


def test_failed_publishes_show_in_the_driver_metrics(
    node: tuple[Path, Path, int, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A publish kubelet sent for a class that does not exist: the node's row counts it by reason."""
    import grpc

    from kvmount.csi.kubelet import target_path
    from kvmount.csi.standin_kubelet import publish_request
    from kvmount.proto import csi_pb2_grpc as csi_grpc

    providers, csi_socket, _, metrics = node
    target = target_path(str(tmp_path / "kubelet"), "uid-2", "secrets")
    request = publish_request(
        target=target, class_name="missing", pod_name="web", pod_namespace="default", pod_uid="uid-2"
    )
    with grpc.insecure_channel(f"unix://{csi_socket}") as channel, pytest.raises(grpc.RpcError):
        csi_grpc.NodeStub(channel).NodePublishVolume(request, timeout=30)
    code = main(
        ["doctor", "--node", "--provider-dir", str(providers), "--driver-socket", str(csi_socket),
         "--kubelet-dir", str(tmp_path / "kubelet"), "--metrics-url", f"http://127.0.0.1:{metrics}/metrics"]
    )  # fmt: skip
    line = row(capsys.readouterr().out.splitlines(), "driver metrics")
    assert code == 0  # a warning: the node works, one pod's class does not
    assert line.startswith("warn") and "publishes: 0 ok, 1 failed (" in line
    assert line.endswith("-> doctor --pod NS/NAME for a pod that waits")
