"""Upstream's own charts with kvmount's images: the image swap of docs/switching-from-upstream.md,
installed with `helm install` on a node of its own, and a pod reads its secret.

The chart is Azure's provider chart v1.8.2 with its dependency, the driver chart v1.6.0,
both from their Go modules (tests/compat/upstream.py). Every image it runs is one of
kvmount's targets (scripts/build-image): the provider ``kvmount-provider``, the driver
``kvmount-driver``, and the driver's sidecars node-driver-registrar and livenessprobe
``kvmount-registrar`` and ``kvmount-livenessprobe``. So kubelet learns of the driver
through `kvmount registrar` (the driver is not asked to register itself), and the driver's
liveness probe is answered by `kvmount livenessprobe`.

Values set besides the images (IMAGES), each because of this test environment, not kvmount:
- ``kubeletRootDir`` (both charts), ``providersDir`` (both) and the driver's
  ``additionalProvidersDirs``: the node's kubelet and providers directories are
  temporary ones, so parallel runs share no host path and none is left on the machine;
- the host ports (``metricsAddr``, ``linux.healthzPort``, ``livenessProbe.port``): the
  pods are on the host network, and fixed ports would collide between parallel runs;
- ``linux.volumes``/``linux.volumeMounts`` of the provider: Key Vault is the double, whose
  CA the provider must trust and whose cloud the SecretProviderClass names;
- ``linux.env``/``linux.volumes``/``linux.volumeMounts`` of the driver: the test API server
  has no ServiceAccount admission, so the driver's token comes in a kubeconfig;
- ``linux.crds.enabled=false`` of the driver: the chart's pre-install Job runs upstream's
  driver-crds image (kubectl), which kvmount does not replace and this node cannot pull;
  helm installs the same CustomResourceDefinitions from the chart's crds/ directory.
Upstream's driver chart has no host network value, and this node has no pod network (no
CNI): a helm post-renderer (host_network) adds ``hostNetwork: true`` to the driver's
DaemonSet and changes nothing else. The node's extras (DaemonSet and root-CA controllers,
a binder for the scheduler, a shared mount for Bidirectional propagation) are
tests/node/chart.py's.
"""

from __future__ import annotations

import stat
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.node import chart
from tests.node.chart import ChartPlugins
from tests.node.cluster import Node
from tests.node.conftest import VAULT, Cluster, app_namespace
from tests.node.plugins import DRIVER_NAME
from tests.peers.keyvault_double import KeyVaultDouble
from tests.peers.kube import CACHE
from tests.support import eventually, free_port, peer_missing

IMAGES = CACHE / "images"
TARGETS = ("kvmount-driver", "kvmount-provider", "kvmount-registrar", "kvmount-livenessprobe")
RELEASE = "csi"
PROVIDER_DS = "csi-csi-secrets-store-provider-azure"


def image(target: str) -> dict[str, str]:
    # pullPolicy stays the chart's IfNotPresent: the image is imported on the node.
    return {"repository": target, "tag": "0.1.0"}


IMAGE_VALUES: dict[str, Any] = {
    "linux": {"image": image("kvmount-provider")},
    "secrets-store-csi-driver": {
        "linux": {
            "image": image("kvmount-driver"),
            "registrarImage": image("kvmount-registrar"),
            "livenessProbeImage": image("kvmount-livenessprobe"),
        }
    },
}


def environment_values(node: Node, kv: KeyVaultDouble) -> dict[str, Any]:
    """The values this node needs (see the module's docstring), merged with IMAGE_VALUES."""
    kubelet, providers = str(node.kubelet_dir), str(node.root / "providers")
    return {
        "metricsAddr": str(free_port()),
        "linux": {
            "kubeletRootDir": kubelet,
            "providersDir": providers,
            "healthzPort": free_port(),
            "volumes": [
                {"name": "kv-ca", "hostPath": {"path": str(kv.ca_path), "type": "File"}},
                {
                    "name": "cloud-env",
                    "hostPath": {"path": str(chart.cloud_env_file(node.root)), "type": "File"},
                },
            ],
            "volumeMounts": [
                {"name": "kv-ca", "mountPath": chart.CERTIFI, "readOnly": True},
                {"name": "cloud-env", "mountPath": chart.CLOUD_ENV, "readOnly": True},
            ],
        },
        "secrets-store-csi-driver": {
            "linux": {
                "kubeletRootDir": kubelet,
                "providersDir": providers,
                "additionalProvidersDirs": [str(node.root / "more-providers")],
                "metricsAddr": f":{free_port()}",
                "crds": {"enabled": False},
                "env": [{"name": "KUBECONFIG", "value": chart.DRIVER_KUBECONFIG}],
                "volumes": [
                    {"name": "kubeconfig", "hostPath": {"path": str(chart.kubeconfig(node)), "type": "File"}}
                ],
                "volumeMounts": [
                    {"name": "kubeconfig", "mountPath": chart.DRIVER_KUBECONFIG, "readOnly": True}
                ],
            },
            "livenessProbe": {"port": free_port()},
        },
    }


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        out[key] = merge(out[key], value) if isinstance(out.get(key), dict) else value
    return out


HOST_NETWORK = f"""#!{sys.executable}
# helm post-renderer: the driver's DaemonSet on the host network (this node has no CNI).
import sys, yaml
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
for d in docs:
    if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "{chart.DRIVER_DS}":
        d["spec"]["template"]["spec"]["hostNetwork"] = True
yaml.safe_dump_all(docs, sys.stdout)
"""


class UpstreamChart(ChartPlugins):
    """Upstream's provider chart (with the driver chart) installed with kvmount's images."""

    def __init__(self, node: Node, kv: KeyVaultDouble, source: Path) -> None:
        super().__init__(node, kv)
        self.source = source
        self.host_network = node.root / "host-network"

    def start(self) -> UpstreamChart:
        for target in TARGETS:
            self.node.ctr("images", "import", "--snapshotter", "overlayfs", str(IMAGES / f"{target}.tar"))
        self.values.write_text(yaml.safe_dump(merge(IMAGE_VALUES, environment_values(self.node, self.kv))))
        self.host_network.write_text(HOST_NETWORK)
        self.host_network.chmod(self.host_network.stat().st_mode | stat.S_IXUSR)
        self.helm(
            "install", RELEASE, str(self.source), "-n", chart.NAMESPACE, "-f", str(self.values),
            "--post-renderer", str(self.host_network),
        )  # fmt: skip
        token = self.node.api.service_account_token(
            chart.NAMESPACE, chart.DRIVER_DS, expiration_seconds=86400
        )
        self.node.api.write_kubeconfig(chart.kubeconfig(self.node), token, user=chart.DRIVER_DS)
        self.daemonset_ready(chart.DRIVER_DS)
        self.daemonset_ready(PROVIDER_DS)
        return self

    def driver_container_log(self, container: str) -> str:
        pod = next(p for p in self.pods() if p["metadata"]["name"].startswith(f"{chart.DRIVER_DS}-"))
        return str(
            self.core.read_namespaced_pod_log(pod["metadata"]["name"], chart.NAMESPACE, container=container)
        )

    def stop(self) -> None:
        self.helm("uninstall", RELEASE, "-n", chart.NAMESPACE, "--wait")
        eventually(
            lambda: not chart.kvmount_processes(), timeout=90, what="no kvmount process left on the node"
        )


@pytest.fixture(scope="module")
def upstream(keyvault: KeyVaultDouble, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamChart]:
    from tests.compat.test_upstream_manifests import provider_chart

    lacking = chart.missing() + [
        f"{IMAGES / t}.tar (scripts/build-image)" for t in TARGETS if not (IMAGES / f"{t}.tar").exists()
    ]
    if lacking:
        reason = "upstream's chart on a node needs " + "; ".join(lacking)
        peer_missing(reason)
    source = provider_chart(tmp_path_factory.mktemp("upstream-chart"))
    root = Path(tempfile.mkdtemp(prefix="kvu-", dir="/tmp"))
    chart.share(root)
    keyvault.write_cloud_env(chart.cloud_env_file(root))
    node = Node(root, env=keyvault.env(), controllers=chart.CONTROLLERS)
    binder = chart.Binder(node)
    installed: UpstreamChart | None = None
    try:
        node.start()
        binder.start()
        installed = UpstreamChart(node, keyvault, source).start()
        yield installed
    finally:
        try:
            if installed is not None:
                installed.stop()
        finally:
            binder.stop()
            problems = node.stop()
    assert not problems, f"the node left things behind: {problems}"


def test_a_pod_reads_its_secret_through_upstreams_chart(upstream: UpstreamChart) -> None:
    node, kv = upstream.node, upstream.kv
    containers = {
        c["name"]: c["image"]
        for p in upstream.pods()
        for c in p["spec"]["containers"]
        if p["metadata"]["name"].startswith(chart.DRIVER_DS)
    }
    assert containers == {
        "node-driver-registrar": "kvmount-registrar:0.1.0",
        "secrets-store": "kvmount-driver:0.1.0",
        "liveness-probe": "kvmount-livenessprobe:0.1.0",
    }
    # kubelet knows the driver through `kvmount registrar`: the node's CSINode lists it.
    csinodes = node.api.dynamic.resources.get(api_version="storage.k8s.io/v1", kind="CSINode")

    def registered() -> bool:
        return any(
            d["name"] == DRIVER_NAME
            for n in csinodes.get().to_dict()["items"]
            for d in n["spec"].get("drivers") or []
        )

    eventually(registered, timeout=60, what="the driver registered with kubelet")
    core = k8s.CoreV1Api(node.api.admin)
    namespace = app_namespace(core)
    try:
        cluster = Cluster(node, upstream, kv, namespace, core)
        name = cluster.name("upstream")
        kv.put_secret(VAULT, name, "from-upstreams-chart")
        objects = [{"objectName": name, "objectType": "secret", "objectAlias": "value"}]
        cluster.secret_provider_class("web", objects, cloudEnvFileName=chart.CLOUD_ENV)
        read = 'echo "value=$(cat /mnt/secrets/value)"; sleep 3600'
        cluster.pod("web", read, cluster.csi_volume("web", cluster.service_principal()))
        cluster.running("web", timeout=120)
        cluster.log_shows("web", "value=from-upstreams-chart")
        cluster.delete_pod("web")
        cluster.gone("Pod", "web", timeout=90)
    finally:
        core.delete_namespace(namespace)
    # The registrar's own log says kubelet accepted the registration it served, and the
    # port kubelet probes the driver's container on is `kvmount livenessprobe`'s, answering.
    assert "registered with kubelet" in upstream.driver_container_log("node-driver-registrar")
    values = yaml.safe_load(upstream.values.read_text())
    port = values["secrets-store-csi-driver"]["livenessProbe"]["port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
        assert answer.status == 200
    assert "serving /healthz" in upstream.driver_container_log("liveness-probe")
