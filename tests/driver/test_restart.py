"""Restart on rotation against a real API server, as the driver's own ServiceAccount with the shipped
RBAC: a workload is rolled out only when it really owns the pod and its own template mounts the class.

No controller manager runs: Deployments, ReplicaSets and pods are written as their controllers would
write them (or as an attacker would), and the test reads what the driver patched and said."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as _client

from kvmount.driver.restart import OPT_IN, ROLLED_TO, Restarter
from kvmount.driver.volumes import VolumeRegistry, VolumeState
from kvmount.kube.api_store import KubeStore
from tests.peers.kube import KubeAPIServer

k8s: Any = _client
REPO = Path(__file__).resolve().parents[2]
DRIVER = "secrets-store.csi.k8s.io"
GROUP = "secrets-store.csi.x-k8s.io"


@pytest.fixture(scope="module")
def driver_kubeconfig(kube_apiserver: KubeAPIServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    for path in sorted((REPO / "deploy" / "crds").glob("*.yaml")):
        kube_apiserver.apply_yaml(path)
    kube_apiserver.apply_yaml(REPO / "deploy" / "driver" / "rbac.yaml")
    kube_apiserver.apply_yaml(REPO / "deploy" / "driver" / "rbac-restart.yaml")
    token = kube_apiserver.service_account_token("kube-system", "secrets-store-csi-driver")
    return kube_apiserver.write_kubeconfig(tmp_path_factory.mktemp("restart") / "driver.kubeconfig", token)


@dataclass
class Namespace:
    name: str
    api: Any
    restarter: Restarter
    registry: VolumeRegistry

    def create(self, api_version: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        group, _, version = api_version.rpartition("/")
        if not group:
            made = k8s.ApiClient.sanitize_for_serialization(self.api, body)
            pod: Any = k8s.CoreV1Api(self.api).create_namespaced_pod(self.name, made)
            return {"metadata": {"name": pod.metadata.name, "uid": pod.metadata.uid}}
        created: dict[str, Any] = k8s.CustomObjectsApi(self.api).create_namespaced_custom_object(
            group, version, self.name, plural, body
        )
        return created

    def read(self, plural: str, name: str) -> dict[str, Any]:
        read: dict[str, Any] = k8s.CustomObjectsApi(self.api).get_namespaced_custom_object(
            "apps", "v1", self.name, plural, name
        )
        return read

    def events(self, pod: str) -> list[tuple[str, str]]:
        items: Any = k8s.CoreV1Api(self.api).list_namespaced_event(self.name).items
        return [(e.reason, e.message) for e in items if e.involved_object.name == pod]


@pytest.fixture
def ns(kube_apiserver: KubeAPIServer, driver_kubeconfig: Path, tmp_path: Path) -> Iterator[Namespace]:
    name = f"restart-{uuid.uuid4().hex[:8]}"
    api: Any = kube_apiserver.api_client()
    k8s.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    store = KubeStore(str(driver_kubeconfig), DRIVER, "test-node")
    registry = VolumeRegistry(str(tmp_path))
    try:
        yield Namespace(name, api, Restarter(store, registry, min_interval=0), registry)
    finally:
        api.close()


def spc(ns: Namespace, name: str, opt_in: bool) -> None:
    annotations = {OPT_IN: "true"} if opt_in else {}
    ns.create(
        f"{GROUP}/v1",
        "secretproviderclasses",
        {
            "apiVersion": f"{GROUP}/v1",
            "kind": "SecretProviderClass",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"provider": "azure", "parameters": {}},
        },
    )


def pod_spec(class_name: str | None) -> dict[str, Any]:
    volumes = (
        [{"name": "s", "csi": {"driver": DRIVER, "volumeAttributes": {"secretProviderClass": class_name}}}]
        if class_name
        else []
    )
    return {"containers": [{"name": "app", "image": "busybox"}], "volumes": volumes}


def deployment(ns: Namespace, name: str, class_name: str | None, opt_in: bool = False) -> dict[str, Any]:
    return ns.create(
        "apps/v1",
        "deployments",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "annotations": {OPT_IN: "true"} if opt_in else {}},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec(class_name)},
            },
        },
    )


def owner_ref(kind: str, doc: dict[str, Any], uid: str | None = None) -> dict[str, Any]:
    meta = doc["metadata"]
    return {"apiVersion": "apps/v1", "kind": kind, "name": meta["name"], "uid": uid or meta["uid"],
            "controller": True}  # fmt: skip


def replica_set(ns: Namespace, workload: dict[str, Any]) -> dict[str, Any]:
    """The ReplicaSet the Deployment controller would make for ``workload``."""
    name = workload["metadata"]["name"]
    labels = {"app": name, "pod-template-hash": "abc"}
    return ns.create(
        "apps/v1",
        "replicasets",
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": f"{name}-abc", "ownerReferences": [owner_ref("Deployment", workload)]},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": workload["spec"]["template"]["spec"]},
            },
        },
    )


def pod(ns: Namespace, name: str, class_name: str, owner: dict[str, Any], labels: dict[str, str]) -> str:
    """A pod that mounts ``class_name`` and names ``owner`` as its controller; the driver saw its
    volume rotate. Returns the pod's name."""
    made = ns.create(
        "v1",
        "pods",
        {
            "metadata": {"name": name, "labels": labels, "ownerReferences": [owner]},
            "spec": pod_spec(class_name),
        },
    )
    state = VolumeState(
        volume_id=f"csi-{name}", target_path=f"/var/lib/kubelet/pods/{made['metadata']['uid']}/volumes/s",
        pod_name=name, pod_namespace=ns.name, pod_uid=made["metadata"]["uid"], service_account="default",
        class_name=class_name, provider="azure", volume_context={}, object_versions=[("value", "v2")],
    )  # fmt: skip
    ns.registry.save(state)
    ns.restarter.changed(state.target_path)
    ns.restarter.settle(state.target_path)
    return name


def rolled_out(ns: Namespace, name: str, plural: str = "deployments") -> bool:
    template = ns.read(plural, name)["spec"]["template"]["metadata"]
    return ROLLED_TO in (template.get("annotations") or {})


def skipped(ns: Namespace, pod_name: str) -> str:
    [message] = [m for reason, m in ns.events(pod_name) if reason == "RestartSkipped"]
    return str(message)


def test_forged_owner_reference_to_a_foreign_deployment_restarts_nothing(ns: Namespace) -> None:
    """A bare pod, mounting its creator's own opted-in class, names Deployment payments (and then
    payments' real ReplicaSet, uid and labels right) as its controller: payments is never touched."""
    payments = deployment(ns, "payments", class_name=None)
    spc(ns, "mine", opt_in=True)
    direct = pod(ns, "direct", "mine", owner_ref("Deployment", payments), {"app": "payments"})
    assert not rolled_out(ns, "payments")
    assert "payments" in skipped(ns, direct)

    payments_rs = replica_set(ns, payments)
    labels = {"app": "payments", "pod-template-hash": "abc"}
    via_rs = pod(ns, "via-rs", "mine", owner_ref("ReplicaSet", payments_rs), labels)
    assert not rolled_out(ns, "payments")
    message = skipped(ns, via_rs)
    assert "pod template does not mount SecretProviderClass mine" in message


def test_opted_in_workload_is_restarted_only_for_pods_that_really_are_its_own(ns: Namespace) -> None:
    spc(ns, "app", opt_in=False)
    web = deployment(ns, "web", class_name="app", opt_in=True)
    web_rs = replica_set(ns, web)
    labels = {"app": "web", "pod-template-hash": "abc"}

    wrong_uid = pod(ns, "wrong-uid", "app", owner_ref("ReplicaSet", web_rs, uid=str(uuid.uuid4())), labels)
    assert "another uid" in skipped(ns, wrong_uid)
    wrong_labels = pod(ns, "wrong-labels", "app", owner_ref("ReplicaSet", web_rs), {"app": "other"})
    assert "selector of ReplicaSet web-abc does not match" in skipped(ns, wrong_labels)
    assert not rolled_out(ns, "web")

    genuine = pod(ns, "genuine", "app", owner_ref("ReplicaSet", web_rs), labels)
    assert rolled_out(ns, "web")
    assert not [m for reason, m in ns.events(genuine) if reason == "RestartSkipped"]


def test_class_opt_in_restarts_the_workload_that_mounts_it(ns: Namespace) -> None:
    spc(ns, "shared", opt_in=True)
    api = deployment(ns, "api", class_name="shared")
    api_rs = replica_set(ns, api)
    pod(ns, "api-1", "shared", owner_ref("ReplicaSet", api_rs), {"app": "api", "pod-template-hash": "abc"})
    assert rolled_out(ns, "api")


def test_a_daemonset_owns_its_pods_directly(ns: Namespace) -> None:
    spc(ns, "node-secrets", opt_in=True)
    agent = ns.create(
        "apps/v1",
        "daemonsets",
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "agent"},
            "spec": {
                "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["agent"]}]},
                "template": {"metadata": {"labels": {"app": "agent"}}, "spec": pod_spec("node-secrets")},
            },
        },
    )
    stray = pod(ns, "stray", "node-secrets", owner_ref("DaemonSet", agent), {"app": "other"})
    assert "selector of DaemonSet agent does not match" in skipped(ns, stray)
    assert not rolled_out(ns, "agent", "daemonsets")
    pod(ns, "agent-x", "node-secrets", owner_ref("DaemonSet", agent), {"app": "agent"})
    assert rolled_out(ns, "agent", "daemonsets")
