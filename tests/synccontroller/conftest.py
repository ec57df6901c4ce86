"""A cluster of its own for the sync controller: etcd + kube-apiserver + kube-controller-manager
(garbage collection only), the CRDs, the controller's RBAC and admission policies as shipped,
the Azure provider and the Key Vault double. Its own API server, because a garbage collector
in the session's shared one would delete other tests' objects whose owners never existed."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as _client

from tests.peers.keyvault_double import KeyVaultDouble
from tests.peers.kube import CACHE, KubeAPIServer, binaries
from tests.provider.conftest import Provider, start_provider, stop_provider
from tests.support import Daemon, free_port, peer_missing, start_daemon, starts_process, stop_process

k8s: Any = _client
REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SYSTEM = "kvmount-system"
CONTROLLER_SA = "kvmount-sync-controller"
AUDIENCE = "api://AzureADTokenExchange"
WI_CLIENT = "11111111-2222-3333-4444-555555555555"
CONTROLLER_MANAGER = CACHE / "bin" / "kube-controller-manager"
LEASE = "29f1d54e.secret-sync.x-k8s.io"


def _shipped(path: Path) -> list[dict[str, Any]]:
    """The shipped manifests, with the controller's namespace set to the test's."""
    text = path.read_text().replace("kube-system", SYSTEM)
    return [doc for doc in yaml.safe_load_all(text) if doc]


@dataclass
class Controller:
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Cluster:
    api: KubeAPIServer
    kv: KeyVaultDouble
    provider: Provider
    workdir: Path
    controller_kubeconfig: Path
    controllers: list[Controller] = field(default_factory=list)
    federated: list[str] = field(default_factory=list)
    # Controllers started so far: each gets a log of its own, also after stop_controllers().
    started: int = 0

    @property
    def core(self) -> Any:
        return k8s.CoreV1Api(self.api.admin)

    @property
    def custom(self) -> Any:
        return k8s.CustomObjectsApi(self.api.admin)

    def namespace(self) -> str:
        name = f"ss-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    def start_controller(self, *extra: str, provider: Provider | None = None) -> Controller:
        """A controller talking to ``provider`` (default: the cluster's)."""
        log = self.workdir / f"controller-{self.started}.log"
        self.started += 1
        cmd = [
            sys.executable, "-m", "kvmount.cli", "sync-controller",
            f"--kubeconfig={self.controller_kubeconfig}",
            f"--provider-volume={(provider or self.provider).socket.parent}",
            f"--token-request-audience={AUDIENCE}",
            "--rotation-poll-interval=10s",
            "--health-probe-bind-address=127.0.0.1:0", "--metrics-bind-address=",
            f"--leader-election-namespace={SYSTEM}",
            *extra,
        ]  # fmt: skip
        env = {**os.environ, "SYNC_CONTROLLER_POD_NAME": f"controller-{len(self.controllers)}"}
        started = Controller(start_daemon("sync-controller", cmd, log, env=env).process, log)
        self.controllers.append(started)
        return started

    def stop_controllers(self) -> None:
        """SIGTERM every controller still running; each exits cleanly, with no traceback logged."""
        for c in self.controllers:
            if c.process.poll() is None:
                c.process.send_signal(signal.SIGTERM)
        for c in self.controllers:
            stop_process(c.process, timeout=40)
        logs = [c.log.read_text() for c in self.controllers]
        self.controllers.clear()
        for text in logs:
            assert "Traceback" not in text, text[-3000:]

    def class_(self, namespace: str, name: str, objects: list[dict[str, Any]], **parameters: str) -> None:
        attributes = self.provider.attributes(objects, clientID=WI_CLIENT, **parameters)
        self.custom.create_namespaced_custom_object(
            "secrets-store.csi.x-k8s.io",
            "v1",
            namespace,
            "secretproviderclasses",
            {
                "apiVersion": "secrets-store.csi.x-k8s.io/v1",
                "kind": "SecretProviderClass",
                "metadata": {"name": name},
                "spec": {"provider": "azure", "parameters": attributes},
            },
        )

    def service_account(self, namespace: str, name: str, federated: bool = True) -> None:
        self.core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        if federated:
            self.federated.append(f"system:serviceaccount:{namespace}:{name}")
            self.kv.register_aad_client(WI_CLIENT, federated=self.federated)

    def secret_sync(self, namespace: str, doc: dict[str, Any]) -> dict[str, Any]:
        made: dict[str, Any] = self.custom.create_namespaced_custom_object(
            "secret-sync.x-k8s.io", "v1alpha1", namespace, "secretsyncs", doc
        )
        return made

    def get_sync(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(
            "secret-sync.x-k8s.io", "v1alpha1", namespace, "secretsyncs", name
        )
        return found

    def secret(self, namespace: str, name: str) -> Any:
        """The Secret, or None when there is none."""
        try:
            return self.core.read_namespaced_secret(name, namespace)
        except k8s.ApiException as err:
            if err.status == 404:
                return None
            raise

    def condition(self, namespace: str, name: str, kind: str) -> dict[str, Any] | None:
        status = self.get_sync(namespace, name).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def _start_gc(api: KubeAPIServer, workdir: Path) -> Daemon:
    return start_daemon(
        "kube-controller-manager",
        [
            str(CONTROLLER_MANAGER),
            "--kubeconfig", str(api.kubeconfig),
            "--authentication-kubeconfig", str(api.kubeconfig),
            "--authorization-kubeconfig", str(api.kubeconfig),
            "--controllers", "garbage-collector-controller",
            "--leader-elect=false",
            "--bind-address", "127.0.0.1", "--secure-port", str(free_port()),
        ],
        workdir / "kube-controller-manager.log",
        own_group=True,
    )  # fmt: skip


@pytest.fixture(scope="package")
@starts_process
def cluster(keyvault: KeyVaultDouble, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = [str(p) for p in [CONTROLLER_MANAGER] if not p.exists()]
    if binaries() is None or missing:
        reason = (
            "kube-apiserver, etcd or kube-controller-manager not installed: run "
            "scripts/peers/kube-apiserver.sh and scripts/peers/kubelet.sh"
        )
        peer_missing(reason)
    workdir = tmp_path_factory.mktemp("synccluster")
    with contextlib.ExitStack() as cleanup:
        # Each peer is stopped even when a later one fails to start.
        api = KubeAPIServer(workdir / "api").start()
        cleanup.callback(api.stop)
        gc = _start_gc(api, workdir)
        cleanup.callback(gc.stop, timeout=30)
        provider = start_provider(workdir, keyvault)
        cleanup.callback(stop_provider, provider)
        for path in (DEPLOY / "crds" / "secretproviderclasses.yaml", DEPLOY / "crds" / "secretsyncs.yaml"):
            api.apply_yaml(path)
        k8s.CoreV1Api(api.admin).create_namespace({"metadata": {"name": SYSTEM}})
        for doc in _shipped(DEPLOY / "sync-controller" / "rbac.yaml"):
            api.apply(doc)
        for doc in _shipped(DEPLOY / "sync-controller" / "admission-policies.yaml"):
            api.apply(doc)
        token = api.service_account_token(SYSTEM, CONTROLLER_SA)
        kubeconfig = api.write_kubeconfig(workdir / "controller.kubeconfig", token, CONTROLLER_SA)
        made = Cluster(api, keyvault, provider, workdir, kubeconfig)
        cleanup.callback(made.stop_controllers)
        yield made


def lease_holder(cluster: Cluster) -> str:
    try:
        lease = k8s.CoordinationV1Api(cluster.api.admin).read_namespaced_lease(LEASE, SYSTEM)
    except k8s.ApiException:
        return ""
    return str(lease.spec.holder_identity or "")


def holder_pid(holder: str) -> int:
    match = re.search(r"_(\d+)$", holder)
    return int(match.group(1)) if match else -1
