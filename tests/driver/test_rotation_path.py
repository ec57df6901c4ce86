"""The rotation path the driver's permissions allow, against a real API server.

With upstream's chart RBAC (rendered from the driver's v1.6.0 Go module: no
``serviceaccounts/token`` create) the reconciler may not get a pod's tokens:
it says so once at start and leaves those volumes to kubelet's re-publish,
with no refused TokenRequest and no MountRotationFailed event per pod and poll.
With kvmount's own RBAC (deploy/) it fetches them itself.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as _client

from kvmount.csi.attributes import SA_TOKENS
from kvmount.csi.provider_client import ProviderClients
from kvmount.driver.publish import Publisher
from kvmount.driver.request import VolumeRequest
from kvmount.driver.rotation import Rotator
from kvmount.driver.rotation_path import RotationPath
from kvmount.driver.volumes import VolumeRegistry, VolumeState
from kvmount.kube.api_store import KubeStore
from kvmount.volume.target import KubeletRoot
from tests.compat.upstream import DRIVER_MODULE, module_dir, render
from tests.driver.conftest import PROVIDER, make_pod, start_driver, stop_driver
from tests.driver.provider_double import ProviderDouble
from tests.peers.kube import KubeAPIServer
from tests.support import eventually

k8s: Any = _client
REPO = Path(__file__).resolve().parents[2]
DRIVER = "secrets-store.csi.k8s.io"
GROUP = "secrets-store.csi.x-k8s.io"
SUFFIX = "-upstream-rbac"  # upstream's object names, kept apart from deploy/'s of the same names


@pytest.fixture(scope="module")
def upstream_rbac(kube_apiserver: KubeAPIServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig of a ServiceAccount granted exactly what upstream's driver chart grants
    its driver (sync on, as the suite installs it); objects renamed, rules untouched."""
    chart = module_dir(*DRIVER_MODULE) / "charts" / "secrets-store-csi-driver"
    docs = render(chart, {"syncSecret": {"enabled": True}, "enableSecretRotation": True})
    namespace = f"rbac-{uuid.uuid4().hex[:6]}"
    k8s.CoreV1Api(kube_apiserver.admin).create_namespace({"metadata": {"name": namespace}})
    account = "secrets-store-csi-driver"
    for doc in docs:
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            continue
        doc["metadata"]["name"] += SUFFIX
        if doc["kind"] == "ClusterRoleBinding":
            doc["roleRef"]["name"] += SUFFIX
            doc["subjects"] = [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
        kube_apiserver.apply(doc)
    token = kube_apiserver.service_account_token(namespace, account)
    return kube_apiserver.write_kubeconfig(tmp_path_factory.mktemp("upstream-rbac") / "kubeconfig", token)


@pytest.fixture
def csidriver(kube_apiserver: KubeAPIServer) -> Iterator[Any]:
    """Sets this driver's CSIDriver spec for one test; the one before is restored after."""
    storage = k8s.StorageV1Api(kube_apiserver.admin)
    try:
        admin: Any = kube_apiserver.admin
        before = admin.sanitize_for_serialization(storage.read_csi_driver(DRIVER))
    except k8s.ApiException as err:
        assert err.status == 404
        before = None

    def set_spec(requires_republish: bool) -> None:
        if before is not None or _exists(storage):
            storage.delete_csi_driver(DRIVER)
        storage.create_csi_driver(
            {
                "metadata": {"name": DRIVER},
                "spec": {
                    "podInfoOnMount": True,
                    "attachRequired": False,
                    "volumeLifecycleModes": ["Ephemeral"],
                    "requiresRepublish": requires_republish,
                    "tokenRequests": [{"audience": "api://AzureADTokenExchange"}],
                },
            }
        )

    yield set_spec
    if _exists(storage):
        storage.delete_csi_driver(DRIVER)
    if before is not None:
        for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"):
            before["metadata"].pop(key, None)
        storage.create_csi_driver(before)


def _exists(storage: Any) -> bool:
    try:
        storage.read_csi_driver(DRIVER)
    except k8s.ApiException as err:
        assert err.status == 404
        return False
    return True


def rotator(kubeconfig: Path, tmp_path: Path) -> tuple[Rotator, KubeStore]:
    api = KubeStore(str(kubeconfig), DRIVER, "test-node")
    publisher = Publisher(
        api,
        ProviderClients([str(tmp_path / "providers")], 4 << 20),
        VolumeRegistry(str(tmp_path / "state")),
        "test-node",
        tmpfs_size=1 << 20,
        kubelet_root=KubeletRoot(str(tmp_path)),
    )
    return Rotator(publisher, api, "test-node", 2.0), api


def a_served_volume(kube_apiserver: KubeAPIServer, tmp_path: Path) -> VolumeState:
    """A pod in the API with a csi volume, as the reconciler knows it after a publish."""
    namespace = f"rot-{uuid.uuid4().hex[:6]}"
    core = k8s.CoreV1Api(kube_apiserver.admin)
    core.create_namespace({"metadata": {"name": namespace}})
    volume = {
        "name": "secrets",
        "csi": {"driver": DRIVER, "volumeAttributes": {"secretProviderClass": "app"}},
    }
    pod = core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}], "volumes": [volume]},
        },
    )
    uid = pod.metadata.uid
    target = tmp_path / "pods" / uid / "volumes" / "kubernetes.io~csi" / "secrets" / "mount"
    return VolumeState(
        volume_id=f"csi-{uid}",
        target_path=str(target),
        pod_name="web",
        pod_namespace=namespace,
        pod_uid=uid,
        service_account="default",
        class_name="app",
        provider="e2e-provider",
        volume_context={"secretProviderClass": "app"},
    )


@pytest.mark.parametrize(
    ("requires_republish", "path", "level"),
    [(True, RotationPath.KUBELET, logging.INFO), (False, RotationPath.NONE, logging.WARNING)],
)
def test_upstreams_chart_rbac_is_detected_once_and_rotation_stays_quiet(
    kube_apiserver: KubeAPIServer,
    upstream_rbac: Path,
    csidriver: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    requires_republish: bool,
    path: RotationPath,
    level: int,
) -> None:
    csidriver(requires_republish)
    rotation, api = rotator(upstream_rbac, tmp_path)
    caplog.set_level(logging.INFO, logger="kvmount.driver")
    assert rotation.choose_path(api) is path
    said = [r for r in caplog.records if r.getMessage() == "rotation path"]
    assert len(said) == 1 and said[0].levelno == level
    assert "create serviceaccounts/token" in str(said[0].__dict__["refused"])
    # Upstream's chart with sync on grants list and watch of Secrets too: its labelled ones are watched.
    assert said[0].__dict__["node_publish_secrets"] == "watch"

    state = a_served_volume(kube_apiserver, tmp_path)
    for _ in range(3):  # three polls
        rotation.rotate(state)
    events = k8s.CoreV1Api(kube_apiserver.admin).list_namespaced_event(state.pod_namespace).items
    assert [(e.reason, e.message) for e in events] == []
    # kubelet's re-publish of it (its tokens in the request) is the path that rotates it.
    republished = VolumeRequest(state.volume_id, state.target_path, {SA_TOKENS: "{}"}, {})
    assert not rotation.reconciles(republished)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r is not said[0]]


def test_kvmounts_own_rbac_rotates_with_the_drivers_tokens(
    kube_apiserver: KubeAPIServer, csidriver: Any, tmp_path: Path
) -> None:
    kube_apiserver.apply_yaml(REPO / "deploy" / "driver" / "rbac.yaml")
    token = kube_apiserver.service_account_token("kube-system", "secrets-store-csi-driver")
    kubeconfig = kube_apiserver.write_kubeconfig(tmp_path / "kubeconfig", token)
    csidriver(True)
    rotation, api = rotator(kubeconfig, tmp_path)
    assert rotation.choose_path(api) is RotationPath.DRIVER
    assert rotation.grants.tokens and rotation.grants.secrets


def _backdate(state_dir: Path, target: Path, seconds: float) -> None:
    """Make the volume at ``target`` look fetched ``seconds`` ago (kubelet's re-publish clock)."""
    for file in (state_dir / "volumes").glob("*.json"):
        doc = json.loads(file.read_text())
        if doc["target_path"] == str(target):
            doc["refreshed_at"] = time.time() - seconds
            file.write_text(json.dumps(doc))
            return
    raise AssertionError(f"no state for {target}")


def test_under_upstreams_chart_kubelets_republish_rotates_only_what_the_loop_may_not(
    kube_apiserver: KubeAPIServer,
    upstream_rbac: Path,
    csidriver: Any,
    tmp_path: Path,
    provider_dir: Path,
    provider: ProviderDouble,
    kubelet_dir: Path,
) -> None:
    """The image swap: upstream's chart RBAC and requiresRepublish: true, `kvmount driver` over
    real gRPC. A volume with tokens (no token grant) is rotated by kubelet's re-publish once due;
    one without credentials is the loop's, and its re-publishes never reach the provider."""
    csidriver(True)
    for crd in sorted((REPO / "deploy" / "crds").glob("*.yaml")):
        kube_apiserver.apply_yaml(crd)
    kube_apiserver.wait_established(f"secretproviderclasses.{GROUP}")
    namespace = f"swap-{uuid.uuid4().hex[:6]}"
    k8s.CoreV1Api(kube_apiserver.admin).create_namespace({"metadata": {"name": namespace}})
    body = {"metadata": {"name": "app"}, "spec": {"provider": PROVIDER, "parameters": {"file.a": "one"}}}
    k8s.CustomObjectsApi(kube_apiserver.admin).create_namespaced_custom_object(
        GROUP,
        "v1",
        namespace,
        "secretproviderclasses",
        {"apiVersion": f"{GROUP}/v1", "kind": "SecretProviderClass", **body},
    )
    base = tmp_path / "drv"
    base.mkdir()
    driver = start_driver(
        base,
        provider_dir,
        f"--kubeconfig={upstream_rbac}",
        "--standalone-classes-dir=",
        "--enable-secret-rotation",
        "--rotation-poll-interval=1h",
    )
    try:
        eventually(lambda: "rotation path" in driver.log.read_text(), timeout=30, what="rotation path chosen")
        tokens = {
            SA_TOKENS: json.dumps({"api://AzureADTokenExchange": {"token": "t", "expirationTimestamp": ""}})
        }
        kubelets = make_pod(kubelet_dir, "with-token", namespace)
        loops = make_pod(kubelet_dir, "no-credentials", namespace)
        requests = {
            kubelets.name: kubelets.publish_request("app", attributes=tokens),
            loops.name: loops.publish_request("app"),
        }
        for request in requests.values():
            driver.node.NodePublishVolume(request, timeout=60)
        assert len(provider.requests) == 2
        for _ in range(5):  # not due: free for both
            for request in requests.values():
                driver.node.NodePublishVolume(request, timeout=60)
        assert len(provider.requests) == 2

        for pod in (kubelets, loops):
            _backdate(base / "state", pod.target, 7200)
        for request in requests.values():
            driver.node.NodePublishVolume(request, timeout=60)
        fetched = [json.loads(r.attributes)["csi.storage.k8s.io/pod.name"] for r in provider.requests[2:]]
        assert fetched == [kubelets.name]
    finally:
        stop_driver(driver)
