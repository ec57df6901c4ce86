"""Crossings on the real API server: kvmount's driver with upstream's provider, and upstream's
driver with kvmount's provider, each publishing a volume for a pod from a SecretProviderClass.

The files must be byte-identical to what kvmount with kvmount writes; the
SecretProviderClassPodStatus, the synced Secrets and the pod's events identical in content
to what upstream with upstream makes — at the first publish, after a rotation, and after
unpublish; a refusal reaches kubelet with the provider's own code, as through upstream's driver.
The stage is tests/compat/crossing.py.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from kubernetes import client as k8s

from kvmount.proto import csi_pb2_grpc as csi_grpc
from kvmount.volume import mounts
from tests.certs import make_chain, server_tls
from tests.compat.crossing import (
    GROUP_VERSION,
    OURS,
    PAIRS,
    POD_STATUS,
    UPSTREAM,
    VAULT,
    Stage,
    files,
    get_or_none,
    normal,
    pair_drivers,
    pod_status,
    stage,
    synced,
)
from tests.peers.keyvault_double import PEM, KeyVaultDouble
from tests.peers.kube import KubeAPIServer
from tests.peers.upstream import UpstreamDriver, UpstreamProvider
from tests.support import eventually, peer_missing

crossing = pytest.mark.parametrize("pair", PAIRS[2:])


@pytest.fixture(scope="module", autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        reason = "the crossings mount tmpfs and must run as root"
        peer_missing(reason)


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
def node_secret(keyvault: KeyVaultDouble) -> dict[str, str]:
    """A service principal the AAD double knows, as the pods' node-publish Secret."""
    client_id, client_secret = f"x-app-{uuid.uuid4().hex[:6]}", f"x-{uuid.uuid4().hex}"
    keyvault.register_aad_client(client_id, secret=client_secret)
    return {"clientid": client_id, "clientsecret": client_secret}


@pytest.fixture(scope="module")
def drivers(
    secrets_store_api: KubeAPIServer,
    upstream_provider: Callable[..., UpstreamProvider],
    upstream_driver: Callable[..., UpstreamDriver],
    keyvault: KeyVaultDouble,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, csi_grpc.NodeStub]]:
    with pair_drivers(
        secrets_store_api, upstream_provider, upstream_driver, keyvault, tmp_path_factory
    ) as stubs:
        yield stubs


@pytest.fixture(scope="module")
def published(
    keyvault: KeyVaultDouble,
    seeded: dict[str, str],
    secrets_store_api: KubeAPIServer,
    drivers: dict[str, csi_grpc.NodeStub],
    node_secret: dict[str, str],
    kubelet_root: Path,
) -> dict[str, Published]:
    """Every pair publishes the same pod and class once; what each made, by pair."""
    made = {}
    for pair in PAIRS:
        scene = stage(
            secrets_store_api, pair, keyvault, _objects(seeded), SECRET_OBJECTS, node_secret, kubelet_root
        )
        drivers[pair].NodePublishVolume(scene.request, timeout=120)
        made[pair] = _published(scene, drivers[pair])
    return made


def _published(scene: Stage, node: csi_grpc.NodeStub) -> Published:
    api, namespace = scene.api, scene.namespace
    status = pod_status(api, namespace)
    secrets: dict[str, dict[str, Any] | None] = {
        s["secretName"]: normal(synced(api, namespace, s["secretName"], status), scene.names)
        for s in SECRET_OBJECTS
        if s is not BROKEN
    }
    secrets[BROKEN["secretName"]] = get_or_none(api, "Secret", namespace, BROKEN["secretName"])
    made = (files(scene.target), normal(status, scene.names), secrets, _events(api, namespace))
    node.NodeUnpublishVolume(scene.unpublish_request(), timeout=60)
    # Both drivers clean up within the call; the status and Secrets go with the pod (garbage collector).
    names = sorted(
        str(getattr(x.metadata, "name", ""))
        for x in k8s.CoreV1Api(api.admin).list_namespaced_secret(namespace).items
    )
    kept = get_or_none(api, POD_STATUS, namespace, f"web-{namespace}-app", GROUP_VERSION) is not None
    return Published(*made, (scene.target.exists(), kept, names))


def _events(api: KubeAPIServer, namespace: str) -> set[tuple[str, str]]:
    """(type, reason) of the pod's events, once the broken entry's has come."""
    core = k8s.CoreV1Api(api.admin)

    def read() -> set[tuple[str, str]]:
        events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=web").items
        found = {(str(e.type), str(e.reason)) for e in events}
        return found if ("Warning", "FailedToCreateSecret") in found else set()

    found: set[tuple[str, str]] = eventually(
        read, timeout=30, what=f"FailedToCreateSecret event on {namespace}/web"
    )
    return found


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


@pytest.mark.parametrize("driver", [OURS, UPSTREAM])
def test_a_controlled_pods_secrets_are_owned_by_its_controller_as_upstream_owns_them(
    keyvault: KeyVaultDouble,
    seeded: dict[str, str],
    secrets_store_api: KubeAPIServer,
    drivers: dict[str, csi_grpc.NodeStub],
    node_secret: dict[str, str],
    kubelet_root: Path,
    driver: str,
) -> None:
    """A Deployment's pod: its ReplicaSet owns the synced Secret (so the Secret outlives a scale
    to zero), not its SecretProviderClassPodStatus; kvmount's driver as upstream's."""
    replica_set = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "web-5d4f",
        "uid": str(uuid.uuid4()),
    }
    scene = stage(
        secrets_store_api,
        driver,
        keyvault,
        _objects(seeded),
        SECRET_OBJECTS,
        node_secret,
        kubelet_root,
        owner=replica_set,
    )
    drivers[driver].NodePublishVolume(scene.request, timeout=120)
    try:

        def owners() -> list[dict[str, Any]] | None:
            secret = get_or_none(secrets_store_api, "Secret", scene.namespace, "app-opaque") or {}
            refs: list[dict[str, Any]] = secret.get("metadata", {}).get("ownerReferences") or []
            return refs or None

        # Upstream's driver adds the owners within 5 s of making the Secret.
        found = eventually(owners, what=f"owners of Secret {scene.namespace}/app-opaque", timeout=30)
        assert found == [replica_set]
    finally:
        drivers[driver].NodeUnpublishVolume(scene.unpublish_request(), timeout=60)


@pytest.mark.parametrize("driver", [OURS, UPSTREAM])
def test_a_missing_class_is_worded_as_upstream_words_it(
    keyvault: KeyVaultDouble,
    seeded: dict[str, str],
    secrets_store_api: KubeAPIServer,
    drivers: dict[str, csi_grpc.NodeStub],
    node_secret: dict[str, str],
    kubelet_root: Path,
    driver: str,
) -> None:
    """kubelet's FailedMount carries this message, and alerts match its start (upstream's e2e
    suite greps `failed to get secretproviderclass NS/NAME.*not found`)."""
    scene = stage(
        secrets_store_api, driver, keyvault, _objects(seeded), SECRET_OBJECTS, node_secret, kubelet_root
    )
    scene.request.volume_context["secretProviderClass"] = "missing"
    with pytest.raises(grpc.RpcError) as info:
        drivers[driver].NodePublishVolume(scene.request, timeout=60)
    details = str(info.value.details())
    assert details.startswith(f"failed to get secretproviderclass {scene.namespace}/missing, error: ")
    assert "not found" in details


@pytest.fixture(scope="module")
def rotated(
    keyvault: KeyVaultDouble,
    secrets_store_api: KubeAPIServer,
    upstream_provider: Callable[..., UpstreamProvider],
    upstream_driver: Callable[..., UpstreamDriver],
    node_secret: dict[str, str],
    kubelet_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Any, ...]]:
    """With rotation on, every pair publishes; Key Vault gets a new version; kubelet republishes
    (requiresRepublish) until the files change. (files, pod status, Secret) by pair, after."""
    api, name = secrets_store_api, f"x-rot-{uuid.uuid4().hex[:8]}"
    keyvault.put_secret(VAULT, name, "before")
    objects = [{"objectName": name, "objectType": "secret", "objectAlias": "password"}]
    sync = [
        {"secretName": "rotated", "type": "Opaque", "data": [{"objectName": "password", "key": "password"}]}
    ]
    flags = ("--enable-secret-rotation", "--rotation-poll-interval=1s")
    made = {}
    with pair_drivers(api, upstream_provider, upstream_driver, keyvault, tmp_path_factory, *flags) as nodes:
        scenes = {
            pair: stage(api, pair, keyvault, objects, sync, node_secret, kubelet_root) for pair in PAIRS
        }
        for pair, scene in scenes.items():
            nodes[pair].NodePublishVolume(scene.request, timeout=120)
            synced(api, scene.namespace, "rotated", pod_status(api, scene.namespace))
        version = keyvault.put_secret(VAULT, name, "after")["id"].rsplit("/", 1)[1]
        for pair, scene in scenes.items():
            made[pair] = _rotation(scene, nodes[pair], version)
            nodes[pair].NodeUnpublishVolume(scene.unpublish_request(), timeout=60)
    return made


def _rotation(scene: Stage, node: csi_grpc.NodeStub, version: str) -> tuple[Any, ...]:
    api, namespace = scene.api, scene.namespace

    def republished() -> bool:
        node.NodePublishVolume(scene.request, timeout=60)  # a driver acts once the interval has passed
        return files(scene.target)["password"][1] == b"after"

    def status() -> dict[str, Any] | None:
        found = pod_status(api, namespace)
        return found if [o["version"] for o in found["status"]["objects"]] == [version] else None

    def secret() -> dict[str, Any] | None:
        found = synced(api, namespace, "rotated", status_now)
        return found if found["data"]["password"] == base64.b64encode(b"after").decode() else None

    eventually(republished, timeout=30, what=f"{scene.pair}: the new version mounted")
    status_now = eventually(status, timeout=30, what=f"{scene.pair}: the pod status names the new version")
    synced_now = eventually(secret, timeout=30, what=f"{scene.pair}: the Secret holds the new value")
    return files(scene.target), normal(status_now, scene.names), normal(synced_now, scene.names)


@crossing
def test_rotation_is_that_of_kvmount_for_files_and_of_upstream_for_the_api(
    rotated: dict[str, tuple[Any, ...]], pair: str
) -> None:
    assert rotated[pair][0] == rotated[OURS][0]
    assert rotated[pair][1:] == rotated[UPSTREAM][1:]


@pytest.fixture(scope="module")
def refused(
    keyvault: KeyVaultDouble,
    secrets_store_api: KubeAPIServer,
    drivers: dict[str, csi_grpc.NodeStub],
    node_secret: dict[str, str],
    kubelet_root: Path,
) -> dict[str, tuple[grpc.StatusCode, bool]]:
    """Every pair publishes a class naming an object the vault lacks: (code, a pod status was made)."""
    missing = [{"objectName": f"x-missing-{uuid.uuid4().hex[:8]}", "objectType": "secret"}]
    made = {}
    for pair in PAIRS:
        scene = stage(secrets_store_api, pair, keyvault, missing, [], node_secret, kubelet_root)
        with pytest.raises(grpc.RpcError) as info:
            drivers[pair].NodePublishVolume(scene.request, timeout=120)
        name = f"web-{scene.namespace}-app"
        status = get_or_none(secrets_store_api, POD_STATUS, scene.namespace, name, GROUP_VERSION)
        made[pair] = (info.value.code(), status is not None)
    return made


@crossing
def test_a_refusal_reaches_kubelet_with_the_providers_code(
    refused: dict[str, tuple[grpc.StatusCode, bool]], pair: str
) -> None:
    provider = pair.split("+")[1]
    assert refused[pair] == refused[f"{provider}+{provider}"]
    assert refused[pair][1] is False
