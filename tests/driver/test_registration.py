"""kubelet plugin registration over its real unix socket, called as kubelet calls it."""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from kvmount.base import unix_grpc
from kvmount.driver import command
from kvmount.driver.registration import RegistrationServer
from kvmount.proto import pluginregistration_pb2 as pb
from kvmount.proto import pluginregistration_pb2_grpc as pb_grpc
from tests.support import eventually

DRIVER = "secrets-store.csi.k8s.io"
CSI_SOCKET = "/var/lib/kubelet/plugins/csi-secrets-store/csi.sock"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # pytest's tmp_path is too long for a unix socket path (108 bytes) with the driver's name in it.
    path = Path(tempfile.mkdtemp(prefix="kvreg-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def registry(short_dir: Path) -> Iterator[RegistrationServer]:
    server = RegistrationServer(
        short_dir / "plugins_registry", DRIVER, f"unix://{CSI_SOCKET}", check_interval=0.05
    ).start()
    try:
        yield server
    finally:
        server.stop()


def kubelet(socket: Path) -> tuple[grpc.Channel, pb_grpc.RegistrationStub]:
    channel = unix_grpc.dial(str(socket))
    return channel, pb_grpc.RegistrationStub(channel)


def get_info(socket: Path) -> pb.PluginInfo:
    channel, stub = kubelet(socket)
    with channel:
        info: pb.PluginInfo = stub.GetInfo(pb.InfoRequest(), timeout=5)
        return info


def test_socket_named_as_the_registrar_names_it(registry: RegistrationServer, short_dir: Path) -> None:
    assert registry.socket == short_dir / "plugins_registry" / f"{DRIVER}-reg.sock"
    assert registry.socket.is_socket()
    assert registry.socket.stat().st_mode & 0o077 == 0  # only root (kubelet) may dial it


def test_get_info_names_the_driver_and_its_csi_socket(registry: RegistrationServer) -> None:
    info = get_info(registry.socket)
    assert info.type == "CSIPlugin"
    assert info.name == DRIVER
    assert info.endpoint == CSI_SOCKET  # a bare path, not a unix:// URL
    assert list(info.supported_versions) == ["1.0.0"]


def test_status_from_kubelet_is_logged(
    registry: RegistrationServer, caplog: pytest.LogCaptureFixture
) -> None:
    channel, stub = kubelet(registry.socket)
    with channel, caplog.at_level(logging.INFO, logger="kvmount.driver.registration"):
        stub.NotifyRegistrationStatus(pb.RegistrationStatus(plugin_registered=True), timeout=5)
        assert registry.registered.is_set()
        refusal = "error: no CSI endpoint at /nowhere"
        stub.NotifyRegistrationStatus(
            pb.RegistrationStatus(plugin_registered=False, error=refusal), timeout=5
        )
        assert not registry.registered.is_set()
    messages = [(r.levelno, r.getMessage(), getattr(r, "error", None)) for r in caplog.records]
    assert (logging.INFO, "registered with kubelet", None) in messages
    assert (logging.ERROR, "kubelet refused the registration", refusal) in messages


@pytest.mark.parametrize("wipe", ["socket", "directory"])
def test_serves_again_when_kubelet_wipes_the_socket(registry: RegistrationServer, wipe: str) -> None:
    channel, stub = kubelet(registry.socket)
    with channel:
        stub.NotifyRegistrationStatus(pb.RegistrationStatus(plugin_registered=True), timeout=5)
    if wipe == "socket":
        registry.socket.unlink()
    else:
        shutil.rmtree(registry.socket.parent)
    eventually(registry.socket.is_socket, timeout=5, what="a new registration socket")
    assert not registry.registered.is_set()  # kubelet has to confirm the new registration
    assert get_info(registry.socket).name == DRIVER


def test_stop_removes_the_socket_and_a_restart_serves_again(short_dir: Path) -> None:
    # gRPC unlinks the socket: kubelet forgets the driver until it is back.
    server = RegistrationServer(short_dir, DRIVER, CSI_SOCKET).start()
    server.stop()
    assert not server.socket.exists()
    restarted = RegistrationServer(short_dir, DRIVER, CSI_SOCKET).start()
    try:
        assert get_info(restarted.socket).endpoint == CSI_SOCKET
    finally:
        restarted.stop()


def test_endpoint_is_required(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--kubelet-registration-path"):
        RegistrationServer(tmp_path, DRIVER, "")


def test_driver_flags_named_like_the_registrar() -> None:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    defaults = parser.parse_args([])
    assert defaults.kubelet_registration_path == ""  # off: a registrar sidecar may do it
    assert defaults.plugin_registration_path == "/var/lib/kubelet/plugins_registry"
    args = parser.parse_args(
        [f"--kubelet-registration-path={CSI_SOCKET}", "--plugin-registration-path=/registration"]
    )
    assert (args.kubelet_registration_path, args.plugin_registration_path) == (CSI_SOCKET, "/registration")


def test_daemonset_registers_without_a_registrar_sidecar() -> None:
    manifest = Path(__file__).resolve().parents[2] / "deploy" / "driver" / "daemonset.yaml"
    pod = yaml.safe_load(manifest.read_text())["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert "node-driver-registrar" not in containers
    driver = containers["secrets-store"]
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(driver["args"][1:])  # after the "driver" subcommand
    host_paths = {v["name"]: v["hostPath"]["path"].rstrip("/") for v in pod["volumes"]}
    mounted = {m["name"]: m["mountPath"] for m in driver["volumeMounts"]}
    # kubelet's registry directory is where the driver serves registration ...
    assert host_paths["registration-dir"] == "/var/lib/kubelet/plugins_registry"
    assert mounted["registration-dir"] == args.plugin_registration_path
    # ... and the CSI socket it names is the one the driver serves, seen from the host.
    env = {e["name"]: e.get("value") for e in driver["env"]}
    served = unix_grpc.socket_path(env["CSI_ENDPOINT"])
    assert Path(served).parent == Path(mounted["plugin-dir"])
    assert args.kubelet_registration_path == f"{host_paths['plugin-dir']}/{Path(served).name}"
