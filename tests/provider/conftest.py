"""`kvmount provider` as a real process on a unix socket, in front of the Key Vault double."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from kvmount.proto import v1alpha1_pb2 as pb
from kvmount.proto import v1alpha1_pb2_grpc as pb_grpc
from tests.peers.keyvault_double import KeyVaultDouble
from tests.support import free_port, serves, start_daemon, starts_process, until_ready

VAULT = "kvtest"


@dataclass
class Provider:
    process: subprocess.Popen[bytes]
    socket: Path
    log: Path
    metrics_port: int
    healthz_port: int
    stub: pb_grpc.CSIDriverProviderStub
    channel: grpc.Channel
    kv: KeyVaultDouble
    cloud_env: Path

    def attributes(self, objects: list[dict[str, Any]], **extra: str) -> dict[str, str]:
        attrs = {
            "keyvaultName": VAULT,
            "tenantID": self.kv.tenant,
            "cloudName": "AzureStackCloud",
            "cloudEnvFileName": str(self.cloud_env),
            "objects": yaml.safe_dump({"array": [yaml.safe_dump(o) for o in objects]}),
        }
        attrs.update(extra)
        return attrs

    def request(
        self,
        attributes: dict[str, str],
        secrets: dict[str, str] | None = None,
        permission: str = "420",
        current: dict[str, str] | None = None,
    ) -> pb.MountRequest:
        """A MountRequest as the driver sends it; ``current`` (object versions) makes it a rotation poll."""
        return pb.MountRequest(
            attributes=json.dumps(attributes),
            secrets=json.dumps(secrets),
            target_path="/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/v/mount",
            permission=permission,
            current_object_version=[pb.ObjectVersion(id=k, version=v) for k, v in (current or {}).items()],
        )

    def mount(
        self,
        attributes: dict[str, str],
        secrets: dict[str, str] | None = None,
        permission: str = "420",
        current: dict[str, str] | None = None,
    ) -> pb.MountResponse:
        response: pb.MountResponse = self.stub.Mount(
            self.request(attributes, secrets, permission, current), timeout=60
        )
        return response

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            text: str = r.read().decode()
            return text


def start_provider(
    tmp: Path, kv: KeyVaultDouble, *extra: str, extra_env: dict[str, str] | None = None
) -> Provider:
    sock = tmp / "azure.sock"
    log = tmp / "provider.log"
    cloud_env = Path(kv.write_cloud_env(tmp / "azurestack.json"))
    metrics_port, healthz_port = free_port(), free_port()
    env = {**os.environ, **kv.env(), **(extra_env or {})}
    cmd = [
        sys.executable, "-m", "kvmount.cli", "provider", f"--endpoint=unix://{sock}",
        f"--healthz-port={healthz_port}", f"--prometheus-port={metrics_port}",
        f"--nmi-port={kv.nmi_port}",
        # The tests' environment files live in pytest's temporary directories.
        f"--cloud-env-dirs={tempfile.gettempdir()}", *extra,
    ]  # fmt: skip
    daemon = start_daemon("provider", cmd, log, env=env)
    try:
        # Ready means answering: a stale socket file may exist before the provider listens.
        until_ready(lambda: serves(sock), timeout=30, what=f"the provider serving {sock}", daemons=[daemon])
    except BaseException:
        daemon.stop()
        raise
    process = daemon.process
    channel = grpc.insecure_channel(f"unix://{sock}")
    stub = pb_grpc.CSIDriverProviderStub(channel)
    return Provider(process, sock, log, metrics_port, healthz_port, stub, channel, kv, cloud_env)


def stop_provider(provider: Provider) -> None:
    provider.channel.close()
    provider.process.terminate()
    provider.process.wait(timeout=40)
    # Bad input and failures are answered with statuses, never a crash dump.
    assert "Traceback" not in provider.log.read_text(), provider.log.read_text()[-3000:]


@pytest.fixture(scope="module")
@starts_process
def provider(keyvault: KeyVaultDouble, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    started = start_provider(tmp_path_factory.mktemp("provider"), keyvault)
    yield started
    stop_provider(started)


@pytest.fixture
def sp(keyvault: KeyVaultDouble) -> dict[str, str]:
    """A service principal registered with the AAD double: the node-publish secret."""
    client_id = f"app-{os.urandom(4).hex()}"
    secret = f"sp-secret-{os.urandom(12).hex()}"
    keyvault.register_aad_client(client_id, secret=secret)
    return {"clientid": client_id, "clientsecret": secret}
