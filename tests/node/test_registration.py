"""The driver registers itself with kubelet, and again after kubelet comes back without its registry."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.dynamic.exceptions import NotFoundError

from tests.node.cluster import NODE_NAME
from tests.node.conftest import CHART_MODE, MOUNT, VAULT, Cluster
from tests.node.host import processes_mentioning
from tests.node.plugins import DRIVER_NAME
from tests.support import eventually


def registrations(cluster: Cluster) -> int:
    """How often kubelet confirmed the registration (NotifyRegistrationStatus), per the driver's log."""
    return cluster.plugins.log("driver").count("registered with kubelet")


def test_csinode_lists_the_driver_without_a_registrar(cluster: Cluster) -> None:
    # The dynamic client: the typed one cannot read a CSINode with no drivers yet.
    csi_nodes = cluster.node.api.dynamic.resources.get(api_version="storage.k8s.io/v1", kind="CSINode")

    def listed() -> list[dict[str, Any]] | None:
        try:
            drivers = csi_nodes.get(name=NODE_NAME).to_dict()["spec"].get("drivers") or []
        except NotFoundError:
            return None
        return [d for d in drivers if d["name"] == DRIVER_NAME] or None

    (driver,) = eventually(listed, timeout=30, what=f"{DRIVER_NAME} in CSINode {NODE_NAME}")
    assert driver["nodeID"] == NODE_NAME  # from the driver's NodeGetInfo, asked by kubelet
    assert registrations(cluster) >= 1
    assert not processes_mentioning("node-driver-registrar")


# A pod's hostPath mount keeps the directory kubelet's restart removed: the driver pod
# would register into that, not the new one, until it is restarted itself.
@pytest.mark.skipif(CHART_MODE, reason="the wiped registry is not the driver pod's hostPath")
def test_registers_again_when_kubelet_restarts_with_a_wiped_registry(cluster: Cluster) -> None:
    eventually(lambda: registrations(cluster) >= 1, timeout=30, what="the first registration")
    before = registrations(cluster)
    cluster.node.restart_kubelet(wipe_plugin_registry=True)
    eventually(
        lambda: registrations(cluster) > before, timeout=60, what="the driver registered with the new kubelet"
    )
    assert (cluster.plugins.registry / f"{DRIVER_NAME}-reg.sock").is_socket()

    # The new kubelet mounts through the driver.
    run = cluster.name("rereg")
    cluster.kv.put_secret(VAULT, run, "after kubelet restart")
    cluster.secret_provider_class("app", [{"objectName": run, "objectType": "secret"}])
    volume = cluster.csi_volume("app", cluster.service_principal())
    cluster.pod("web", f"cat {MOUNT}/{run}; echo; exec sleep 3600", volume)
    cluster.running("web")
    cluster.log_shows("web", "after kubelet restart")
