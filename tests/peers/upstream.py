"""Upstream's Go binaries as test peers, so kvmount is compared with the real thing.

* ``UpstreamProvider``: secrets-store-csi-driver-provider-azure v1.8.2, built by
  scripts/peers/upstream-provider.sh, serving v1alpha1 on a private unix socket,
  in front of the Key Vault double.
* ``UpstreamDriver``: secrets-store-csi-driver v1.6.1, built by
  scripts/peers/upstream-driver.sh (with our stand-in for its logging module,
  tests/peers/mlog), serving CSI on a private unix socket against the tests'
  kube-apiserver.

How upstream's provider reaches the double, read from its source:

* TLS: Go's crypto/x509 reads the CA bundle from ``SSL_CERT_FILE``.
* Key Vault and AAD: only per mount, from ``cloudName: AzureStackCloud`` and
  ``cloudEnvFileName`` (the provider sets ``AZURE_ENVIRONMENT_FILEPATH`` from it;
  the file names the vault DNS suffix and the AAD endpoint). The double's
  ``write_cloud_env`` writes such a file.
* MSAL Go asks the public AAD's instance discovery before it trusts the double's
  authority host: ``KeyVaultDouble.go_env()`` sends that one host through the
  double's CONNECT proxy.
* Not reachable: VM managed identity (MSAL Go's IMDS address is fixed at
  169.254.169.254 and has no override) and pod identity (NMI is fixed at
  localhost:2579, which parallel runs could not share).

    with UpstreamProvider(workdir, kv, *flags) as provider:
        provider.stub.Mount(request)
    with UpstreamDriver(workdir, provider_dir, kubeconfig, *flags) as driver:
        driver.node.NodePublishVolume(request)

``require()`` skips a test when a binary is missing, or fails under CI.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Self

import grpc

from kvmount.proto import csi_pb2_grpc as csi_grpc
from kvmount.proto import v1alpha1_pb2_grpc as pb_grpc
from tests.peers.keyvault_double import KeyVaultDouble, KeyVaultDoubleProcess
from tests.support import free_port, peer_missing, serves, start_daemon, stop_process, until_ready

CACHE = Path(os.environ.get("KVMOUNT_CACHE", Path.home() / ".cache" / "kvmount"))
PROVIDER_BINARY = CACHE / "bin" / "upstream-azure-provider"
DRIVER_BINARY = CACHE / "bin" / "upstream-secrets-store-csi-driver"
SCRIPTS = {
    PROVIDER_BINARY: "scripts/peers/upstream-provider.sh",
    DRIVER_BINARY: "scripts/peers/upstream-driver.sh",
}


def require(binary: Path) -> None:
    """Skip the calling test when ``binary`` is not built; under CI, fail instead."""
    if os.access(binary, os.X_OK):
        return
    reason = f"{binary.name} not installed: run {SCRIPTS[binary]}"
    peer_missing(reason)


class _Process:
    """A started binary with its log; ready once its gRPC socket answers."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, sock: Path) -> None:
        self.log, self.socket = log, sock
        sock.unlink(missing_ok=True)  # readiness below must see the new server, not a stale file
        daemon = start_daemon(log.stem, argv, log, env=env)
        self.process = daemon.process
        self.channel = grpc.insecure_channel(f"unix://{sock}")
        try:
            until_ready(lambda: serves(sock), timeout=60, what=f"{log.stem} serving {sock}", daemons=[daemon])
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.channel.close()
        stop_process(self.process)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class UpstreamProvider(_Process):
    """Upstream's Azure provider on ``<workdir>/azure.sock`` (a driver's provider dir)."""

    stub: pb_grpc.CSIDriverProviderStub

    def __init__(self, workdir: Path, kv: KeyVaultDouble | KeyVaultDoubleProcess, *flags: str) -> None:
        require(PROVIDER_BINARY)
        workdir.mkdir(parents=True, exist_ok=True)
        self.healthz_port, self.metrics_port = free_port(), free_port()
        sock = workdir / "azure.sock"
        argv = [
            str(PROVIDER_BINARY), f"--endpoint=unix://{sock}",
            f"--healthz-port={self.healthz_port}", f"--prometheus-port={self.metrics_port}",
            *flags,
        ]  # fmt: skip
        super().__init__(argv, {**os.environ, **kv.go_env()}, workdir / "upstream-provider.log", sock)
        self.stub = pb_grpc.CSIDriverProviderStub(self.channel)


class UpstreamDriver(_Process):
    """Upstream's CSI driver on ``<workdir>/csi.sock``, providers in ``provider_dir``.

    It needs the API server (classes, pods on ``nodeid``, pod statuses, Secrets)
    and root (it mounts tmpfs on the target). Rotation is off unless flagged.
    """

    def __init__(
        self, workdir: Path, provider_dir: Path, kubeconfig: Path, *flags: str, nodeid: str = "test-node"
    ) -> None:
        require(DRIVER_BINARY)
        workdir.mkdir(parents=True, exist_ok=True)
        empty = workdir / "no-more-providers"
        empty.mkdir(exist_ok=True)
        sock = workdir / "csi.sock"
        self.nodeid = nodeid
        argv = [
            str(DRIVER_BINARY), f"--endpoint=unix://{sock}", f"--nodeid={nodeid}",
            f"--provider-volume={provider_dir}", f"--additional-provider-volume-paths={empty}",
            f"--kubeconfig={kubeconfig}", f"--metrics-addr=127.0.0.1:{free_port()}",
            *flags,
        ]  # fmt: skip
        super().__init__(argv, dict(os.environ), workdir / "upstream-driver.log", sock)

    @property
    def node(self) -> csi_grpc.NodeStub:
        return csi_grpc.NodeStub(self.channel)

    @property
    def identity(self) -> csi_grpc.IdentityStub:
        return csi_grpc.IdentityStub(self.channel)
