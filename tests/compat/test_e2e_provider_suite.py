"""Upstream's own end-to-end suite of the generic driver, replayed against `kvmount driver`.

Every ``@test`` of secrets-store-csi-driver v1.6.0's ``test/bats/e2e-provider.bats``
is one test here, named after it and run in the suite's order (later cases use
what earlier ones made, as in bats). The provider is the project's own
``tests/peers/e2e_provider.py``, as strict as upstream's mock: it refuses any
``:authority`` but ``localhost``, checks the CSIDriver's token audiences once
the first case configures them, serves ``foo``/``fookey`` and rotates through
its control endpoint. Pods run on the real node of tests/node (kubelet,
containerd, kube-controller-manager; ``kvmount driver`` as in tests/node/plugins.py).

What the node needs of the suite's manifests, and nothing else changes: pods
get ``nodeName`` (no scheduler), ``hostNetwork`` (no CNI), the ServiceAccount
``default`` by name (no ServiceAccount admission) and the local busybox image;
each of the suite's namespaces, ``default`` included, is a fresh one of this run.
A bats ``sleep`` becomes a wait for the state it waits for; ``kubectl exec`` and
the curl pods become the API's exec and plain HTTP to the endpoints they reach.
"""

from __future__ import annotations

import base64
import re
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from kubernetes import client as _client
from kubernetes.dynamic.exceptions import NotFoundError
from kubernetes.stream import stream

from tests.node.cluster import BUSYBOX, NODE_NAME, Node
from tests.node.conftest import CHART_MODE, node, plugins  # noqa: F401 (the node's fixtures)
from tests.node.plugins import DRIVER_NAME, Plugins
from tests.peers.e2e_provider import NAME as PROVIDER
from tests.peers.e2e_provider import E2EProvider
from tests.support import eventually

pytestmark = pytest.mark.skipif(CHART_MODE, reason="the e2e provider serves next to the host driver")

k8s: Any = _client
SECRET_NAME, SECRET_VALUE = "foo", "secret"
KEY_NAME = "fookey"
# The suite's KEY_VALUE_CONTAINS: base64 of the mock key as `echo | base64` prints it.
KEY_VALUE_CONTAINS = (
    "LS0tLS1CRUdJTiBQVUJMSUMgS0VZLS0tLS0KVGhpcyBpcyBtb2NrIGtleQotLS0tLUVORCBQVUJMSUMgS0VZLS0tLS0K"
)
LABEL_VALUE = "test"
MOUNT = "/mnt/secrets-store"
WAIT = 60.0
# The suite's namespaces, and one for the lifetime check after it.
SUITE_NAMESPACES = ("default", "test-v1alpha1", "test-ns", "negative-test-ns", "rotation", "scale")


@dataclass
class Suite:
    node: Node
    plugins: Plugins
    provider: E2EProvider
    namespaces: dict[str, str]  # the suite's namespace -> this run's
    core: Any

    def ns(self, name: str = "default") -> str:
        return self.namespaces[name]

    def apply(self, obj: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
        return self.node.api.apply(obj, self.ns(namespace))

    def read(
        self, kind: str, name: str, namespace: str = "default", api_version: str = "v1"
    ) -> dict[str, Any]:
        resource = self.node.api.dynamic.resources.get(api_version=api_version, kind=kind)
        found: dict[str, Any] = resource.get(name=name, namespace=self.ns(namespace)).to_dict()
        return found

    def delete(self, kind: str, name: str, namespace: str = "default", api_version: str = "v1") -> None:
        resource = self.node.api.dynamic.resources.get(api_version=api_version, kind=kind)
        resource.delete(name=name, namespace=self.ns(namespace))

    def exec(self, pod: str, command: list[str], namespace: str = "default") -> str:
        """`kubectl exec POD -- COMMAND`: its stdout."""
        out: str = stream(
            self.core.connect_get_namespaced_pod_exec,
            pod,
            self.ns(namespace),
            command=command,
            stdout=True,
            stderr=False,
            stdin=False,
            tty=False,
        )
        return out

    def env(self, pod: str, var: str, namespace: str = "default") -> str:
        """`kubectl exec POD -- printenv | grep VAR`'s value (this busybox has `env`, not `printenv`)."""
        lines = self.exec(pod, ["env"], namespace).splitlines()
        return next((line.split("=", 1)[1] for line in lines if line.startswith(f"{var}=")), "")

    def ready(self, pod: str, namespace: str = "default", timeout: float = WAIT) -> None:
        """`kubectl wait --for=condition=Ready pod/POD`."""

        def check() -> bool:
            try:
                conditions = self.read("Pod", pod, namespace)["status"].get("conditions") or []
            except NotFoundError:
                return False
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        try:
            eventually(check, timeout=timeout, what=f"pod {self.ns(namespace)}/{pod} Ready")
        except AssertionError as err:
            raise AssertionError(f"{err}; its events: {self.events(pod, namespace)}") from None

    def pods(self, label: str, namespace: str = "default") -> list[str]:
        listed = self.core.list_namespaced_pod(self.ns(namespace), label_selector=label).items
        return sorted(p.metadata.name for p in listed if p.metadata.deletion_timestamp is None)

    def all_ready(self, label: str, count: int, namespace: str = "default", timeout: float = 90) -> list[str]:
        """`kubectl wait --for=condition=Ready pod -l LABEL`, once the Deployments made their pods."""

        def made() -> list[str] | None:
            found = self.pods(label, namespace)
            return found if len(found) >= count else None

        names = eventually(made, timeout=timeout, what=f"{count} pods {label} in {self.ns(namespace)}")
        for name in names:
            self.ready(name, namespace, timeout)
        return names

    def events(self, pod: str, namespace: str = "default") -> list[str]:
        selector = f"involvedObject.name={pod}"
        items = self.core.list_namespaced_event(self.ns(namespace), field_selector=selector).items
        return [f"{e.reason}: {e.message}" for e in items]

    def secret_value(self, name: str, key: str, namespace: str = "default") -> str:
        data = self.read("Secret", name, namespace)["data"]
        return base64.b64decode(data[key]).decode()

    def owner_count(self, secret: str, namespace: str = "default") -> int:
        """upstream's compare_owner_count: the Secret's owner references."""
        return len(self.read("Secret", secret, namespace)["metadata"].get("ownerReferences") or [])

    def secret_deleted(self, secret: str, namespace: str = "default") -> bool:
        try:
            self.read("Secret", secret, namespace)
        except NotFoundError:
            return True
        return False


@pytest.fixture(scope="module")
def suite(node: Node, plugins: Plugins) -> Iterator[Suite]:  # noqa: F811 (the node's fixtures)
    run = uuid.uuid4().hex[:6]
    namespaces = {name: f"e2e-{run}-{name}"[:63] for name in SUITE_NAMESPACES}
    core = k8s.CoreV1Api(node.api.admin)
    for namespace in namespaces.values():
        core.create_namespace({"metadata": {"name": namespace}})
    with E2EProvider(plugins.provider_dir / f"{PROVIDER}.sock") as provider:
        try:
            yield Suite(node, plugins, provider, namespaces, core)
        finally:
            # teardown_file: the namespaces go, with their pods and volumes.
            for namespace in namespaces.values():
                core.delete_namespace(namespace)


# ------------------------------------------------------------------ the suite's manifests


def objects(*names: str, versions: bool = True) -> str:
    items = [{"objectName": n, **({"objectVersion": "v1"} if versions else {})} for n in names]
    return yaml.safe_dump({"array": [yaml.safe_dump(i) for i in items]})


def secret_provider_class(
    name: str,
    provider: str = PROVIDER,
    secret: str | None = None,
    labels: dict[str, str] | None = None,
    api_version: str = "v1",
    names: tuple[str, ...] = (SECRET_NAME, KEY_NAME),
    versions: bool = True,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "provider": provider,
        "parameters": {"objects": objects(*names, versions=versions)},
    }
    if secret is not None:
        entry: dict[str, Any] = {
            "secretName": secret,
            "type": "Opaque",
            "data": [{"objectName": SECRET_NAME, "key": "username"}],
        }
        if labels:
            entry["labels"] = labels
        spec["secretObjects"] = [entry]
    return {
        "apiVersion": f"secrets-store.csi.x-k8s.io/{api_version}",
        "kind": "SecretProviderClass",
        "metadata": {"name": name},
        "spec": spec,
    }


def pod_spec(volumes: dict[str, str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """The suite's busybox pod spec (one csi volume per mount path -> class), on this node."""
    names = (
        ["secrets-store-inline"]
        if len(volumes) == 1
        else [f"secrets-store-inline-{i}" for i in range(len(volumes))]
    )
    container: dict[str, Any] = {
        "name": "busybox",
        "image": BUSYBOX,
        "imagePullPolicy": "Never",
        "command": ["/bin/sleep", "10000"],
        "volumeMounts": [
            {"name": names[i], "mountPath": path, "readOnly": True} for i, path in enumerate(volumes)
        ],
        "env": [
            {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": "username"}}}
            for var, secret in (env or {}).items()
        ],
    }
    return {
        "terminationGracePeriodSeconds": 0,
        "nodeName": NODE_NAME,
        "hostNetwork": True,
        "serviceAccountName": "default",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "containers": [container],
        "volumes": [
            {
                "name": names[i],
                "csi": {
                    "driver": DRIVER_NAME,
                    "readOnly": True,
                    "volumeAttributes": {"secretProviderClass": spc},
                },
            }
            for i, spc in enumerate(volumes.values())
        ],
    }


def pod(name: str, volumes: dict[str, str], env: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod_spec(volumes, env)}


def deployment(name: str, spc: str = "e2e-provider-sync") -> dict[str, Any]:
    """The suite's busybox Deployments: two replicas, SECRET_USERNAME from foosecret."""
    labels = {"app": "busybox"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": pod_spec({MOUNT: spc}, {"SECRET_USERNAME": "foosecret"}),
            },
        },
    }


def key_matches(content: str) -> bool:
    """The suite's check of the key file: `echo "$result" | base64` contains KEY_VALUE_CONTAINS."""
    return KEY_VALUE_CONTAINS in base64.b64encode((content.replace("\r", "") + "\n").encode()).decode()


def crd_established(suite: Suite, name: str) -> bool:
    resource = suite.node.api.dynamic.resources.get(
        api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
    )
    conditions = resource.get(name=name).to_dict()["status"].get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


# ------------------------------------------------------------------ the cases, in the suite's order


def test_setup_mock_provider_validation_config(suite: Suite) -> None:
    """The audiences of the CSIDriver's tokenRequests, which the provider checks from now on."""
    driver = k8s.StorageV1Api(suite.node.api.admin).read_csi_driver(DRIVER_NAME)
    audiences = [r.audience for r in driver.spec.token_requests or []]
    assert audiences, "the CSIDriver asks kubelet for no tokens: nothing to validate"
    suite.provider.control(f"/validate-token-requests?audience={','.join(audiences)}")
    assert suite.provider.servicer.audiences == audiences


def test_secretproviderclasses_crd_is_established(suite: Suite) -> None:
    assert crd_established(suite, "secretproviderclasses.secrets-store.csi.x-k8s.io")


def test_secretproviderclasspodstatuses_crd_is_established(suite: Suite) -> None:
    assert crd_established(suite, "secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io")


def test_rbac_roles_and_role_bindings_exist(suite: Suite) -> None:
    rbac = k8s.RbacAuthorizationV1Api(suite.node.api.admin)
    for role in (
        "secretproviderclasses-role",
        "secretproviderclasses-admin-role",
        "secretproviderclasses-viewer-role",
        "secretproviderclasspodstatuses-viewer-role",
        "secretprovidersyncing-role",
    ):
        rbac.read_cluster_role(role)
    for binding in ("secretproviderclasses-rolebinding", "secretprovidersyncing-rolebinding"):
        rbac.read_cluster_role_binding(binding)


def test_v1alpha1_deploy_e2e_provider_secretproviderclass_crd(suite: Suite) -> None:
    suite.apply(secret_provider_class("e2e-provider", api_version="v1alpha1"), "test-v1alpha1")
    found = suite.read(
        "SecretProviderClass", "e2e-provider", "test-v1alpha1", "secrets-store.csi.x-k8s.io/v1alpha1"
    )
    assert found["spec"]["provider"] == PROVIDER


def test_v1alpha1_csi_inline_volume_test_with_pod_portability(suite: Suite) -> None:
    suite.apply(pod("secrets-store-inline-crd", {MOUNT: "e2e-provider"}), "test-v1alpha1")
    suite.ready("secrets-store-inline-crd", "test-v1alpha1", timeout=180)


def test_v1alpha1_csi_inline_volume_test_with_pod_portability_read_secret_from_pod(suite: Suite) -> None:
    read = suite.exec("secrets-store-inline-crd", ["cat", f"{MOUNT}/{SECRET_NAME}"], "test-v1alpha1")
    assert read.replace("\r", "") == SECRET_VALUE


def test_v1alpha1_csi_inline_volume_test_with_pod_portability_read_key_from_pod(suite: Suite) -> None:
    assert key_matches(
        suite.exec("secrets-store-inline-crd", ["cat", f"{MOUNT}/{KEY_NAME}"], "test-v1alpha1")
    )


def test_deploy_e2e_provider_v1_secretproviderclass_crd(suite: Suite) -> None:
    suite.apply(secret_provider_class("e2e-provider"))
    found = suite.read("SecretProviderClass", "e2e-provider", api_version="secrets-store.csi.x-k8s.io/v1")
    assert found["spec"]["provider"] == PROVIDER


def test_csi_inline_volume_test_with_pod_portability(suite: Suite) -> None:
    suite.apply(pod("secrets-store-inline-crd", {MOUNT: "e2e-provider"}))
    suite.ready("secrets-store-inline-crd", timeout=180)


def test_csi_inline_volume_test_with_pod_portability_read_secret_from_pod(suite: Suite) -> None:
    read = eventually(
        lambda: (out := suite.exec("secrets-store-inline-crd", ["cat", f"{MOUNT}/{SECRET_NAME}"])) and out,
        timeout=WAIT,
        what="the secret file",
    )
    assert read.replace("\r", "") == SECRET_VALUE


def test_csi_inline_volume_test_with_pod_portability_read_key_from_pod(suite: Suite) -> None:
    assert key_matches(suite.exec("secrets-store-inline-crd", ["cat", f"{MOUNT}/{KEY_NAME}"]))


def test_csi_inline_volume_test_with_pod_portability_unmount_succeeds(suite: Suite) -> None:
    uid = suite.read("Pod", "secrets-store-inline-crd")["metadata"]["uid"]
    suite.delete("Pod", "secrets-store-inline-crd")

    def deleted() -> bool:
        return uid not in {p.metadata.uid for p in suite.core.list_pod_for_all_namespaces().items}

    eventually(deleted, timeout=WAIT, what="the pod deleted")
    # kvmount's words for upstream's "failed to clean and unmount target path": none for this pod.
    failed = [
        line
        for line in suite.plugins.log("driver").splitlines()
        if "unpublish failed" in line and uid in line
    ]
    assert failed == []
    pod_dir = suite.node.kubelet_dir / "pods" / uid
    eventually(lambda: not pod_dir.exists(), timeout=WAIT, what="the pod's volumes unmounted and removed")


def test_sync_with_k8s_secrets_create_deployment(suite: Suite) -> None:
    suite.apply(
        secret_provider_class("e2e-provider-sync", secret="foosecret", labels={"environment": LABEL_VALUE})
    )
    suite.apply(deployment("busybox-deployment"))
    suite.apply(deployment("busybox-deployment-two"))
    suite.all_ready("app=busybox", 4)


def test_sync_with_k8s_secrets_read_secret_from_pod_read_k8s_secret_read_env_var_check_secret_ownerreferences_with_multiple_owners(  # noqa: E501 (the case's name)
    suite: Suite,
) -> None:
    first = suite.pods("app=busybox")[0]
    assert suite.exec(first, ["cat", f"{MOUNT}/{SECRET_NAME}"]).replace("\r", "") == SECRET_VALUE
    assert key_matches(suite.exec(first, ["cat", f"{MOUNT}/{KEY_NAME}"]))
    assert suite.secret_value("foosecret", "username") == SECRET_VALUE
    assert suite.env(first, "SECRET_USERNAME") == SECRET_VALUE
    labels = suite.read("Secret", "foosecret")["metadata"]["labels"]
    assert labels["environment"] == LABEL_VALUE
    assert labels["secrets-store.csi.k8s.io/managed"] == "true"
    # One owner per Deployment (its ReplicaSet), not one per pod.
    eventually(lambda: suite.owner_count("foosecret") == 2, timeout=WAIT, what="foosecret with 2 owners")


def test_sync_with_k8s_secrets_delete_deployment_check_owner_ref_updated_check_secret_deleted(
    suite: Suite,
) -> None:
    suite.delete("Deployment", "busybox-deployment", api_version="apps/v1")
    eventually(lambda: suite.owner_count("foosecret") == 1, timeout=WAIT, what="foosecret with 1 owner")
    suite.delete("Deployment", "busybox-deployment-two", api_version="apps/v1")
    eventually(lambda: suite.secret_deleted("foosecret"), timeout=WAIT, what="foosecret deleted")
    suite.delete("SecretProviderClass", "e2e-provider-sync", api_version="secrets-store.csi.x-k8s.io/v1")


def test_namespaced_scope_secretproviderclass_create_deployment(suite: Suite) -> None:
    suite.apply(secret_provider_class("e2e-provider-sync", provider="invalidprovider", secret="foosecret"))
    suite.apply(secret_provider_class("e2e-provider-sync", secret="foosecret"), "test-ns")
    suite.apply(deployment("busybox-deployment"), "test-ns")
    suite.all_ready("app=busybox", 2, "test-ns", timeout=WAIT)


def test_namespaced_scope_secretproviderclass_sync_with_k8s_secrets_read_secret_from_pod_read_k8s_secret_read_env_var_check_secret_ownerreferences(  # noqa: E501 (the case's name)
    suite: Suite,
) -> None:
    first = suite.pods("app=busybox", "test-ns")[0]
    assert suite.exec(first, ["cat", f"{MOUNT}/{SECRET_NAME}"], "test-ns").replace("\r", "") == SECRET_VALUE
    assert key_matches(suite.exec(first, ["cat", f"{MOUNT}/{KEY_NAME}"], "test-ns"))
    assert suite.secret_value("foosecret", "username", "test-ns") == SECRET_VALUE
    assert suite.env(first, "SECRET_USERNAME", "test-ns") == SECRET_VALUE
    eventually(
        lambda: suite.owner_count("foosecret", "test-ns") == 1, timeout=WAIT, what="foosecret with 1 owner"
    )


def test_namespaced_scope_secretproviderclass_sync_with_k8s_secrets_delete_deployment_check_secret_deleted(
    suite: Suite,
) -> None:
    suite.delete("Deployment", "busybox-deployment", "test-ns", "apps/v1")
    eventually(lambda: suite.secret_deleted("foosecret", "test-ns"), timeout=WAIT, what="foosecret deleted")


def test_namespaced_scope_secretproviderclass_should_fail_when_no_secret_provider_class_in_same_namespace(
    suite: Suite,
) -> None:
    namespace = suite.ns("negative-test-ns")
    suite.apply(deployment("busybox-deployment"), "negative-test-ns")
    first = eventually(
        lambda: suite.pods("app=busybox", "negative-test-ns"), timeout=WAIT, what="the Deployment's pods"
    )[0]
    # The suite's grep of `kubectl describe pod`: kubelet's FailedMount carries the driver's message.
    wanted = re.compile(
        rf"FailedMount.*failed to get secretproviderclass {namespace}/e2e-provider-sync.*not found"
    )
    eventually(
        lambda: any(wanted.search(e) for e in suite.events(first, "negative-test-ns")),
        timeout=WAIT,
        what=f"a FailedMount naming the missing class on pod {first}",
    )
    suite.delete("Deployment", "busybox-deployment", "negative-test-ns", "apps/v1")


def test_deploy_multiple_e2e_provier_secretproviderclass_crd(suite: Suite) -> None:
    for i in (0, 1):
        suite.apply(secret_provider_class(f"e2e-provider-spc-{i}", secret=f"foosecret-{i}"))
        suite.read(
            "SecretProviderClass", f"e2e-provider-spc-{i}", api_version="secrets-store.csi.x-k8s.io/v1"
        )


def test_deploy_pod_with_multiple_secret_provider_class(suite: Suite) -> None:
    volumes = {f"{MOUNT}-{i}": f"e2e-provider-spc-{i}" for i in (0, 1)}
    env = {f"SECRET_USERNAME_{i}": f"foosecret-{i}" for i in (0, 1)}
    suite.apply(pod("secrets-store-inline-multiple-crd", volumes, env))
    suite.ready("secrets-store-inline-multiple-crd")


def test_csi_inline_volume_test_with_multiple_secret_provider_class(suite: Suite) -> None:
    name = "secrets-store-inline-multiple-crd"
    for i in (0, 1):
        secret = f"foosecret-{i}"
        assert suite.exec(name, ["cat", f"{MOUNT}-{i}/{SECRET_NAME}"]).replace("\r", "") == SECRET_VALUE
        assert key_matches(suite.exec(name, ["cat", f"{MOUNT}-{i}/{KEY_NAME}"]))
        assert suite.secret_value(f"foosecret-{i}", "username") == SECRET_VALUE
        assert suite.env(name, f"SECRET_USERNAME_{i}") == SECRET_VALUE
        # A bare pod: its volume's SecretProviderClassPodStatus is the one owner.
        eventually(lambda: suite.owner_count(secret) == 1, timeout=WAIT, what=f"{secret} with 1 owner")  # noqa: B023 (run now)


def test_auto_rotation_of_mount_contents_and_k8s_secrets_create_deployment(suite: Suite) -> None:
    suite.apply(
        secret_provider_class(
            "e2e-provider-auto-rotation",
            secret="rotationsecret",
            labels={"environment": LABEL_VALUE},
            names=(SECRET_NAME,),
            versions=False,
        ),
        "rotation",
    )
    suite.apply(
        pod(
            "secrets-store-inline-rotation",
            {MOUNT: "e2e-provider-auto-rotation"},
            {"SECRET_USERNAME": "rotationsecret"},
        ),
        "rotation",
    )
    suite.ready("secrets-store-inline-rotation", "rotation")


def test_auto_rotation_of_mount_contents_and_k8s_secrets(suite: Suite) -> None:
    name = "secrets-store-inline-rotation"

    def mounted() -> str:
        return suite.exec(name, ["cat", f"{MOUNT}/{SECRET_NAME}"], "rotation").replace("\r", "")

    assert mounted() == "secret"
    assert suite.secret_value("rotationsecret", "username", "rotation") == "secret"
    suite.provider.control("/rotation?rotated=true")
    try:
        # The suite sleeps 120 s; here the wait ends when both have rotated.
        eventually(lambda: mounted() == "rotated", timeout=120, what="the mounted file rotated")
        eventually(
            lambda: suite.secret_value("rotationsecret", "username", "rotation") == "rotated",
            timeout=120,
            what="the synced Secret rotated",
        )
    finally:
        suite.provider.control("/rotation?rotated=false")


def test_validate_metrics(suite: Suite) -> None:
    url = f"http://127.0.0.1:{suite.plugins.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    for name in ("node_publish_total", "node_unpublish_total", "rotation_reconcile_total"):
        assert name in text, name


# ------------------------------------------------------------------ beyond the suite


def test_synced_secret_outlives_a_scale_to_zero(suite: Suite) -> None:
    """Upstream's lifetime: the Deployment's ReplicaSet owns the Secret, so a scale to zero
    (an Ingress's TLS Secret while its Deployment sleeps) keeps it; deleting the Deployment
    removes it."""
    suite.apply(secret_provider_class("e2e-provider-sync", secret="foosecret"), "scale")
    suite.apply(deployment("busybox-deployment"), "scale")
    suite.all_ready("app=busybox", 2, "scale")
    owners = suite.read("Secret", "foosecret", "scale")["metadata"]["ownerReferences"]
    assert [o["kind"] for o in owners] == ["ReplicaSet"]

    apps = k8s.AppsV1Api(suite.node.api.admin)
    apps.patch_namespaced_deployment_scale("busybox-deployment", suite.ns("scale"), {"spec": {"replicas": 0}})
    statuses = suite.node.api.dynamic.resources.get(
        api_version="secrets-store.csi.x-k8s.io/v1", kind="SecretProviderClassPodStatus"
    )
    eventually(
        lambda: (
            not suite.pods("app=busybox", "scale")
            and not statuses.get(namespace=suite.ns("scale")).to_dict()["items"]
        ),
        timeout=WAIT,
        what="no pod and no pod status left",
    )
    assert suite.secret_value("foosecret", "username", "scale") == SECRET_VALUE

    suite.delete("Deployment", "busybox-deployment", "scale", "apps/v1")
    eventually(
        lambda: suite.secret_deleted("foosecret", "scale"),
        timeout=WAIT,
        what="foosecret deleted with its Deployment",
    )
