"""Restart on rotation through the real node: the Deployment controller rolls out the pods of an
opted-in workload once per change, rate-limited; nothing else is ever restarted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from kvmount.driver.restart import LAST_RESTART, OPT_IN, ROLLED_TO
from tests.node.cluster import BUSYBOX, NODE_NAME
from tests.node.conftest import CHART_MODE, MOUNT, VAULT, Cluster
from tests.node.plugins import RESTART_INTERVAL, ROTATION
from tests.support import eventually

REPO = Path(__file__).resolve().parents[2]
# Each pod prints the value it started with, then idles: only a new pod shows a new value.
READ_ONCE = f'echo "value=$(cat {MOUNT}/value)"; while true; do sleep 1; done'

# The chart cannot give a driver without the restart grant: its rotation.restartWorkloads
# binds it cluster-wide.
needs_no_grant = pytest.mark.skipif(CHART_MODE, reason="the chart grants restarts cluster-wide")


def _grant_restart(cluster: Cluster) -> None:
    """The shipped restart ClusterRole, bound to the driver in this test's namespace only."""
    role, _binding = yaml.safe_load_all((REPO / "deploy" / "driver" / "rbac-restart.yaml").read_text())
    cluster.node.api.apply(role)
    cluster.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "driver-restart"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role["metadata"]["name"],
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "secrets-store-csi-driver", "namespace": "kube-system"}
            ],
        }
    )


def _deployment(cluster: Cluster, name: str, class_name: str, opt_in: bool) -> None:
    annotations = {OPT_IN: "true"} if opt_in else {}
    cluster.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": name}},
                "strategy": {"rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
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
                                "command": ["sh", "-c", READ_ONCE],
                                "volumeMounts": [{"name": "secrets", "mountPath": MOUNT, "readOnly": True}],
                            }
                        ],
                        "volumes": [
                            {"name": "secrets", **cluster.csi_volume(class_name, cluster.service_principal())}
                        ],
                    },
                },
            },
        }
    )


def _replica_sets(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    resource = cluster.node.api.dynamic.resources.get(api_version="apps/v1", kind="ReplicaSet")
    items: list[dict[str, Any]] = resource.get(namespace=cluster.namespace).to_dict()["items"]
    return [rs for rs in items if any(o["name"] == name for o in rs["metadata"].get("ownerReferences") or [])]


def _pods(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    pods: Any = cluster.core.list_namespaced_pod(cluster.namespace, label_selector=f"app={name}").items
    return [cluster.read_pod(p.metadata.name) for p in pods if p.metadata.deletion_timestamp is None]


def _rolled_out(cluster: Cluster, name: str) -> bool:
    deployment = cluster.read("Deployment", name, "apps/v1")
    status = deployment.get("status") or {}
    return bool(
        status.get("observedGeneration") == deployment["metadata"]["generation"]
        and status.get("updatedReplicas") == 2
        and status.get("readyReplicas") == 2
        and status.get("replicas") == 2
    )


def _values(cluster: Cluster, name: str) -> set[str]:
    return {cluster.logs(p["metadata"]["name"]).strip() for p in _pods(cluster, name)}


def _versions_seen(cluster: Cluster, version: str) -> int:
    """How many pod statuses of the namespace list ``version``: the pods whose volume rotated to it."""
    return sum(
        any(o.get("version") == version for o in s["status"]["objects"]) for s in cluster.pod_statuses()
    )


def _start(cluster: Cluster, name: str, opt_in: bool, class_opt_in: bool = False) -> str:
    run = cluster.name("rr")
    cluster.kv.put_secret(VAULT, run, "first")
    cluster.secret_provider_class(name, [{"objectName": run, "objectType": "secret", "objectAlias": "value"}])
    if class_opt_in:
        k8s.CustomObjectsApi(cluster.node.api.admin).patch_namespaced_custom_object(
            "secrets-store.csi.x-k8s.io", "v1", cluster.namespace, "secretproviderclasses", name,
            {"metadata": {"annotations": {OPT_IN: "true"}}},
        )  # fmt: skip
    _deployment(cluster, name, name, opt_in)
    eventually(lambda: _rolled_out(cluster, name), timeout=90, what=f"deployment {name} ready")
    eventually(
        lambda: _values(cluster, name) == {"value=first"}, timeout=60, what="both pods read the first value"
    )
    return run


def test_opted_in_deployment_rolls_out_once_per_change_and_is_rate_limited(cluster: Cluster) -> None:
    _grant_restart(cluster)
    run = _start(cluster, "web", opt_in=True)
    generation = cluster.read("Deployment", "web", "apps/v1")["metadata"]["generation"]

    second = cluster.kv.put_secret(VAULT, run, "second")["id"].rsplit("/", 1)[-1]
    eventually(
        lambda: _values(cluster, "web") == {"value=second"}, timeout=90, what="new pods read the second value"
    )
    eventually(lambda: _rolled_out(cluster, "web"), timeout=60, what="the rollout completes")
    deployment = cluster.read("Deployment", "web", "apps/v1")
    # Two pods rotated, one rollout: one new ReplicaSet, one new generation.
    assert len(_replica_sets(cluster, "web")) == 2
    assert deployment["metadata"]["generation"] == generation + 1
    assert deployment["spec"]["template"]["metadata"]["annotations"][ROLLED_TO]
    assert LAST_RESTART in deployment["metadata"]["annotations"]
    [event] = [e for e in cluster.events("web") if e.reason == "RotationRollout"]
    message = str(event.message)
    assert run in message and second in message
    assert "second" not in message  # names and versions, never a value

    # A change right after: the new pods rotate to it, but the rollout waits for the interval.
    third = cluster.kv.put_secret(VAULT, run, "third")["id"].rsplit("/", 1)[-1]
    eventually(
        lambda: _versions_seen(cluster, third) == 2, timeout=ROTATION * 3 + 30, what="both new pods rotated"
    )
    assert len(_replica_sets(cluster, "web")) == 2, "rolled out again within the rate limit"
    # The driver logs the deferral after it wrote the statuses: wait for it as for any state.
    eventually(
        lambda: "workload restart deferred (rate limit)" in cluster.plugins.log("driver"),
        timeout=ROTATION * 2 + 30,
        what="the rollout deferred by the rate limit",
    )
    # ... and happens once it has passed.
    eventually(
        lambda: _values(cluster, "web") == {"value=third"},
        timeout=RESTART_INTERVAL + 90,
        what="deferred rollout",
    )
    eventually(lambda: _rolled_out(cluster, "web"), timeout=60, what="the second rollout completes")
    assert len(_replica_sets(cluster, "web")) == 3


def test_without_the_annotation_nothing_restarts(cluster: Cluster) -> None:
    _grant_restart(cluster)
    run = _start(cluster, "plain", opt_in=False)
    version = cluster.kv.put_secret(VAULT, run, "second")["id"].rsplit("/", 1)[-1]
    eventually(
        lambda: _versions_seen(cluster, version) == 2, timeout=ROTATION * 3 + 30, what="both pods rotated"
    )
    # The restart check runs right after each rotation: one more round and it would have acted.
    rounds = cluster.plugins.log("driver").count("published")
    eventually(
        lambda: cluster.plugins.log("driver").count("published") > rounds + 2,
        timeout=30,
        what="more rotation rounds",
    )
    assert len(_replica_sets(cluster, "plain")) == 1
    assert _values(cluster, "plain") == {"value=first"}
    assert not [e for e in cluster.events("plain") if e.reason == "RotationRollout"]


@needs_no_grant
def test_without_rbac_the_patch_is_refused_and_said(cluster: Cluster) -> None:
    """Opted in through the SecretProviderClass, but the driver was not granted the patch."""
    run = _start(cluster, "locked", opt_in=False, class_opt_in=True)
    cluster.kv.put_secret(VAULT, run, "second")

    def refused() -> bool:
        pods = [p["metadata"]["name"] for p in _pods(cluster, "locked")]
        return any(e.reason == "RestartForbidden" for name in pods for e in cluster.events(name))

    eventually(refused, timeout=ROTATION * 3 + 30, what="a RestartForbidden event on a pod")
    assert len(_replica_sets(cluster, "locked")) == 1
    assert _values(cluster, "locked") == {"value=first"}
