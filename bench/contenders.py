"""The providers compared, started side by side in front of one Key Vault double.

* ``upstream``: upstream's provider v1.8.2 (scripts/peers/upstream-provider.sh);
* ``kvmount``: `kvmount provider` as shipped (coalescing window 5 s);
* ``kvmount-fresh``: `kvmount provider --coalesce-seconds 0`, every read goes to Key Vault.

Each is a process of its own whose CPU time and memory are read from /proc.
Start-up is timed from exec to the first accepted connection on its socket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from bench import procstat
from kvmount.proto import v1alpha1_pb2 as pb
from kvmount.proto import v1alpha1_pb2_grpc as pb_grpc
from tests.peers.keyvault_double import KeyVaultDoubleProcess
from tests.peers.upstream import PROVIDER_BINARY
from tests.support import Daemon, free_port, serves, until_ready

VAULT = "kvbench"
TARGET = "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/v/mount"


def wait_for_socket(daemon: Daemon, path: Path) -> None:
    """Until ``path`` accepts a connection: the daemon serves (polled every 5 ms: starts are timed)."""
    until_ready(
        lambda: serves(path), timeout=60, what=f"{daemon.name} serving {path}", daemons=[daemon], poll=0.005
    )


@dataclass
class Contender:
    name: str
    process: subprocess.Popen[bytes]
    socket: Path
    log: Path
    start_seconds: float
    channel: grpc.Channel
    stub: pb_grpc.CSIDriverProviderStub

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu(self) -> float:
        return procstat.cpu_seconds(self.pid)

    def rss(self) -> float:
        return procstat.rss_mib(self.pid)

    def mount(
        self, attributes: dict[str, str], secrets: dict[str, str], current: dict[str, str] | None = None
    ) -> pb.MountResponse:
        request = pb.MountRequest(
            attributes=json.dumps(attributes),
            secrets=json.dumps(secrets),
            target_path=TARGET,
            permission="420",
            current_object_version=[pb.ObjectVersion(id=k, version=v) for k, v in (current or {}).items()],
        )
        response: pb.MountResponse = self.stub.Mount(request, timeout=120)
        return response

    def stop(self) -> None:
        self.channel.close()
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _start(name: str, argv: list[str], env: dict[str, str], workdir: Path) -> Contender:
    sock, log = workdir / "azure.sock", workdir / f"{name}.log"
    with open(log, "wb") as out:
        began = time.perf_counter()
        process = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    wait_for_socket(Daemon(name, process, log), sock)
    started = time.perf_counter() - began
    channel = grpc.insecure_channel(f"unix://{sock}")
    return Contender(name, process, sock, log, started, channel, pb_grpc.CSIDriverProviderStub(channel))


def start_upstream(workdir: Path, kv: KeyVaultDoubleProcess) -> Contender:
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(PROVIDER_BINARY), f"--endpoint=unix://{workdir / 'azure.sock'}",
        f"--healthz-port={free_port()}", f"--prometheus-port={free_port()}",
    ]  # fmt: skip
    return _start("upstream", argv, {**os.environ, **kv.go_env()}, workdir)


def start_kvmount(name: str, workdir: Path, kv: KeyVaultDoubleProcess, *flags: str) -> Contender:
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "kvmount.cli", "provider", f"--endpoint=unix://{workdir / 'azure.sock'}",
        f"--healthz-port={free_port()}", f"--prometheus-port={free_port()}", f"--nmi-port={kv.nmi_port}",
        f"--cloud-env-dirs={tempfile.gettempdir()},{workdir.parent}", *flags,
    ]  # fmt: skip
    return _start(name, argv, {**os.environ, **kv.env()}, workdir)


@dataclass
class Vault:
    """The double, its seeded objects and a class's attributes for any number of them."""

    kv: KeyVaultDoubleProcess
    cloud_env: str
    names: list[str]

    def attributes(self, count: int, offset: int = 0) -> dict[str, str]:
        objects = [{"objectName": n, "objectType": "secret"} for n in self.names[offset : offset + count]]
        return {
            "keyvaultName": VAULT,
            "tenantID": self.kv.tenant,
            "cloudName": "AzureStackCloud",
            "cloudEnvFileName": self.cloud_env,
            "objects": yaml.safe_dump({"array": [yaml.safe_dump(o) for o in objects]}),
            # What the driver adds from the pod; upstream refuses a Mount without the pod's name.
            "csi.storage.k8s.io/pod.name": "web",
            "csi.storage.k8s.io/pod.namespace": "bench",
            "csi.storage.k8s.io/pod.uid": "0d2f5c1e-0000-4000-8000-000000000001",
            "csi.storage.k8s.io/serviceAccount.name": "default",
        }

    def identity(self) -> dict[str, str]:
        """A new service principal: the node-publish secret of a mount no provider has seen."""
        client_id = f"bench-{os.urandom(4).hex()}"
        secret = f"bench-secret-{os.urandom(8).hex()}"
        self.kv.register_aad_client(client_id, secret=secret)
        return {"clientid": client_id, "clientsecret": secret}


def seed(kv: KeyVaultDoubleProcess, workdir: Path, count: int) -> Vault:
    cloud_env = kv.write_cloud_env(workdir / "azurestack.json")
    names = [f"bench-{i}" for i in range(count)]
    for name in names:
        # About the size of a typical secret: a connection string.
        kv.put_secret(VAULT, name, f"Server=db-{name};User=app;Password={os.urandom(12).hex()}")
    return Vault(kv, cloud_env, names)


def kind_of(entry: dict[str, Any]) -> str:
    """A request in the double's log: a Key Vault read, a challenge, a token or discovery request."""
    service = entry.get("service")
    if service == "keyvault":
        return "read" if entry.get("status") == 200 else "challenge"
    if service == "aad" and str(entry.get("path", "")).endswith("/token"):
        return "token"
    if service in ("aad", "proxy", "imds"):
        return "discovery"
    return "other"
