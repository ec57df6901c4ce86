"""The driver against the Kubernetes API: CRDs and manifests applied to a real API
server, classes read from it, pod statuses written to it; and no API server at all."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from kubernetes import client as _client
from kubernetes import config as _config
from kubernetes.client.exceptions import ApiException

from kvmount.proto import csi_pb2 as csi
from tests.driver.conftest import PROVIDER, Driver, make_pod, start_driver, stop_driver
from tests.driver.provider_double import ProviderDouble
from tests.imports import PROFILE, assert_lean, imported
from tests.support import eventually

# The client's partial annotations do not cover dict bodies; treat it as untyped.
k8s: Any = _client
kube_config: Any = _config
REPO = Path(__file__).resolve().parents[2]
GROUP = "secrets-store.csi.x-k8s.io"
UNREACHABLE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: not-a-real-token}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


@pytest.mark.peer
def test_no_api_server(tmp_path: Path, provider_dir: Path, kubelet_dir: Path) -> None:
    """The driver serves CSI without an API server; a publish that needs one fails cleanly."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(UNREACHABLE_KUBECONFIG)
    base = tmp_path / "drv"
    base.mkdir()
    driver = start_driver(base, provider_dir, f"--kubeconfig={kubeconfig}", "--standalone-classes-dir=")
    try:
        assert driver.identity.Probe(csi.ProbeRequest(), timeout=10).ready.value
        pod = make_pod(kubelet_dir)
        with pytest.raises(grpc.RpcError) as info:
            driver.node.NodePublishVolume(pod.publish_request("app"), timeout=60)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "SecretProviderClass default/app" in str(info.value.details())
        assert "unreachable" in str(info.value.details())
        assert not pod.target.exists()
        assert "not-a-real-token" not in driver.log.read_text()
    finally:
        stop_driver(driver)


# ---- against a real API server (the session fixture from tests/conftest.py) ----


@pytest.fixture(scope="module")
def kube(kube_apiserver: Any) -> Any:
    return kube_apiserver


@pytest.fixture(scope="module")
def api(kube: Any) -> Any:

    api_client = kube_config.new_client_from_config(config_file=str(kube.kubeconfig))
    yield api_client
    api_client.close()


def apply(api: Any, path: Path) -> None:
    """Create every object of a manifest file, replacing CRDs that exist (re-runs)."""

    for doc in yaml.safe_load_all(path.read_text()):
        kind = doc["kind"]
        try:
            if kind == "CustomResourceDefinition":
                k8s.ApiextensionsV1Api(api).create_custom_resource_definition(doc)
            elif kind == "CSIDriver":
                k8s.StorageV1Api(api).create_csi_driver(doc)
            else:
                raise AssertionError(f"apply() does not know {kind}")
        except ApiException as err:
            if err.status != 409:
                raise


def wait_established(api: Any, name: str) -> None:

    ext = k8s.ApiextensionsV1Api(api)

    def established() -> bool:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    eventually(established, timeout=30, what=f"CRD {name} established")


@pytest.fixture(scope="module")
def crds(api: Any) -> None:
    for path in sorted((REPO / "deploy" / "crds").glob("*.yaml")):
        apply(api, path)
    wait_established(api, f"secretproviderclasses.{GROUP}")
    wait_established(api, f"secretproviderclasspodstatuses.{GROUP}")


@pytest.fixture(scope="module")
def kube_driver(
    kube: Any, crds: None, tmp_path_factory: pytest.TempPathFactory, provider_dir: Path
) -> Iterator[Driver]:
    base = tmp_path_factory.mktemp("kube-driver")
    driver = start_driver(base, provider_dir, f"--kubeconfig={kube.kubeconfig}", "--standalone-classes-dir=")
    yield driver
    stop_driver(driver)


def namespace(api: Any) -> str:

    name = f"t-{uuid.uuid4().hex[:8]}"
    k8s.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


def create_pod(api: Any, ns: str, name: str) -> str:

    pod = k8s.CoreV1Api(api).create_namespaced_pod(
        ns,
        {
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeName": "test-node"},
        },
    )
    return str(pod.metadata.uid)


def create_class(
    api: Any,
    ns: str,
    name: str,
    parameters: dict[str, str],
    version: str = "v1",
    secret_objects: list[dict[str, Any]] | None = None,
) -> None:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{version}",
        "kind": "SecretProviderClass",
        "metadata": {"name": name},
        "spec": {"provider": PROVIDER, "parameters": parameters},
    }
    if secret_objects is not None:
        body["spec"]["secretObjects"] = secret_objects
    k8s.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, version, ns, "secretproviderclasses", body
    )


def test_manifests_are_accepted(api: Any, crds: None) -> None:

    apply(api, REPO / "deploy" / "driver" / "csidriver.yaml")
    driver = k8s.StorageV1Api(api).read_csi_driver("secrets-store.csi.k8s.io")
    assert driver.spec.pod_info_on_mount is True and driver.spec.volume_lifecycle_modes == ["Ephemeral"]
    # The RBAC objects and the DaemonSet pass the API server's validation (dry run).
    for doc in [*yaml.safe_load_all((REPO / "deploy" / "driver" / "rbac.yaml").read_text())]:
        try:
            if doc["kind"] == "ServiceAccount":
                k8s.CoreV1Api(api).create_namespaced_service_account("kube-system", doc, dry_run="All")
            elif doc["kind"] == "ClusterRole":
                k8s.RbacAuthorizationV1Api(api).create_cluster_role(doc, dry_run="All")
            else:
                k8s.RbacAuthorizationV1Api(api).create_cluster_role_binding(doc, dry_run="All")
        except ApiException as err:
            assert err.status == 409, err.body
    daemonset = yaml.safe_load((REPO / "deploy" / "driver" / "daemonset.yaml").read_text())
    k8s.AppsV1Api(api).create_namespaced_daemon_set("kube-system", daemonset, dry_run="All")
    # A class with a non-string parameter is refused by the CRD schema.
    with pytest.raises(ApiException) as info:
        k8s.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP,
            "v1",
            "default",
            "secretproviderclasses",
            {
                "apiVersion": f"{GROUP}/v1",
                "kind": "SecretProviderClass",
                "metadata": {"name": "typed"},
                "spec": {"provider": "x", "parameters": {"a": 1}},
            },
        )
    assert info.value.status == 422


@pytest.mark.parametrize("version", ["v1", "v1alpha1"])
def test_publish_with_api_server(
    api: Any, kube_driver: Driver, provider: ProviderDouble, kubelet_dir: Path, version: str
) -> None:

    ns = namespace(api)
    uid = create_pod(api, ns, "web")
    create_class(api, ns, "app", {"file.user": "admin", "keyvaultName": "kv"}, version)
    pod = make_pod(kubelet_dir, "web", ns)
    pod.uid = uid
    kube_driver.node.NodePublishVolume(pod.publish_request("app"), timeout=60)
    assert (pod.target / "user").read_text() == "admin"

    objects = k8s.CustomObjectsApi(api)
    status = objects.get_namespaced_custom_object(
        GROUP, "v1", ns, "secretproviderclasspodstatuses", f"web-{ns}-app"
    )
    assert status["metadata"]["labels"] == {"internal.secrets-store.csi.k8s.io/node-name": "test-node"}
    (owner,) = status["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Pod", "web", uid)
    assert status["status"] == {
        "podName": "web",
        "secretProviderClassName": "app",
        "mounted": True,
        "targetPath": str(pod.target),
        "objects": [{"id": "user", "version": "5"}],
    }

    # Same pod and class, another volume: the existing status is taken over, not a conflict.
    other = make_pod(kubelet_dir, "web", ns)
    other.uid = uid
    kube_driver.node.NodePublishVolume(other.publish_request("app"), timeout=60)
    status = objects.get_namespaced_custom_object(
        GROUP, "v1", ns, "secretproviderclasspodstatuses", f"web-{ns}-app"
    )
    assert status["status"]["targetPath"] == str(other.target)

    for p in (pod, other):
        kube_driver.node.NodeUnpublishVolume(p.unpublish_request(), timeout=60)
        assert not p.target.exists()


def test_class_missing_or_elsewhere_with_api_server(
    api: Any, kube_driver: Driver, provider: ProviderDouble, kubelet_dir: Path
) -> None:
    ns, elsewhere = namespace(api), namespace(api)
    create_class(api, elsewhere, "app", {"file.user": "admin"})
    pod = make_pod(kubelet_dir, "web", ns)
    for class_name in ("app", "nope"):
        with pytest.raises(grpc.RpcError) as info:
            kube_driver.node.NodePublishVolume(pod.publish_request(class_name), timeout=60)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
        assert f"SecretProviderClass {ns}/{class_name} not found" in str(info.value.details())
        assert not pod.target.exists()
    assert provider.requests == []


def test_the_driver_never_imports_the_kubernetes_package(
    kube: Any,
    api: Any,
    crds: None,
    provider: ProviderDouble,
    tmp_path: Path,
    provider_dir: Path,
    kubelet_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its API calls go through kube/rest.py: the kubernetes package (with pydantic, about 38 MiB)
    and cryptography (for TLS Secrets only, about 8 MiB) stay out of every node's driver. Python
    reports every import of the process, startup or later, on stderr (PYTHONPROFILEIMPORTTIME)."""
    ns = namespace(api)
    uid = create_pod(api, ns, "web")
    synced = [{"secretName": "db", "type": "Opaque", "data": [{"objectName": "user", "key": "username"}]}]
    create_class(api, ns, "app", {"file.user": "admin"}, secret_objects=synced)
    for name, value in PROFILE.items():
        monkeypatch.setenv(name, value)
    driver = start_driver(
        tmp_path, provider_dir, f"--kubeconfig={kube.kubeconfig}", "--standalone-classes-dir="
    )
    try:
        pod = make_pod(kubelet_dir, "web", ns)
        pod.uid = uid
        driver.node.NodePublishVolume(pod.publish_request("app"), timeout=60)
        secret = k8s.CoreV1Api(api).read_namespaced_secret("db", ns)
        assert secret.data == {"username": "YWRtaW4="}
        status = f"web-{ns}-app"
        assert [r.name for r in secret.metadata.owner_references] == [status]
        k8s.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, "v1", ns, "secretproviderclasspodstatuses", status
        )
        driver.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=60)
    finally:
        stop_driver(driver)
    # Not vacuous: the report covers the modules that did the API calls.
    # (yaml is imported here, to read --kubeconfig; a driver in a pod has none.)
    assert_lean(driver.log.read_text(), {"kvmount.kube.rest", "urllib3", "kvmount.secretsync.writer", "grpc"})
    # cryptography (for TLS Secrets only, about 8 MiB) stays out too.
    assert not {m for m in imported(driver.log.read_text()) if m.split(".")[0] == "cryptography"}


def test_stale_content_is_a_warning_event_on_the_pod(
    api: Any, kube_driver: Driver, provider: ProviderDouble, kubelet_dir: Path
) -> None:
    ns = namespace(api)
    uid = create_pod(api, ns, "web")
    create_class(api, ns, "app", {"file.user": "admin", "keyvaultName": "kv"})
    note = "served stale content, Key Vault failing: secret 'user' 12m old (Key Vault unavailable (HTTP 429))"
    provider.behaviour.stale_note = note
    pod = make_pod(kubelet_dir, "web", ns)
    pod.uid = uid
    kube_driver.node.NodePublishVolume(pod.publish_request("app"), timeout=60)
    assert (pod.target / "user").read_text() == "admin", "the pod starts with the content it was given"

    def warned() -> list[Any]:
        events = k8s.CoreV1Api(api).list_namespaced_event(ns).items
        return [e for e in events if e.reason == "StaleContentServed" and e.involved_object.name == "web"]

    eventually(lambda: bool(warned()), timeout=10, what="a StaleContentServed event")
    [event] = warned()
    assert (event.type, event.message) == ("Warning", note)
    kube_driver.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=60)
