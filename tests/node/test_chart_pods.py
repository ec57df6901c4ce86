"""The chart installed with `helm install` on a node of its own: `kvmount driver` and
`kvmount provider` run as pods from the built image (scripts/build-image), a pod
reads its secret through them, `helm upgrade` rolls them while that pod keeps
its mount and its rotation, and `helm uninstall` leaves nothing behind.

The test node (tests/node/cluster.py) has no scheduler, no DaemonSet controller
and no pod network, so this module adds what a cluster would have: a
kube-controller-manager running the DaemonSet and root-CA publisher controllers,
a binder that places pending pods on the one node as kube-scheduler would, and
the driver on the host network (chart value linux.hostNetwork) with its
account's token in a kubeconfig (linux.env, linux.volumes), since the test API
server injects no token volume. kubelet's directory is made a shared
mount first: the driver's mounts must propagate back to kubelet.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.dynamic.exceptions import DynamicApiError

from tests.conftest import in_ci
from tests.node import host
from tests.node.cluster import NODE_NAME, Node, _free_port, missing
from tests.node.conftest import VAULT, Cluster, eventually
from tests.node.plugins import Plugins
from tests.node.test_rotation import WATCH
from tests.peers.keyvault_double import KeyVaultDouble
from tests.peers.kube import CACHE

ARCHIVE = CACHE / "images" / "kvmount.tar"
HELM = CACHE / "bin" / "helm"
CHART = Path(__file__).resolve().parents[2] / "charts" / "kvmount"
RELEASE, NAMESPACE = "kvmount", "kube-system"
DRIVER_DS, PROVIDER_DS = "secrets-store-csi-driver", "csi-secrets-store-provider-azure"
CLOUD_ENV = "/etc/kubernetes/azurestack.json"  # in the provider's default --cloud-env-dirs
CERTIFI = "/opt/kvmount/lib/python3.11/site-packages/certifi/cacert.pem"
ROTATION = 2
DRIVER_KUBECONFIG = "/etc/kvmount/kubeconfig"


@dataclass
class Installed:
    node: Node
    kv: KeyVaultDouble
    values: Path

    def helm(self, *args: str) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.node.api.kubeconfig),
            "HELM_CACHE_HOME": str(self.node.root),
        }
        done = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr

    def daemonset_ready(self, name: str, generation: int = 0) -> dict[str, Any]:
        """The DaemonSet once its pod on the node runs the current template (and is Ready)."""
        resource = self.node.api.dynamic.resources.get(api_version="apps/v1", kind="DaemonSet")

        def check() -> dict[str, Any] | None:
            ds: dict[str, Any] = resource.get(name=name, namespace=NAMESPACE).to_dict()
            status = ds.get("status", {})
            done = (
                ds["metadata"]["generation"] > generation
                and status.get("observedGeneration") == ds["metadata"]["generation"]
                and status.get("updatedNumberScheduled") == 1
                and status.get("numberReady") == 1
                and status.get("numberUnavailable", 0) == 0
            )
            return ds if done else None

        try:
            return eventually(check, 180, f"DaemonSet {name} rolled out and ready")
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.pod_report()}") from None

    def pods(self, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        resource = self.node.api.dynamic.resources.get(api_version="v1", kind="Pod")
        items: list[dict[str, Any]] = resource.get(namespace=namespace).to_dict()["items"]
        return items

    def pod_report(self) -> str:
        return "\n".join(
            f"{p['metadata']['name']}: {p['status'].get('phase')} "
            f"init {p['status'].get('initContainerStatuses')} {p['status'].get('containerStatuses')}"
            for p in self.pods()
        )


def kubeconfig(node: Node) -> Path:
    return node.root / "driver.kubeconfig"


def values_for(node: Node, kv: KeyVaultDouble, cloud_env: str) -> dict[str, Any]:
    """The chart's values for this node: its paths, free host ports, the local image."""
    image = {"repository": "kvmount", "tag": "0.1.0", "pullPolicy": "Never"}
    providers = str(node.root / "providers")
    return {
        "metricsAddr": str(_free_port()),
        "linux": {
            "image": image,
            "providersDir": providers,
            "healthzPort": _free_port(),
            # The double's CA as the provider's trust store, its cloud where classes name it.
            "volumes": [
                {"name": "kv-ca", "hostPath": {"path": str(kv.ca_path), "type": "File"}},
                {"name": "cloud-env", "hostPath": {"path": cloud_env, "type": "File"}},
            ],
            "volumeMounts": [
                {"name": "kv-ca", "mountPath": CERTIFI, "readOnly": True},
                {"name": "cloud-env", "mountPath": CLOUD_ENV, "readOnly": True},
            ],
        },
        "secrets-store-csi-driver": {
            "linux": {
                "image": image,
                "kubeletRootDir": str(node.kubelet_dir),
                "providersDir": providers,
                "additionalProvidersDirs": [],
                "metricsAddr": f":{_free_port()}",
                "stateDir": str(node.root / "driver-state"),
                "hostNetwork": True,
                # The test API server has no ServiceAccount admission (no token volume in
                # pods): the driver gets its account's token in a kubeconfig instead.
                "env": [{"name": "KUBECONFIG", "value": DRIVER_KUBECONFIG}],
                "volumes": [
                    {"name": "kubeconfig", "hostPath": {"path": str(kubeconfig(node)), "type": "File"}}
                ],
                "volumeMounts": [{"name": "kubeconfig", "mountPath": DRIVER_KUBECONFIG, "readOnly": True}],
            },
            "enableSecretRotation": True,
            "rotationPollInterval": f"{ROTATION}s",
            "tokenRequests": [],
        },
    }


def bind_pending_pods(node: Node, stop: threading.Event) -> None:
    """kube-scheduler's part on a one-node cluster: every pod without a node goes to this one."""
    pods = node.api.dynamic.resources.get(api_version="v1", kind="Pod")
    bindings = node.api.dynamic.resources.get(api_version="v1", kind="Binding")
    while not stop.wait(0.5):
        try:
            for pod in pods.get(field_selector="spec.nodeName=").to_dict()["items"]:
                name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
                body = {"metadata": {"name": name}, "target": {"kind": "Node", "name": NODE_NAME}}
                bindings.create(body=body, namespace=namespace)
        except DynamicApiError:
            continue  # a pod deleted or bound meanwhile: the next round sees the truth


def start_controllers(node: Node) -> subprocess.Popen[bytes]:
    with open(node.log("chart-controllers"), "ab") as log:
        return subprocess.Popen(
            [
                str(CACHE / "bin" / "kube-controller-manager"),
                "--kubeconfig", str(node.api.kubeconfig),
                "--authentication-kubeconfig", str(node.api.kubeconfig),
                "--authorization-kubeconfig", str(node.api.kubeconfig),
                "--controllers", "daemonset-controller,root-ca-certificate-publisher-controller",
                "--root-ca-file", str(node.api.ca_file),
                "--leader-elect=false",
                "--bind-address", "127.0.0.1", "--secure-port", str(_free_port()),
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


@pytest.fixture(scope="module")
def installed(keyvault: KeyVaultDouble) -> Iterator[Installed]:
    lacking = missing()
    for path, how in ((ARCHIVE, "scripts/build-image"), (HELM, "scripts/peers/helm.sh")):
        if not path.exists():
            lacking.append(f"{path} ({how})")
    if lacking:
        reason = "the chart-on-a-node test needs " + "; ".join(lacking)
        if in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="kvc-", dir="/tmp"))
    # Bidirectional propagation (the driver's tmpfs back to kubelet) needs a shared mount.
    subprocess.run(["mount", "--bind", str(root), str(root)], check=True)
    subprocess.run(["mount", "--make-rshared", str(root)], check=True)
    cloud_env = keyvault.write_cloud_env(root / "azurestack.json")
    node = Node(root, env=keyvault.env())
    stop = threading.Event()
    controllers: subprocess.Popen[bytes] | None = None
    try:
        node.start()
        node.ctr("images", "import", "--snapshotter", "overlayfs", str(ARCHIVE))
        controllers = start_controllers(node)
        threading.Thread(target=bind_pending_pods, args=(node, stop), daemon=True).start()
        values = root / "values.yaml"
        values.write_text(yaml.safe_dump(values_for(node, keyvault, cloud_env)))
        yield Installed(node, keyvault, values)
    finally:
        stop.set()
        if controllers is not None:
            host.kill_group(controllers)
        problems = node.stop()
        host.unmount_all(root)
    assert not problems, f"the node left things behind: {problems}"


def kvmount_processes() -> list[int]:
    return host.processes_mentioning("/opt/kvmount/")


def test_install_serve_upgrade_uninstall(installed: Installed) -> None:
    node, kv = installed.node, installed.kv
    installed.helm("install", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(installed.values))
    # The chart made the driver's ServiceAccount; its token goes where the driver pod mounts it.
    token = node.api.service_account_token(NAMESPACE, DRIVER_DS, expiration_seconds=86400)
    node.api.write_kubeconfig(kubeconfig(node), token, user=DRIVER_DS)
    driver = installed.daemonset_ready(DRIVER_DS)
    provider = installed.daemonset_ready(PROVIDER_DS)

    # An application pod reads its secret through the two pods, and sees it rotate.
    core = k8s.CoreV1Api(node.api.admin)
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    core.create_namespaced_service_account(
        namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="app"))
    )
    cluster = Cluster(node, Plugins(node, kv.env()), kv, namespace, core)
    run = cluster.name("chart")
    kv.put_secret(VAULT, run, "first")
    objects = [{"objectName": run, "objectType": "secret", "objectAlias": "value"}]
    cluster.secret_provider_class("web", objects, cloudEnvFileName=CLOUD_ENV)
    cluster.pod("web", WATCH, cluster.csi_volume("web", cluster.service_principal()))
    cluster.running("web", timeout=120)
    cluster.log_shows("web", "value=first")
    kv.put_secret(VAULT, run, "second")
    cluster.log_shows("web", "value=second", timeout=ROTATION + 30)

    # A changed value rolls both DaemonSets; the pod keeps its mount and its rotation.
    installed.helm(
        "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(installed.values),
        "--set", "logVerbosity=1", "--set", "secrets-store-csi-driver.logVerbosity=1",
    )  # fmt: skip
    installed.daemonset_ready(DRIVER_DS, driver["metadata"]["generation"])
    installed.daemonset_ready(PROVIDER_DS, provider["metadata"]["generation"])
    kv.put_secret(VAULT, run, "third")
    cluster.log_shows("web", "value=third", timeout=ROTATION + 30)
    assert cluster.restarts("web") == 0

    cluster.delete_pod("web")
    cluster.gone("Pod", "web", timeout=90)
    core.delete_namespace(namespace)
    assert len(kvmount_processes()) >= 2, "the driver and the provider run from the image"
    installed.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait")
    eventually(lambda: not kvmount_processes(), 90, "no kvmount process left on the node")
    eventually(lambda: not installed.pods(), 90, "no pod left in the release's namespace")
    for api_version, kind in [
        ("storage.k8s.io/v1", "CSIDriver"),
        ("apps/v1", "DaemonSet"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("v1", "ServiceAccount"),
    ]:
        resource = node.api.dynamic.resources.get(api_version=api_version, kind=kind)
        left = resource.get(label_selector="app.kubernetes.io/managed-by=Helm").to_dict()["items"]
        assert [o["metadata"]["name"] for o in left] == [], kind
