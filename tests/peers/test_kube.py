"""The real etcd + kube-apiserver peer (tests/peers/kube.py), used through the kubernetes client."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client
from kubernetes.client import ApiException

from tests.peers.kube import KubeAPIServer

HERE = Path(__file__).parent
GO_MOD = HERE.parent / "tools" / "kube-apiserver" / "go.mod"


@pytest.fixture
def api(kube_apiserver: KubeAPIServer) -> Iterator[client.ApiClient]:
    """A client built only from the kubeconfig file, as the driver would build one."""
    with kube_apiserver.api_client(kube_apiserver.kubeconfig) as api_client:
        yield api_client


@pytest.fixture
def namespace(api: client.ApiClient) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def test_server_reports_the_version_pinned_in_go_mod(api: client.ApiClient) -> None:
    match = re.search(r"^require k8s\.io/kubernetes (v\S+)$", GO_MOD.read_text(), re.M)
    assert match is not None
    info = client.VersionApi(api).get_code().to_dict()
    assert info["git_version"] == match.group(1)
    assert info["major"] == "1"


def test_kubeconfig_is_self_contained_and_uses_the_admin_token(kube_apiserver: KubeAPIServer) -> None:
    config = yaml.safe_load(kube_apiserver.kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == kube_apiserver.url
    assert cluster["server"].startswith("https://127.0.0.1:")
    assert cluster["certificate-authority-data"]
    assert config["users"][0]["user"] == {"token": kube_apiserver.admin_token}


def test_admin_is_in_system_masters(api: client.ApiClient) -> None:
    review = (
        client.AuthenticationV1Api(api).create_self_subject_review(client.V1SelfSubjectReview()).to_dict()
    )
    assert review["status"]["user_info"]["username"] == "admin"
    assert "system:masters" in review["status"]["user_info"]["groups"]


def test_wrong_token_is_unauthenticated(kube_apiserver: KubeAPIServer, tmp_path: Path) -> None:
    kubeconfig = kube_apiserver.write_kubeconfig(tmp_path / "kubeconfig", "not-a-token")
    with kube_apiserver.api_client(kubeconfig) as stranger, pytest.raises(ApiException) as raised:
        client.CoreV1Api(stranger).list_namespace()
    assert raised.value.status == 401


def test_namespace_and_pod_round_trip(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="app", labels={"app": "demo"}),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="app",
                    image="registry.example/app:1.0",
                    volume_mounts=[
                        client.V1VolumeMount(name="secrets", mount_path="/mnt/secrets", read_only=True)
                    ],
                )
            ],
            volumes=[
                client.V1Volume(
                    name="secrets",
                    csi=client.V1CSIVolumeSource(
                        driver="secrets-store.csi.k8s.io",
                        read_only=True,
                        volume_attributes={"secretProviderClass": "azure-kv"},
                    ),
                )
            ],
        ),
    )
    created = core.create_namespaced_pod(namespace, pod).to_dict()
    assert created["metadata"]["uid"]

    assert core.read_namespace(namespace).to_dict()["status"]["phase"] == "Active"
    read = core.read_namespaced_pod("app", namespace).to_dict()
    assert read["metadata"]["uid"] == created["metadata"]["uid"]
    assert read["metadata"]["namespace"] == namespace
    assert read["metadata"]["labels"] == {"app": "demo"}
    assert read["spec"]["containers"][0]["image"] == "registry.example/app:1.0"
    assert read["spec"]["containers"][0]["volume_mounts"][0]["mount_path"] == "/mnt/secrets"
    csi = read["spec"]["volumes"][0]["csi"]
    assert csi["driver"] == "secrets-store.csi.k8s.io"
    assert csi["volume_attributes"] == {"secretProviderClass": "azure-kv"}
    assert read["status"]["phase"] == "Pending"  # no scheduler or kubelet here
    listed = core.list_namespaced_pod(namespace, label_selector="app=demo").to_dict()
    assert [p["metadata"]["name"] for p in listed["items"]] == ["app"]


def test_pod_in_missing_namespace_is_rejected(api: client.ApiClient) -> None:
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="app"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="app", image="x")]),
    )
    with pytest.raises(ApiException) as raised:
        client.CoreV1Api(api).create_namespaced_pod(f"missing-{uuid.uuid4().hex[:8]}", pod)
    assert raised.value.status == 404


def test_apply_yaml_creates_crd_and_custom_resource(
    kube_apiserver: KubeAPIServer, api: client.ApiClient
) -> None:
    applied = kube_apiserver.apply_yaml(HERE / "testdata" / "widgets.yaml")
    assert [o["kind"] for o in applied] == ["CustomResourceDefinition", "Namespace", "Widget"]

    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition("widgets.test.kvmount.io").to_dict()
    assert crd["spec"]["names"]["kind"] == "Widget"
    established = [c for c in crd["status"]["conditions"] if c["type"] == "Established"]
    assert established and established[0]["status"] == "True"

    custom = client.CustomObjectsApi(api)
    widget = cast(
        dict[str, Any],
        custom.get_namespaced_custom_object("test.kvmount.io", "v1", "widgets", "widgets", "sprocket"),
    )
    assert widget["spec"] == {"size": 3, "colour": "green"}
    assert widget["metadata"]["uid"] == applied[2]["metadata"]["uid"]

    # Applying again is a no-op on the same objects.
    again = kube_apiserver.apply_yaml(HERE / "testdata" / "widgets.yaml")
    assert [o["metadata"]["uid"] for o in again] == [o["metadata"]["uid"] for o in applied]

    # The CRD's schema is enforced by the real server.
    bad = {
        "apiVersion": "test.kvmount.io/v1",
        "kind": "Widget",
        "metadata": {"name": "bad"},
        "spec": {"size": 0, "colour": "purple"},
    }
    with pytest.raises(ApiException) as raised:
        custom.create_namespaced_custom_object("test.kvmount.io", "v1", "widgets", "widgets", bad)
    assert raised.value.status == 422
    body = str(raised.value.body)
    assert "spec.size" in body and "spec.colour" in body


def test_service_account_token_is_limited_by_rbac(
    kube_apiserver: KubeAPIServer, namespace: str, tmp_path: Path
) -> None:
    token = kube_apiserver.service_account_token(namespace, "driver")
    kubeconfig = kube_apiserver.write_kubeconfig(tmp_path / "driver.kubeconfig", token, user="driver")
    with kube_apiserver.api_client(kubeconfig) as driver:
        review = client.AuthenticationV1Api(driver).create_self_subject_review(client.V1SelfSubjectReview())
        assert (
            review.to_dict()["status"]["user_info"]["username"] == f"system:serviceaccount:{namespace}:driver"
        )

        core = client.CoreV1Api(driver)
        with pytest.raises(ApiException) as raised:
            core.list_namespaced_secret(namespace)
        assert raised.value.status == 403

        for obj in (
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "read-secrets"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "driver-reads-secrets"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-secrets"},
                "subjects": [{"kind": "ServiceAccount", "name": "driver", "namespace": namespace}],
            },
        ):
            kube_apiserver.apply(obj, namespace)
        assert core.list_namespaced_secret(namespace).to_dict()["items"] == []
        with pytest.raises(ApiException) as raised:
            core.create_namespaced_secret(namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="s")))
        assert raised.value.status == 403


def test_service_account_token_audience(
    kube_apiserver: KubeAPIServer, namespace: str, api: client.ApiClient
) -> None:
    audience = "api://AzureADTokenExchange"
    token = kube_apiserver.service_account_token(namespace, "workload", audiences=[audience])
    tokens = client.AuthenticationV1Api(api)
    review = tokens.create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=[audience]))
    ).to_dict()
    assert review["status"]["authenticated"] is True
    assert review["status"]["user"]["username"] == f"system:serviceaccount:{namespace}:workload"
    assert review["status"]["audiences"] == [audience]
    # Not valid for the API server's own audience.
    other = tokens.create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
    ).to_dict()
    assert not other["status"]["authenticated"]
