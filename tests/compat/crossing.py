"""The crossings' stage (tests/compat/test_crossings*.py): each driver+provider pair on a node
of its own, one pod and class per pair in a namespace of its own on the real API server, and
what a pair made, read back so that two pairs compare."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.dynamic.exceptions import NotFoundError

from kvmount.csi import kubelet, standin_kubelet
from kvmount.proto import csi_pb2 as csi
from kvmount.proto import csi_pb2_grpc as csi_grpc
from tests.driver.conftest import start_driver, stop_driver
from tests.peers.keyvault_double import KeyVaultDouble
from tests.peers.kube import KubeAPIServer
from tests.peers.upstream import UpstreamDriver, UpstreamProvider
from tests.provider.conftest import start_provider, stop_provider
from tests.support import eventually

VAULT = "kvtest"
GROUP_VERSION = "secrets-store.csi.x-k8s.io/v1"
POD_STATUS = "SecretProviderClassPodStatus"
VOLUME = "secrets-store-inline"
# driver+provider. A crossing's files must be OURS's, its API objects UPSTREAM's.
OURS, UPSTREAM = "kvmount+kvmount", "upstream+upstream"
PAIRS = (OURS, UPSTREAM, "kvmount+upstream", "upstream+kvmount")
SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation")


@contextmanager
def pair_drivers(
    api: KubeAPIServer,
    upstream_provider: Callable[..., UpstreamProvider],
    upstream_driver: Callable[..., UpstreamDriver],
    kv: KeyVaultDouble,
    tmp_path_factory: pytest.TempPathFactory,
    *flags: str,
) -> Iterator[dict[str, csi_grpc.NodeStub]]:
    """Each pair's driver (with ``flags``), on node ``node-<pair>``, talking to the pair's provider."""
    provider = start_provider(tmp_path_factory.mktemp("kvmount-provider"), kv)
    provider_dirs = {"kvmount": provider.socket.parent, "upstream": upstream_provider().socket.parent}
    stubs: dict[str, csi_grpc.NodeStub] = {}
    ours = []
    try:
        for pair in PAIRS:
            driver_kind, provider_kind = pair.split("+")
            node = f"--nodeid={node_name(pair)}"
            if driver_kind == "upstream":
                stubs[pair] = upstream_driver(provider_dirs[provider_kind], node, *flags).node
                continue
            base, kubeconfig = tmp_path_factory.mktemp("kvmount-driver"), api.kubeconfig
            more = (f"--kubeconfig={kubeconfig}", "--standalone-classes-dir=", node, *flags)
            ours.append(start_driver(base, provider_dirs[provider_kind], *more))
            stubs[pair] = ours[-1].node
        yield stubs
    finally:
        for driver in ours:
            stop_driver(driver)
        stop_provider(provider)


def node_name(pair: str) -> str:
    return f"node-{pair.replace('+', '-')}"


@dataclass(frozen=True)
class Stage:
    """Pod ``web`` of ``namespace`` with class ``app`` as one volume, ready to publish."""

    api: KubeAPIServer
    pair: str
    namespace: str
    uid: str
    target: Path
    request: csi.NodePublishVolumeRequest
    kubelet_root: Path

    @property
    def names(self) -> dict[str, str]:
        """This stage's own names, which normal() replaces so that two stages compare."""
        return {"namespace": self.namespace, "uid": self.uid, "node": node_name(self.pair),
                "kubelet": str(self.kubelet_root)}  # fmt: skip

    def unpublish_request(self) -> csi.NodeUnpublishVolumeRequest:
        return csi.NodeUnpublishVolumeRequest(volume_id=self.request.volume_id, target_path=str(self.target))


def stage(
    api: KubeAPIServer,
    pair: str,
    kv: KeyVaultDouble,
    objects: list[dict[str, str]],
    secret_objects: list[dict[str, Any]],
    node_secret: dict[str, str],
    kubelet_root: Path,
    owner: dict[str, str] | None = None,
) -> Stage:
    """A namespace holding the node-publish Secret, class ``app`` and pod ``web`` on the pair's
    node (controlled by ``owner``, e.g. a ReplicaSet, when given); the pod's NodePublishVolume as
    kubelet sends it."""
    namespace = f"x-{pair.replace('+', '-')}-{uuid.uuid4().hex[:6]}"
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    meta = {"name": "sp-creds", "namespace": namespace}
    api.apply({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "stringData": node_secret})
    parameters = {
        "keyvaultName": VAULT,
        "tenantID": kv.tenant,
        "cloudName": "AzureStackCloud",
        "cloudEnvFileName": kv.write_cloud_env(kubelet_root / f"{namespace}.json"),
        "objects": yaml.safe_dump({"array": [yaml.safe_dump(o) for o in objects]}),
    }
    api.apply(
        {
            "apiVersion": GROUP_VERSION,
            "kind": "SecretProviderClass",
            "metadata": {"name": "app", "namespace": namespace},
            "spec": {"provider": "azure", "parameters": parameters, "secretObjects": secret_objects},
        }
    )
    csi_volume = {
        "driver": kubelet.DRIVER,
        "readOnly": True,
        "volumeAttributes": {"secretProviderClass": "app"},
        "nodePublishSecretRef": {"name": "sp-creds"},
    }
    pod = api.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web",
                "namespace": namespace,
                **({"ownerReferences": [{**owner, "controller": True}]} if owner else {}),
            },
            "spec": {
                "nodeName": node_name(pair),
                "containers": [{"name": "app", "image": "busybox"}],
                "volumes": [{"name": VOLUME, "csi": csi_volume}],
            },
        }
    )
    uid = pod["metadata"]["uid"]
    target = Path(kubelet.target_path(str(kubelet_root), uid, VOLUME))
    target.parent.mkdir(parents=True)
    request = standin_kubelet.publish_request(
        target=str(target), class_name="app", pod_name="web", pod_namespace=namespace, pod_uid=uid,
        secrets=node_secret,
    )  # fmt: skip
    return Stage(api, pair, namespace, uid, target, request, kubelet_root)


def files(target: Path) -> dict[str, tuple[int, bytes]]:
    """The files a container sees: path -> (mode, bytes); the atomic writer's ``..`` entries hidden."""
    found = {}
    for directory, subdirs, names in os.walk(target, followlinks=True):
        subdirs[:] = [d for d in subdirs if not d.startswith("..")]
        for name in names:
            if not name.startswith(".."):
                path = Path(directory) / name
                found[str(path.relative_to(target))] = (path.stat().st_mode & 0o7777, path.read_bytes())
    return found


def get_or_none(
    api: KubeAPIServer, kind: str, namespace: str, name: str, api_version: str = "v1"
) -> dict[str, Any] | None:
    try:
        resource = api.dynamic.resources.get(api_version=api_version, kind=kind)
        found: dict[str, Any] = resource.get(name=name, namespace=namespace).to_dict()
        return found
    except NotFoundError:
        return None


def pod_status(api: KubeAPIServer, namespace: str) -> dict[str, Any]:
    name = f"web-{namespace}-app"
    found: dict[str, Any] = eventually(
        lambda: get_or_none(api, POD_STATUS, namespace, name, GROUP_VERSION),
        timeout=30,
        what=f"pod status {namespace}/{name}",
    )
    return found


def synced(api: KubeAPIServer, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
    """The Secret once it is owned by the pod status (upstream adds the owner every 5 s)."""
    owner = status["metadata"]["uid"]

    def read() -> dict[str, Any] | None:
        secret = get_or_none(api, "Secret", namespace, name)
        owners = (secret or {}).get("metadata", {}).get("ownerReferences") or []
        return secret if any(o["uid"] == owner for o in owners) else None

    found: dict[str, Any] = eventually(
        read, timeout=30, what=f"Secret {namespace}/{name} owned by its pod status"
    )
    return found


def normal(obj: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """The content of an object: server-set fields dropped, the stage's own names replaced."""
    meta = {k: v for k, v in obj["metadata"].items() if k not in SERVER_FIELDS}
    for owner in meta.get("ownerReferences") or []:
        owner.pop("uid", None)
    text = json.dumps({**obj, "metadata": meta}, sort_keys=True)
    for placeholder, value in names.items():
        text = text.replace(value, f"<{placeholder}>")
    found: dict[str, Any] = json.loads(text)
    return found
