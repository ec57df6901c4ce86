"""The chart installed with `helm install` on a node of its own (tests/node/chart.py):
`kvmount driver` and `kvmount provider` run as pods from the built image
(scripts/build-image), a pod reads its secret through them, `helm upgrade` rolls
them while that pod keeps its mount and its rotation, and `helm uninstall` leaves
nothing behind. (The other end-to-end tests run through the chart's pods with
KVMOUNT_NODE_PLUGINS=chart; this one owns its node, so it runs in either mode.)
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.node import chart
from tests.node.chart import DRIVER_DS, NAMESPACE, PROVIDER_DS, RELEASE, ChartPlugins
from tests.node.cluster import Node
from tests.node.conftest import VAULT, Cluster
from tests.node.plugins import ROTATION
from tests.node.test_rotation import WATCH
from tests.peers.keyvault_double import KeyVaultDouble
from tests.support import peer_missing


@pytest.fixture(scope="module")
def installed(keyvault: KeyVaultDouble) -> Iterator[ChartPlugins]:
    """A chart node with the release installed; `helm uninstall` is the test's to do."""
    lacking = chart.missing()
    if lacking:
        reason = "the chart-on-a-node test needs " + "; ".join(lacking)
        peer_missing(reason)
    root = Path(tempfile.mkdtemp(prefix="kvc-", dir="/tmp"))
    keyvault.write_cloud_env(chart.cloud_env_file(root))
    chart.share(root)
    node = Node(root, env=keyvault.env(), controllers=chart.CONTROLLERS)
    binder: chart.Binder | None = None
    try:
        node.start()
        binder = chart.Binder(node).start()
        yield ChartPlugins(node, keyvault).start()
    finally:
        if binder is not None:
            binder.stop()
        problems = node.stop()
    assert not problems, f"the node left things behind: {problems}"


def test_install_serve_upgrade_uninstall(installed: ChartPlugins) -> None:
    node, kv = installed.node, installed.kv
    driver = installed.daemonset_ready(DRIVER_DS)
    provider = installed.daemonset_ready(PROVIDER_DS)

    # An application pod reads its secret through the two pods, and sees it rotate.
    core = k8s.CoreV1Api(node.api.admin)
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    core.create_namespaced_service_account(
        namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="app"))
    )
    cluster = Cluster(node, installed, kv, namespace, core)
    run = cluster.name("chart")
    kv.put_secret(VAULT, run, "first")
    objects = [{"objectName": run, "objectType": "secret", "objectAlias": "value"}]
    cluster.secret_provider_class("web", objects)
    cluster.pod("web", WATCH, cluster.csi_volume("web", cluster.service_principal()))
    cluster.running("web", timeout=120)
    cluster.log_shows("web", "value=first")
    kv.put_secret(VAULT, run, "second")
    cluster.log_shows("web", "value=second", timeout=ROTATION + 30)

    # A changed value rolls both DaemonSets; the pod keeps its mount and its rotation.
    installed.helm(
        "upgrade", RELEASE, str(chart.CHART), "-n", NAMESPACE, "-f", str(installed.values),
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
    assert len(chart.kvmount_processes()) >= 2, "the driver and the provider run from the image"
    installed.stop()  # helm uninstall; no kvmount process or pod left
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
