"""Stale-if-error through the real kubelet: during a Key Vault outage a Deployment scaled up on the
node comes up with the content its identity was served before, with a StaleContentServed event;
a pod of another identity keeps failing with the outage's error (tests/node/plugins.py starts the
provider with --serve-stale-on-error)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.node.cluster import BUSYBOX, NODE_NAME
from tests.node.conftest import MOUNT, VAULT, Cluster
from tests.support import eventually

READ = f'echo "value=$(cat {MOUNT}/value)"; exec sleep 3600'


@pytest.fixture
def outage(cluster: Cluster) -> Iterator[None]:
    """Whatever outage the test makes on the shared double ends with it."""
    try:
        yield
    finally:
        cluster.kv.set_outage(0)


def _deployment(cluster: Cluster, name: str, class_name: str, secret: str) -> None:
    cluster.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "nodeName": NODE_NAME,
                        "hostNetwork": True,
                        "serviceAccountName": "app",
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {
                                "name": "app",
                                "image": BUSYBOX,
                                "imagePullPolicy": "Never",
                                "command": ["sh", "-c", READ],
                                "volumeMounts": [{"name": "secrets", "mountPath": MOUNT, "readOnly": True}],
                            }
                        ],
                        "volumes": [{"name": "secrets", **cluster.csi_volume(class_name, secret)}],
                    },
                },
            },
        }
    )


def _ready(cluster: Cluster, name: str, replicas: int) -> bool:
    deployment = cluster.read("Deployment", name, "apps/v1")
    status = deployment.get("status") or {}
    return bool(
        status.get("observedGeneration") == deployment["metadata"]["generation"]
        and status.get("readyReplicas") == replicas == status.get("replicas")
    )


def _pods(cluster: Cluster, name: str) -> list[str]:
    pods: Any = cluster.core.list_namespaced_pod(cluster.namespace, label_selector=f"app={name}").items
    return sorted(p.metadata.name for p in pods if p.metadata.deletion_timestamp is None)


def _event(cluster: Cluster, pod: str, reason: str, text: str) -> str | None:
    messages = [e.message or "" for e in cluster.events(pod) if e.reason == reason]
    return next((m for m in messages if text in m), None)


def test_a_scale_up_during_an_outage_comes_up_with_the_identitys_last_content(
    cluster: Cluster, outage: None
) -> None:
    secret_name = cluster.name("kept")
    cluster.kv.put_secret(VAULT, secret_name, "before the outage")
    cluster.secret_provider_class(
        "app", [{"objectName": secret_name, "objectType": "secret", "objectAlias": "value"}]
    )
    _deployment(cluster, "web", "app", cluster.service_principal())
    eventually(lambda: _ready(cluster, "web", 1), timeout=90, what="deployment web: 1 replica ready")
    (first,) = _pods(cluster, "web")
    cluster.log_shows(first, "value=before the outage")

    cluster.kv.set_outage(429)
    k8s.AppsV1Api(cluster.node.api.admin).patch_namespaced_deployment(
        "web", cluster.namespace, {"spec": {"replicas": 2}}
    )
    # A pod of another identity (its own service principal) on the same node, same class.
    cluster.pod("other", READ, cluster.csi_volume("app", cluster.service_principal()))

    eventually(lambda: _ready(cluster, "web", 2), timeout=120, what="deployment web: 2 replicas ready")
    (second,) = [p for p in _pods(cluster, "web") if p != first]
    cluster.log_shows(second, "value=before the outage")
    note = eventually(
        lambda: _event(cluster, second, "StaleContentServed", secret_name),
        timeout=30,
        what="a StaleContentServed event naming the object",
    )
    assert "429" in note and " old " in note, note

    failed = eventually(
        lambda: _event(cluster, "other", "FailedMount", "429"),
        timeout=90,
        what="a FailedMount event of the other identity naming the outage",
    )
    assert secret_name in failed, failed
    assert cluster.read_pod("other")["status"]["phase"] == "Pending"
    assert not _event(cluster, "other", "StaleContentServed", ""), "another identity never gets the content"
