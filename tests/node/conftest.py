"""The real node for the end-to-end tests: one cluster per session (tests/node/cluster.py),
`kvmount driver` and `kvmount provider` beside its kubelet (tests/node/plugins.py), the
Key Vault double behind them, and helpers that build pods and wait on what the API says.

With KVMOUNT_NODE_PLUGINS=chart the driver and provider are instead the pods of
charts/kvmount, installed with `helm install` from the built image (tests/node/chart.py);
tests that control the host processes are marked host_processes_only.

Skipped, naming what is missing, on a machine that cannot run kubelet; under CI
(env CI set) that fails instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.dynamic.exceptions import NotFoundError

from tests.node import chart
from tests.node.chart import ChartPlugins
from tests.node.cluster import BUSYBOX, NODE_NAME, Node, missing
from tests.node.plugins import DRIVER_NAME, Plugins
from tests.peers.keyvault_double import KeyVaultDouble
from tests.support import eventually, peer_missing

VAULT = "kvtest"
MOUNT = "/mnt/secrets"
CHART_MODE = os.environ.get("KVMOUNT_NODE_PLUGINS") == "chart"
# A test that stops, restarts or reads the files of the host processes (tests/node/plugins.py).
host_processes_only = pytest.mark.skipif(CHART_MODE, reason="controls the driver as a host process")


@pytest.fixture(scope="session")
def node(keyvault: KeyVaultDouble, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    lacking = chart.missing() if CHART_MODE else missing()
    if lacking:
        reason = "the real-node tests need " + "; ".join(lacking)
        peer_missing(reason)
    # SIGTERM (a CI step's timeout) would end pytest without teardown and leave kubelet,
    # containerd, mounts and sysctls behind; as an interrupt, pytest tears down first.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        # Short: unix socket paths under kubelet's root must stay below 108 bytes.
        root = Path(tempfile.mkdtemp(prefix="kvn-", dir="/tmp"))
        cloud_env = keyvault.write_cloud_env(root / "azurestack.json")
        # kubelet's environment is the FlexVolume driver's: the double's CA and cloud.
        env = {**keyvault.env(), "AZURE_ENVIRONMENT_FILEPATH": cloud_env}
        if CHART_MODE:
            chart.share(root)
        node = Node(root, env=env, controllers=chart.CONTROLLERS if CHART_MODE else ()).start()
        binder = chart.Binder(node).start() if CHART_MODE else None
        try:
            yield node
        finally:
            if binder is not None:
                binder.stop()
            # The node's directory goes; its logs stay with pytest's temporary directories.
            shutil.copytree(node.root / "logs", tmp_path_factory.mktemp("node-logs"), dirs_exist_ok=True)
            problems = node.stop()
        assert not problems, f"the node left things behind: {problems}"
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@pytest.fixture(scope="session")
def plugins(node: Node, keyvault: KeyVaultDouble) -> Iterator[Plugins | ChartPlugins]:
    started = ChartPlugins(node, keyvault) if CHART_MODE else Plugins(node, keyvault.env())
    try:
        yield started.start()
    finally:
        started.stop()


@dataclass
class Cluster:
    """What a test uses: the API as admin, its own namespace, the double."""

    node: Node
    plugins: Plugins | ChartPlugins
    kv: KeyVaultDouble
    namespace: str
    core: k8s.CoreV1Api

    @property
    def cloud_env(self) -> str:
        return self.plugins.cloud_env

    def name(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:6]}"

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self.node.api.apply(obj, self.namespace)

    def secret_provider_class(
        self,
        name: str,
        objects: list[dict[str, Any]],
        secret_objects: list[dict[str, Any]] | None = None,
        **parameters: str,
    ) -> None:
        spec: dict[str, Any] = {
            "provider": "azure",
            "parameters": {
                "keyvaultName": VAULT,
                "tenantID": self.kv.tenant,
                "cloudName": "AzureStackCloud",
                "cloudEnvFileName": self.cloud_env,
                "objects": yaml.safe_dump({"array": [yaml.safe_dump(o) for o in objects]}),
                **parameters,
            },
        }
        if secret_objects:
            spec["secretObjects"] = secret_objects
        self.apply(
            {
                "apiVersion": "secrets-store.csi.x-k8s.io/v1",
                "kind": "SecretProviderClass",
                "metadata": {"name": name},
                "spec": spec,
            }
        )

    def service_principal(self) -> str:
        """A node-publish Secret with a service principal the double knows; its name."""
        client_id, secret = self.name("app"), uuid.uuid4().hex
        self.kv.register_aad_client(client_id, secret=secret)
        name = self.name("creds")
        self.core.create_namespaced_secret(
            self.namespace,
            k8s.V1Secret(
                metadata=k8s.V1ObjectMeta(name=name),
                string_data={"clientid": client_id, "clientsecret": secret},
            ),
        )
        return name

    def pod(
        self,
        name: str,
        script: str,
        volume: dict[str, Any] | None = None,
        env: list[dict[str, Any]] | None = None,
    ) -> None:
        """A busybox pod on the node running ``script``, with ``volume`` at MOUNT."""
        container: dict[str, Any] = {
            "name": "app",
            "image": BUSYBOX,
            "imagePullPolicy": "Never",
            "command": ["sh", "-c", script],
            "env": env or [],
        }
        spec: dict[str, Any] = {
            "nodeName": NODE_NAME,  # no scheduler
            "hostNetwork": True,  # no CNI
            "serviceAccountName": "app",  # no ServiceAccount admission to default it
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
        }
        if volume is not None:
            container["volumeMounts"] = [{"name": "secrets", "mountPath": MOUNT, "readOnly": True}]
            spec["volumes"] = [{"name": "secrets", **volume}]
        self.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})

    def read(self, kind: str, name: str, api_version: str = "v1") -> dict[str, Any]:
        """An object of this namespace as the API serves it (camelCase JSON); 404 raises."""
        resource = self.node.api.dynamic.resources.get(api_version=api_version, kind=kind)
        found: dict[str, Any] = resource.get(name=name, namespace=self.namespace).to_dict()
        return found

    def read_pod(self, name: str) -> dict[str, Any]:
        return self.read("Pod", name)

    def restarts(self, name: str) -> int:
        return sum(c["restartCount"] for c in self.read_pod(name)["status"]["containerStatuses"])

    def running(self, name: str, timeout: float = 60) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            pod = self.read_pod(name)
            return pod if pod["status"].get("phase") == "Running" else None

        try:
            return eventually(check, timeout=timeout, what=f"pod {name} Running")
        except AssertionError as err:
            raise AssertionError(f"{err}; its events: {self.describe(name)}") from None

    def logs(self, name: str) -> str:
        try:
            text: str = self.core.read_namespaced_pod_log(name, self.namespace)
            return text
        except k8s.ApiException:
            return ""  # not started yet

    def log_shows(self, name: str, text: str, timeout: float = 60) -> str:
        def check() -> str | None:
            logs = self.logs(name)
            return logs if text in logs else None

        return eventually(check, timeout=timeout, what=f"{text!r} in the log of pod {name}")

    def events(self, name: str) -> list[k8s.CoreV1Event]:
        listed = self.core.list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}")
        items: list[k8s.CoreV1Event] = listed.items
        return items

    def describe(self, name: str) -> str:
        """Events of a pod, for failure messages."""
        try:
            return "; ".join(f"{e.reason}: {e.message}" for e in self.events(name)[-5:])
        except k8s.ApiException as err:
            return str(err)

    def delete_pod(self, name: str) -> None:
        self.core.delete_namespaced_pod(name, self.namespace)

    def gone(self, kind: str, name: str, timeout: float = 60) -> None:
        def check() -> bool | None:
            try:
                self.read(kind, name)
            except NotFoundError:
                return True
            return None

        eventually(check, timeout=timeout, what=f"{kind} {name} deleted")

    def pod_statuses(self) -> list[dict[str, Any]]:
        resource = self.node.api.dynamic.resources.get(
            api_version="secrets-store.csi.x-k8s.io/v1", kind="SecretProviderClassPodStatus"
        )
        items: list[dict[str, Any]] = resource.get(namespace=self.namespace).to_dict()["items"]
        return items

    def volume_dir(self, pod: dict[str, Any], plugin: str = "kubernetes.io~csi") -> Path:
        """Where kubelet mounts the pod's volume "secrets" (CSI: asks the driver to, below it)."""
        uid: str = pod["metadata"]["uid"]
        return self.node.kubelet_dir / "pods" / uid / "volumes" / plugin / "secrets"

    def csi_volume(self, class_name: str, secret: str | None = None) -> dict[str, Any]:
        csi: dict[str, Any] = {
            "driver": DRIVER_NAME,
            "readOnly": True,
            "volumeAttributes": {"secretProviderClass": class_name},
        }
        if secret is not None:
            csi["nodePublishSecretRef"] = {"name": secret}
        return {"csi": csi}


def app_namespace(core: Any) -> str:
    """A new namespace with the ServiceAccount "app" (no ServiceAccount admission makes one)."""
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    core.create_namespaced_service_account(
        namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="app"))
    )
    return namespace


@pytest.fixture
def cluster(node: Node, plugins: Plugins | ChartPlugins, keyvault: KeyVaultDouble) -> Iterator[Cluster]:
    """A fresh namespace with ServiceAccount "app"; deleted, with its pods, after the test."""
    core = k8s.CoreV1Api(node.api.admin)
    namespace = app_namespace(core)
    try:
        yield Cluster(node, plugins, keyvault, namespace, core)
    finally:
        # The namespace controller deletes the pods; kubelet unmounts their volumes.
        core.delete_namespace(namespace)
