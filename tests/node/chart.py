"""kvmount's chart on a test node: `helm install` of charts/kvmount with the image built by
scripts/build-image, so that `kvmount driver` and `kvmount provider` run as pods.

The test node (tests/node/cluster.py) has no scheduler, no DaemonSet controller and
no pod network, so a chart node adds what a cluster would have: the DaemonSet and
root-CA publisher controllers in its kube-controller-manager (CONTROLLERS), a Binder
that places pending pods on the one node as kube-scheduler would, and the driver on
the host network (chart value linux.hostNetwork) with its account's token in a
kubeconfig (linux.env, linux.volumes), since the test API server injects no token
volume. The node's directory is a shared mount (share()): the driver's mounts must
propagate back to kubelet.

ChartPlugins is what tests/node/plugins.py's Plugins is for host processes; the
session's node runs it when KVMOUNT_NODE_PLUGINS=chart (tests/node/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes.dynamic.exceptions import DynamicApiError

from tests.node import cluster, host
from tests.node.cluster import NODE_NAME, Node
from tests.node.plugins import RESTART_INTERVAL, ROTATION, STALE_ON_ERROR
from tests.peers.keyvault_double import KeyVaultDouble
from tests.peers.kube import CACHE
from tests.support import eventually, free_port

ARCHIVE = CACHE / "images" / "kvmount.tar"
HELM = CACHE / "bin" / "helm"
CHART = Path(__file__).resolve().parents[2] / "charts" / "kvmount"
RELEASE, NAMESPACE = "kvmount", "kube-system"
DRIVER_DS, PROVIDER_DS = "secrets-store-csi-driver", "csi-secrets-store-provider-azure"
CLOUD_ENV = "/etc/kubernetes/azurestack.json"  # in the provider's default --cloud-env-dirs
CERTIFI = "/opt/kvmount/lib/python3.11/site-packages/certifi/cacert.pem"
DRIVER_KUBECONFIG = "/etc/kvmount/kubeconfig"
CONTROLLERS = ("daemonset-controller", "root-ca-certificate-publisher-controller")


def missing() -> list[str]:
    """What this machine lacks for a chart node, each with how to get it; empty when it can."""
    lacking = cluster.missing()
    for path, how in ((ARCHIVE, "scripts/build-image"), (HELM, "scripts/peers/helm.sh")):
        if not path.exists():
            lacking.append(f"{path} ({how})")
    return lacking


def share(root: Path) -> None:
    """Make ``root`` a shared mount; Node.stop() unmounts it with everything below."""
    subprocess.run(["mount", "--bind", str(root), str(root)], check=True)
    subprocess.run(["mount", "--make-rshared", str(root)], check=True)


class Binder:
    """kube-scheduler's part on a one-node cluster: every pod without a node goes to this one."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Binder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        pods = self._node.api.dynamic.resources.get(api_version="v1", kind="Pod")
        bindings = self._node.api.dynamic.resources.get(api_version="v1", kind="Binding")
        while not self._stop.wait(0.5):
            try:
                for pod in pods.get(field_selector="spec.nodeName=").to_dict()["items"]:
                    name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
                    body = {"metadata": {"name": name}, "target": {"kind": "Node", "name": NODE_NAME}}
                    bindings.create(body=body, namespace=namespace)
            except DynamicApiError:
                continue  # a pod deleted or bound meanwhile: the next round sees the truth


def values_for(node: Node, kv: KeyVaultDouble) -> dict[str, Any]:
    """The chart's values for this node: its paths, free host ports, the local image, and the
    settings the end-to-end tests expect (rotation every ROTATION seconds, secret sync, stale
    content through an outage)."""
    image = {"repository": "kvmount", "tag": "0.1.0", "pullPolicy": "Never"}
    providers = str(node.root / "providers")
    return {
        "metricsAddr": str(free_port()),
        "staleOnError": STALE_ON_ERROR,
        "linux": {
            "image": image,
            "providersDir": providers,
            "healthzPort": free_port(),
            # The double's CA as the provider's trust store, its cloud where classes name it.
            "volumes": [
                {"name": "kv-ca", "hostPath": {"path": str(kv.ca_path), "type": "File"}},
                {"name": "cloud-env", "hostPath": {"path": str(cloud_env_file(node.root)), "type": "File"}},
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
                "metricsAddr": f":{free_port()}",
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
            "rotationPollInterval": f"{ROTATION:g}s",
            "syncSecret": {"enabled": True},
            "rotation": {"restartWorkloads": True, "restartMinInterval": f"{RESTART_INTERVAL:g}s"},
        },
    }


def cloud_env_file(root: Path) -> Path:
    """Where the double's cloud environment file is on the host: whoever makes the node's
    directory ``root`` writes it there (KeyVaultDouble.write_cloud_env)."""
    return root / "azurestack.json"


def kubeconfig(node: Node) -> Path:
    return node.root / "driver.kubeconfig"


def kvmount_processes() -> list[int]:
    """The processes started from the image (its package lives under /opt/kvmount)."""
    return host.processes_mentioning("/opt/kvmount/")


class ChartPlugins:
    """The driver and the provider as the chart's DaemonSets on a chart node."""

    def __init__(self, node: Node, kv: KeyVaultDouble) -> None:
        self.node = node
        self.kv = kv
        self.cloud_env = CLOUD_ENV  # the provider's path, where cloudEnvFileName must point
        self.registry = node.kubelet_dir / "plugins_registry"
        self.values = node.root / "values.yaml"
        self.core = k8s.CoreV1Api(node.api.admin)

    def start(self) -> ChartPlugins:
        """Import the image, `helm install`, and wait for both DaemonSets' pods to be Ready."""
        self.node.ctr("images", "import", "--snapshotter", "overlayfs", str(ARCHIVE))
        self.values.write_text(yaml.safe_dump(values_for(self.node, self.kv)))
        self.helm("install", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(self.values))
        # The chart made the driver's ServiceAccount; its token goes where the driver pod mounts it.
        token = self.node.api.service_account_token(NAMESPACE, DRIVER_DS, expiration_seconds=86400)
        self.node.api.write_kubeconfig(kubeconfig(self.node), token, user=DRIVER_DS)
        self.daemonset_ready(DRIVER_DS)
        self.daemonset_ready(PROVIDER_DS)
        return self

    def stop(self) -> None:
        """`helm uninstall`, then wait until no pod or process of the release is left."""
        self.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait")
        eventually(lambda: not kvmount_processes(), timeout=90, what="no kvmount process left on the node")
        eventually(lambda: not self.pods(), timeout=90, what="no pod left in the release's namespace")

    def helm(self, *args: str) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.node.api.kubeconfig),
            "HELM_CACHE_HOME": str(self.node.root),
        }
        done = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr

    def log(self, name: str) -> str:
        """The log of the "driver" or "provider" pod (its current container); empty while
        kubelet, which serves it, is down."""
        prefix = {"driver": DRIVER_DS, "provider": PROVIDER_DS}[name] + "-"
        texts = []
        for pod in self.pods():
            if pod["metadata"]["name"].startswith(prefix):
                try:
                    texts.append(str(self.core.read_namespaced_pod_log(pod["metadata"]["name"], NAMESPACE)))
                except k8s.ApiException:
                    continue
        return "".join(texts)

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
            return eventually(check, timeout=180, what=f"DaemonSet {name} rolled out and ready")
        except AssertionError as err:
            raise AssertionError(f"{err}\n{self.pod_report()}") from None

    def pods(self) -> list[dict[str, Any]]:
        resource = self.node.api.dynamic.resources.get(api_version="v1", kind="Pod")
        items: list[dict[str, Any]] = resource.get(namespace=NAMESPACE).to_dict()["items"]
        return items

    def pod_report(self) -> str:
        return "\n".join(
            f"{p['metadata']['name']}: {p['status'].get('phase')} "
            f"init {p['status'].get('initContainerStatuses')} {p['status'].get('containerStatuses')}"
            for p in self.pods()
        )
