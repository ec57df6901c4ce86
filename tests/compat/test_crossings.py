"""Crossings on the real API server: kvmount's driver with upstream's provider, and upstream's
driver with kvmount's provider, each publishing a volume for a pod from a SecretProviderClass.

The files must be byte-identical to what kvmount with kvmount writes; the
SecretProviderClassPodStatus and the synced Secrets identical in content to what
upstream with upstream makes. Each pair runs on a node of its own (upstream's
controller acts on its node's pod statuses only) and in a namespace of its own.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.dynamic.exceptions import NotFoundError

from kvmount.driver import kubelet_client
from kvmount.proto import csi_pb2 as csi
from kvmount.proto import csi_pb2_grpc as csi_grpc
from kvmount.volume import mounts
from tests.certs import make_chain, server_tls
from tests.conftest import in_ci
from tests.driver.conftest import start_driver, stop_driver
from tests.peers.keyvault_double import PEM, KeyVaultDouble
from tests.peers.kube import KubeAPIServer
from tests.peers.upstream import UpstreamDriver, UpstreamProvider
from tests.provider.conftest import start_provider, stop_provider

VAULT = "kvtest"
GROUP_VERSION = "secrets-store.csi.x-k8s.io/v1"
POD_STATUS = "SecretProviderClassPodStatus"
VOLUME = "secrets-store-inline"
# driver+provider. A crossing's files must be OURS's, its API objects UPSTREAM's.
OURS, UPSTREAM = "kvmount+kvmount", "upstream+upstream"
PAIRS = (OURS, UPSTREAM, "kvmount+upstream", "upstream+kvmount")
crossing = pytest.mark.parametrize("pair", PAIRS[2:])


@pytest.fixture(scope="module", autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        reason = "the crossings mount tmpfs and must run as root"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)


@dataclass
class Published:
    """What one driver+provider pair made of the same pod and class."""

    files: dict[str, tuple[int, bytes]]
    pod_status: dict[str, Any]
    secrets: dict[str, dict[str, Any] | None]
    events: set[tuple[str, str]]
    # After NodeUnpublishVolume: (target still there, pod status still there, the namespace's Secrets)
    unpublished: tuple[bool, bool, list[str]]


def _objects(seeded: dict[str, str]) -> list[dict[str, str]]:
    return [
        {"objectName": seeded["secret"], "objectType": "secret", "objectAlias": "password"},
        # The same object twice: the pod status lists its id once.
        {"objectName": seeded["secret"], "objectType": "secret", "objectAlias": "password-copy"},
        {"objectName": seeded["key"], "objectType": "key", "objectAlias": "signing.pub"},
        {"objectName": seeded["rsa"], "objectType": "secret", "objectAlias": "rsa.pem"},
        {"objectName": seeded["rsa"], "objectType": "cert", "objectAlias": "rsa.crt"},
        {"objectName": seeded["ec"], "objectType": "secret", "objectAlias": "ec.pem"},
    ]


# First, so that upstream's controller has passed it once the others exist: it names no
# mounted file, so it makes no Secret and the others still sync.
BROKEN: dict[str, Any] = {
    "secretName": "app-broken",
    "type": "Opaque",
    "data": [{"objectName": "nope", "key": "x"}],
}
SECRET_OBJECTS: list[dict[str, Any]] = [
    BROKEN,
    {
        "secretName": "app-opaque",
        "type": "Opaque",
        "labels": {"app": "web"},
        "annotations": {"team": "payments"},
        "data": [{"objectName": "password", "key": "password"}, {"objectName": "signing.pub", "key": "pub"}],
    },
    {
        "secretName": "app-tls-rsa",
        "type": "kubernetes.io/tls",
        "data": [{"objectName": "rsa.pem", "key": "tls.key"}, {"objectName": "rsa.pem", "key": "tls.crt"}],
    },
    {
        "secretName": "app-tls-ec",
        "type": "kubernetes.io/tls",
        "data": [{"objectName": "ec.pem", "key": "tls.key"}, {"objectName": "ec.pem", "key": "tls.crt"}],
    },
]


@pytest.fixture(scope="module")
def seeded(keyvault: KeyVaultDouble) -> dict[str, str]:
    """A secret, a key, a PFX-backed RSA certificate and a PEM-backed EC certificate."""
    suffix = uuid.uuid4().hex[:8]
    names = {kind: f"x-{kind}-{suffix}" for kind in ("secret", "key", "rsa", "ec")}
    keyvault.put_secret(VAULT, names["secret"], "s3cr3t value")
    keyvault.create_key(VAULT, names["key"])
    keyvault.import_certificate(VAULT, names["rsa"], make_chain(f"{names['rsa']}.example").pfx())
    ec_tls = server_tls(f"{names['ec']}.example", [f"{names['ec']}.example"])
    keyvault.import_certificate(
        VAULT, names["ec"], ec_tls.key_pem + ec_tls.cert_pem + ec_tls.ca_pem, content_type=PEM
    )
    return names


@pytest.fixture(scope="module")
def kubelet_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("kubelet")
    yield root
    for point in sorted(mounts.mount_points(), reverse=True):
        if point.startswith(f"{root}/"):
            mounts.unmount(point)


@pytest.fixture(scope="module")
def drivers(
    secrets_store_api: KubeAPIServer,
    upstream_provider: Callable[..., UpstreamProvider],
    upstream_driver: Callable[..., UpstreamDriver],
    keyvault: KeyVaultDouble,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, csi_grpc.NodeStub]]:
    """Each pair's driver, on a node of its own, talking to the pair's provider."""
    provider = start_provider(tmp_path_factory.mktemp("kvmount-provider"), keyvault)
    provider_dirs = {"kvmount": provider.socket.parent, "upstream": upstream_provider().socket.parent}
    stubs: dict[str, csi_grpc.NodeStub] = {}
    ours = []
    try:
        for pair in PAIRS:
            driver_kind, provider_kind = pair.split("+")
            node = f"--nodeid=node-{pair.replace('+', '-')}"
            if driver_kind == "upstream":
                stubs[pair] = upstream_driver(provider_dirs[provider_kind], node).node
                continue
            base, kubeconfig = tmp_path_factory.mktemp("kvmount-driver"), secrets_store_api.kubeconfig
            ours.append(
                start_driver(
                    base,
                    provider_dirs[provider_kind],
                    f"--kubeconfig={kubeconfig}",
                    "--standalone-classes-dir=",
                    node,
                )
            )
            stubs[pair] = ours[-1].node
        yield stubs
    finally:
        for driver in ours:
            stop_driver(driver)
        stop_provider(provider)


@pytest.fixture(scope="module")
def published(
    keyvault: KeyVaultDouble,
    seeded: dict[str, str],
    secrets_store_api: KubeAPIServer,
    drivers: dict[str, csi_grpc.NodeStub],
    kubelet_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Published]:
    """Every pair publishes the same pod and class once; what each made, by pair."""
    client_id, client_secret = f"x-app-{uuid.uuid4().hex[:6]}", f"x-{uuid.uuid4().hex}"
    keyvault.register_aad_client(client_id, secret=client_secret)
    cloud_env = keyvault.write_cloud_env(tmp_path_factory.mktemp("cloud") / "azurestack.json")
    node_secret = {"clientid": client_id, "clientsecret": client_secret}
    return {
        pair: _publish(
            secrets_store_api, drivers[pair], pair, keyvault, seeded, cloud_env, kubelet_root, node_secret
        )
        for pair in PAIRS
    }


def _publish(
    api: KubeAPIServer,
    node: csi_grpc.NodeStub,
    pair: str,
    kv: KeyVaultDouble,
    seeded: dict[str, str],
    cloud_env: str,
    kubelet_root: Path,
    node_secret: dict[str, str],
) -> Published:
    namespace = f"x-{pair.replace('+', '-')}-{uuid.uuid4().hex[:6]}"
    node_name = f"node-{pair.replace('+', '-')}"
    core = k8s.CoreV1Api(api.admin)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    api.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "sp-creds", "namespace": namespace},
            "stringData": node_secret,
        }
    )
    api.apply(
        {
            "apiVersion": GROUP_VERSION,
            "kind": "SecretProviderClass",
            "metadata": {"name": "app", "namespace": namespace},
            "spec": {
                "provider": "azure",
                "parameters": {
                    "keyvaultName": VAULT,
                    "tenantID": kv.tenant,
                    "cloudName": "AzureStackCloud",
                    "cloudEnvFileName": cloud_env,
                    "objects": yaml.safe_dump({"array": [yaml.safe_dump(o) for o in _objects(seeded)]}),
                },
                "secretObjects": SECRET_OBJECTS,
            },
        }
    )
    pod = api.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {
                "nodeName": node_name,
                "containers": [{"name": "app", "image": "busybox"}],
                "volumes": [
                    {
                        "name": VOLUME,
                        "csi": {
                            "driver": kubelet_client.DRIVER,
                            "readOnly": True,
                            "volumeAttributes": {"secretProviderClass": "app"},
                            "nodePublishSecretRef": {"name": "sp-creds"},
                        },
                    }
                ],
            },
        }
    )
    uid = pod["metadata"]["uid"]
    target = Path(kubelet_client.target_path(str(kubelet_root), uid, VOLUME))
    target.parent.mkdir(parents=True)
    request = kubelet_client.publish_request(
        target=str(target), class_name="app", pod_name="web", pod_namespace=namespace, pod_uid=uid,
        secrets=node_secret,
    )  # fmt: skip
    node.NodePublishVolume(request, timeout=120)
    names = {"namespace": namespace, "uid": uid, "node": node_name, "kubelet": str(kubelet_root)}
    status = _pod_status(api, namespace)
    secrets: dict[str, dict[str, Any] | None] = {
        s["secretName"]: _normal(_synced(api, namespace, s["secretName"], status), names)
        for s in SECRET_OBJECTS
        if s is not BROKEN
    }
    secrets[BROKEN["secretName"]] = _get_or_none(api, "Secret", namespace, BROKEN["secretName"])
    published = (_files(target), _normal(status, names), secrets, _events(api, namespace))
    node.NodeUnpublishVolume(
        csi.NodeUnpublishVolumeRequest(volume_id=request.volume_id, target_path=str(target)), timeout=60
    )
    # Both drivers clean up within the call; the status and Secrets go with the pod (garbage collector).
    secret_names = sorted(
        str(getattr(x.metadata, "name", "")) for x in core.list_namespaced_secret(namespace).items
    )
    status_kept = _get_or_none(api, POD_STATUS, namespace, f"web-{namespace}-app", GROUP_VERSION) is not None
    return Published(*published, (target.exists(), status_kept, secret_names))


def _files(target: Path) -> dict[str, tuple[int, bytes]]:
    """The files a container sees: path -> (mode, bytes); the atomic writer's ``..`` entries hidden."""
    found = {}
    for directory, subdirs, names in os.walk(target, followlinks=True):
        subdirs[:] = [d for d in subdirs if not d.startswith("..")]
        for name in names:
            if not name.startswith(".."):
                path = Path(directory) / name
                found[str(path.relative_to(target))] = (path.stat().st_mode & 0o7777, path.read_bytes())
    return found


def _eventually(read: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = read()
            if found:
                return found
        except NotFoundError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.2)


def _pod_status(api: KubeAPIServer, namespace: str) -> dict[str, Any]:
    statuses = api.dynamic.resources.get(api_version=GROUP_VERSION, kind=POD_STATUS)
    name = f"web-{namespace}-app"
    found: dict[str, Any] = _eventually(
        lambda: statuses.get(name=name, namespace=namespace).to_dict(), f"pod status {namespace}/{name}"
    )
    return found


def _events(api: KubeAPIServer, namespace: str) -> set[tuple[str, str]]:
    """(type, reason) of the pod's events, once the broken entry's has come."""
    core = k8s.CoreV1Api(api.admin)

    def read() -> set[tuple[str, str]]:
        events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=web").items
        found = {(str(e.type), str(e.reason)) for e in events}
        return found if ("Warning", "FailedToCreateSecret") in found else set()

    found: set[tuple[str, str]] = _eventually(read, f"FailedToCreateSecret event on {namespace}/web")
    return found


def _get_or_none(
    api: KubeAPIServer, kind: str, namespace: str, name: str, api_version: str = "v1"
) -> dict[str, Any] | None:
    try:
        resource = api.dynamic.resources.get(api_version=api_version, kind=kind)
        found: dict[str, Any] = resource.get(name=name, namespace=namespace).to_dict()
        return found
    except NotFoundError:
        return None


def _synced(api: KubeAPIServer, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
    """The Secret once it is owned by the pod status (upstream adds the owner every 5 s)."""
    secrets = api.dynamic.resources.get(api_version="v1", kind="Secret")
    owner = status["metadata"]["uid"]

    def read() -> dict[str, Any] | None:
        secret: dict[str, Any] = secrets.get(name=name, namespace=namespace).to_dict()
        owners = secret["metadata"].get("ownerReferences") or []
        return secret if any(o["uid"] == owner for o in owners) else None

    found: dict[str, Any] = _eventually(read, f"Secret {namespace}/{name} owned by its pod status")
    return found


SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation")


def _normal(obj: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """The content of an object: server-set fields dropped, the pair's own names replaced."""
    meta = {k: v for k, v in obj["metadata"].items() if k not in SERVER_FIELDS}
    for owner in meta.get("ownerReferences") or []:
        owner.pop("uid", None)
    text = json.dumps({**obj, "metadata": meta}, sort_keys=True)
    for placeholder, value in names.items():
        text = text.replace(value, f"<{placeholder}>")
    normal: dict[str, Any] = json.loads(text)
    return normal


@crossing
def test_files_are_those_of_kvmount(published: dict[str, Published], pair: str) -> None:
    assert published[pair].files == published[OURS].files
    assert set(published[pair].files) == {
        "password",
        "password-copy",
        "signing.pub",
        "rsa.pem",
        "rsa.crt",
        "ec.pem",
    }


@crossing
def test_pod_status_is_that_of_upstream(published: dict[str, Published], pair: str) -> None:
    assert published[pair].pod_status == published[UPSTREAM].pod_status


@crossing
def test_synced_secrets_and_events_are_those_of_upstream(published: dict[str, Published], pair: str) -> None:
    assert published[pair].secrets == published[UPSTREAM].secrets
    assert published[pair].secrets[BROKEN["secretName"]] is None
    assert published[pair].events == published[UPSTREAM].events


@crossing
def test_unpublish_is_that_of_upstream(published: dict[str, Published], pair: str) -> None:
    assert published[pair].unpublished == published[UPSTREAM].unpublished
    assert published[pair].unpublished[:2] == (False, True)
