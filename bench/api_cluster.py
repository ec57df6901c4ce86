"""The cluster bench/api_load.py measures: one real kube-apiserver holding what a Deployment's
pods on M nodes would have.

* each driver's CSIDriver and RBAC as its own chart renders them with rotation and sync on and
  two ``tokenRequests`` audiences (so ``requiresRepublish`` and where kubelet puts the tokens
  are what that driver is deployed with), the roles bound to the group every simulated node's
  driver is in (one client certificate per node: requests are counted per node by user name);
* one namespace, a ServiceAccount, one SecretProviderClass with a synced Secret shared by every
  pod, and per node one ReplicaSet owning N pods on that node (no controller runs: they stay
  Pending, which the drivers do not look at).
"""

from __future__ import annotations

import base64
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as _client

from tests.compat.upstream import DRIVER_MODULE, helm, module_dir
from tests.peers.kube import KubeAPIServer

k8s: Any = _client  # the client's partial annotations do not cover dict bodies
Doc = dict[str, Any]

ROOT = Path(__file__).resolve().parents[1]
CRDS = ROOT / "deploy" / "crds"
NAMESPACE = "bench"
CLASS = "app"
SYNCED_SECRET = "shared"
ACCOUNT = "app"
VOLUME = "secrets-store-inline"
DRIVER_NAME = "secrets-store.csi.k8s.io"
PROVIDER = "e2e-provider"  # tests/peers/e2e_provider.py, served as <provider dir>/e2e-provider.sock
AUDIENCES = ("api://AzureADTokenExchange", "api://AKSIdentityBinding")  # kvmount's chart's
DRIVER_USER, DRIVER_GROUP = "bench-driver:", "bench:drivers"
KUBELET_USER, KUBELET_GROUP = "bench-kubelet:", "bench:kubelets"
_SERVICE_ACCOUNT = "secrets-store-csi-driver"  # whom the charts bind their roles to


def node_name(index: int) -> str:
    return f"node-{index:02d}"


def render(chart: Path, values: Doc, kube_version: str) -> list[Doc]:
    """``helm template`` of ``chart`` with ``values`` for the API server's version."""
    out = subprocess.run(
        [str(helm()), "template", "bench", str(chart), "--namespace", "kube-system",
         "--kube-version", kube_version, "--values", "-"],
        input=json.dumps(values), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"helm template {chart}: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def kvmount_chart(kube_version: str) -> list[Doc]:
    values = {"secrets-store-csi-driver": {"enableSecretRotation": True, "syncSecret": {"enabled": True}}}
    return render(ROOT / "charts" / "kvmount", values, kube_version)


def upstream_chart(version: str, kube_version: str) -> list[Doc]:
    chart = module_dir(DRIVER_MODULE[0], version) / "charts" / "secrets-store-csi-driver"
    values = {
        "enableSecretRotation": True,
        "syncSecret": {"enabled": True},
        "tokenRequests": [{"audience": a} for a in AUDIENCES],
    }
    return render(chart, values, kube_version)


def csidriver(docs: list[Doc]) -> Doc:
    """The chart's CSIDriver, without the chart's labels."""
    found = next(d for d in docs if d.get("kind") == "CSIDriver")
    return {**found, "metadata": {"name": found["metadata"]["name"]}}


def driver_rbac(docs: list[Doc]) -> list[Doc]:
    """The roles a chart binds to its driver's ServiceAccount, bound to DRIVER_GROUP instead."""

    def ours(binding: Doc) -> bool:
        subjects = binding.get("subjects") or []
        return any(s.get("kind") == "ServiceAccount" and s.get("name") == _SERVICE_ACCOUNT for s in subjects)

    bindings = [d for d in docs if d.get("kind") in ("ClusterRoleBinding", "RoleBinding") and ours(d)]
    wanted = {(b["roleRef"]["kind"], b["roleRef"]["name"]) for b in bindings}
    roles = [d for d in docs if (d.get("kind"), d.get("metadata", {}).get("name")) in wanted]
    group = [{"kind": "Group", "name": DRIVER_GROUP, "apiGroup": "rbac.authorization.k8s.io"}]
    return roles + [{**b, "subjects": group} for b in bindings]


def kubeconfig(api: KubeAPIServer, path: Path, user: str, group: str) -> Path:
    """A kubeconfig of ``user`` in ``group``: a client certificate the API server's client CA signed."""
    cert, key = api.client_ca.issue(user, [group])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "bench",
                "cluster": {
                    "server": api.url,
                    "certificate-authority-data": base64.b64encode(api.ca_file.read_bytes()).decode(),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": base64.b64encode(cert).decode(),
                    "client-key-data": base64.b64encode(key).decode(),
                },
            }
        ],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": user}}],
        "current-context": "bench",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class PodRef:
    node: str
    name: str
    uid: str


def _class() -> Doc:
    objects = [yaml.safe_dump({"objectName": n, "objectType": "secret"}) for n in ("foo", "fookey")]
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": CLASS, "namespace": NAMESPACE},
        "spec": {
            "provider": PROVIDER,
            "parameters": {"objects": yaml.safe_dump({"array": objects})},
            "secretObjects": [
                {
                    "secretName": SYNCED_SECRET,
                    "type": "Opaque",
                    "data": [{"objectName": "foo", "key": "value"}, {"objectName": "fookey", "key": "key"}],
                }
            ],
        },
    }


def _template(node: str) -> Doc:
    return {
        "metadata": {"labels": {"app": "web", "node": node}},
        "spec": {
            "nodeName": node,
            "serviceAccountName": ACCOUNT,
            "containers": [
                {
                    "name": "app",
                    "image": "busybox",
                    "volumeMounts": [{"name": VOLUME, "mountPath": "/mnt/secrets", "readOnly": True}],
                }
            ],
            "volumes": [
                {
                    "name": VOLUME,
                    "csi": {
                        "driver": DRIVER_NAME,
                        "readOnly": True,
                        "volumeAttributes": {"secretProviderClass": CLASS},
                    },
                }
            ],
        },
    }


def _node_pods(api: KubeAPIServer, node: str, count: int) -> list[PodRef]:
    apps, core = k8s.AppsV1Api(api.admin), k8s.CoreV1Api(api.admin)
    selector = {"app": "web", "node": node}
    replica_set = apps.create_namespaced_replica_set(
        NAMESPACE,
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": f"web-{node}", "labels": selector},
            "spec": {"replicas": count, "selector": {"matchLabels": selector}, "template": _template(node)},
        },
    )
    owner = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": replica_set.metadata.name,
        "uid": replica_set.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    pods = []
    for i in range(count):
        body = _template(node)
        body["metadata"] |= {"name": f"web-{node}-{i:03d}", "ownerReferences": [owner]}
        pod = core.create_namespaced_pod(NAMESPACE, {"apiVersion": "v1", "kind": "Pod", **body})
        pods.append(PodRef(node, pod.metadata.name, pod.metadata.uid))
    return pods


def setup(api: KubeAPIServer, rbac: list[Doc], driver: Doc, nodes: int, volumes: int) -> list[PodRef]:
    """The objects every measured driver finds; the pods, node by node."""
    for path in sorted(CRDS.glob("*.yaml")):
        api.apply_yaml(path)
    for doc in [driver, *rbac]:
        api.apply(doc, "kube-system")
    rbac_v1 = "rbac.authorization.k8s.io/v1"
    role = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bench-kubelet"}
    api.apply(
        {
            "apiVersion": rbac_v1,
            "kind": "ClusterRole",
            "metadata": {"name": "bench-kubelet"},
            "rules": [{"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}],
        }
    )
    api.apply(
        {
            "apiVersion": rbac_v1,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "bench-kubelet"},
            "roleRef": role,
            "subjects": [{"kind": "Group", "name": KUBELET_GROUP, "apiGroup": "rbac.authorization.k8s.io"}],
        }
    )
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    api.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT}}, NAMESPACE)
    api.apply(_class())
    with ThreadPoolExecutor(4) as pool:
        per_node = pool.map(lambda i: _node_pods(api, node_name(i), volumes), range(nodes))
        return [pod for pods in per_node for pod in pods]


def kube_version(api: KubeAPIServer) -> str:
    return str(k8s.VersionApi(api.admin).get_code().git_version).lstrip("v")


def synced_secret(api: KubeAPIServer) -> dict[str, str] | None:
    """The shared synced Secret's data (decoded), None while it does not exist."""
    try:
        secret = k8s.CoreV1Api(api.admin).read_namespaced_secret(SYNCED_SECRET, NAMESPACE)
    except k8s.ApiException as err:
        if err.status == 404:
            return None
        raise
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


def warnings(api: KubeAPIServer) -> dict[str, int]:
    """Warning events in the namespace so far, by reason (an aggregated event counts its count)."""
    found: dict[str, int] = {}
    for event in k8s.CoreV1Api(api.admin).list_namespaced_event(NAMESPACE).items:
        if event.type == "Warning":
            found[event.reason] = found.get(event.reason, 0) + (event.count or 1)
    return found
