"""`kvmount sync-controller` on a real API server with garbage collection, the shipped RBAC and
admission policies, the Azure provider and the Key Vault double: Secrets with no pod anywhere."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client as _client

from tests.provider.conftest import VAULT
from tests.support import eventually
from tests.synccontroller.conftest import Cluster

k8s: Any = _client


def decoded(secret: Any, key: str) -> str:
    return base64.b64decode(secret.data[key]).decode()


def sync_manifest(
    name: str, spc: str, account: str, data: list[dict[str, str]], **extra: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "secret-sync.x-k8s.io/v1alpha1",
        "kind": "SecretSync",
        "metadata": {"name": name},
        "spec": {
            "serviceAccountName": account,
            "secretProviderClassName": spc,
            "secretObject": {"type": "Opaque", "data": data, **extra},
        },
    }


def _hash(cluster: Cluster, namespace: str, name: str) -> str:
    return str((cluster.get_sync(namespace, name).get("status") or {}).get("syncHash") or "")


def _synced(cluster: Cluster, namespace: str, name: str) -> str:
    """Waits until the Secret and then the SecretSync's status say it was synced; its hash."""
    eventually(
        lambda: cluster.secret(namespace, name) is not None, timeout=60, what=f"Secret {name} is created"
    )
    eventually(
        lambda: bool(_hash(cluster, namespace, name)), timeout=30, what=f"SecretSync {name} has a sync hash"
    )
    return _hash(cluster, namespace, name)


@pytest.fixture(scope="module")
def controller(cluster: Cluster) -> Iterator[Cluster]:
    cluster.start_controller()
    yield cluster
    cluster.stop_controllers()


def setup_namespace(cluster: Cluster, value: str) -> tuple[str, str]:
    """A namespace with a federated service account ``app``, a Key Vault secret and a class."""
    namespace = cluster.namespace()
    secret_name = f"db-{uuid.uuid4().hex[:6]}"
    cluster.kv.put_secret(VAULT, secret_name, value)
    cluster.service_account(namespace, "app")
    cluster.class_(
        namespace, "kv", [{"objectName": secret_name, "objectType": "secret", "objectAlias": "password"}]
    )
    return namespace, secret_name


def test_secret_sync_creates_its_secret_without_a_pod(controller: Cluster) -> None:
    namespace, _ = setup_namespace(controller, "s3cret-1")
    made = controller.secret_sync(
        namespace,
        sync_manifest(
            "db-creds", "kv", "app", [{"sourcePath": "password", "targetKey": "pw"}], labels={"team": "a"}
        ),
    )
    eventually(
        lambda: controller.secret(namespace, "db-creds") is not None, timeout=60, what="the Secret is created"
    )
    secret = controller.secret(namespace, "db-creds")
    assert decoded(secret, "pw") == "s3cret-1"
    assert secret.type == "Opaque"
    assert secret.metadata.labels == {"team": "a", "secrets-store.sync.x-k8s.io": ""}
    [owner] = secret.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("SecretSync", "db-creds", made["metadata"]["uid"])
    assert not controller.core.list_namespaced_pod(namespace).items  # no pod anywhere

    def synced() -> bool:
        created = controller.condition(namespace, "db-creds", "SecretCreated")
        return bool(created and created["status"] == "True")

    eventually(synced, timeout=30, what="status says the Secret was created")
    status = controller.get_sync(namespace, "db-creds")["status"]
    assert status["syncHash"].startswith("v1:") and "s3cret" not in str(status)
    assert status["lastSuccessfulSyncTime"]
    assert controller.condition(namespace, "db-creds", "SecretCreated")["reason"] == "CreateSuccessful"  # type: ignore[index]
    assert controller.condition(namespace, "db-creds", "SecretUpdated")["reason"] == "SecretUpToDate"  # type: ignore[index]


def test_new_version_reaches_the_secret_within_the_interval(controller: Cluster) -> None:
    namespace, kv_name = setup_namespace(controller, "v1")
    controller.secret_sync(
        namespace, sync_manifest("rotating", "kv", "app", [{"sourcePath": "password", "targetKey": "pw"}])
    )
    eventually(
        lambda: controller.secret(namespace, "rotating") is not None, timeout=60, what="the Secret is created"
    )
    first = controller.secret(namespace, "rotating").metadata.resource_version
    controller.kv.put_secret(VAULT, kv_name, "v2")
    # The poll interval is 10 s; allow a loaded machine some slack.
    eventually(
        lambda: decoded(controller.secret(namespace, "rotating"), "pw") == "v2", timeout=40, what="v2 synced"
    )
    second = controller.secret(namespace, "rotating").metadata.resource_version
    assert second != first


def test_force_synchronization_syncs_at_once_and_unchanged_content_is_not_rewritten(
    controller: Cluster,
) -> None:
    namespace, kv_name = setup_namespace(controller, "same")
    controller.secret_sync(
        namespace, sync_manifest("forced", "kv", "app", [{"sourcePath": "password", "targetKey": "pw"}])
    )
    hash_before = _synced(controller, namespace, "forced")
    controller.kv.put_secret(VAULT, kv_name, "changed")
    controller.custom.patch_namespaced_custom_object(
        "secret-sync.x-k8s.io", "v1alpha1", namespace, "secretsyncs", "forced",
        {"spec": {"forceSynchronization": "now1"}},
    )  # fmt: skip
    # Well before the 10 s poll: the spec change alone triggers the sync.
    eventually(
        lambda: decoded(controller.secret(namespace, "forced"), "pw") == "changed",
        timeout=8,
        what="forced sync",
    )
    # The status follows the Secret.
    eventually(lambda: _hash(controller, namespace, "forced") != hash_before, timeout=8, what="a new hash")
    # Same content on the next polls: the Secret is left alone.
    version = controller.secret(namespace, "forced").metadata.resource_version
    log = controller.controllers[0].log
    line = f"reconcile: synced secretsync=SecretSync {namespace}/forced written=False"
    eventually(
        lambda: log.read_text().count(line) >= 2, timeout=40, what="two more syncs of the same content"
    )
    assert controller.secret(namespace, "forced").metadata.resource_version == version


def test_service_account_without_key_vault_access_fails_with_a_condition_naming_the_cause(
    controller: Cluster,
) -> None:
    namespace, _ = setup_namespace(controller, "x")
    controller.service_account(namespace, "intruder", federated=False)
    controller.secret_sync(
        namespace, sync_manifest("stolen", "kv", "intruder", [{"sourcePath": "password", "targetKey": "pw"}])
    )

    def failed() -> bool:
        condition = controller.condition(namespace, "stolen", "SecretCreated")
        return bool(condition and condition["reason"] == "ProviderError")

    eventually(failed, timeout=60, what="a ProviderError condition")
    condition = controller.condition(namespace, "stolen", "SecretCreated")
    assert condition is not None and condition["status"] == "False"
    # Upstream's words around the provider's own (Go's gRPC error text).
    assert condition["message"].startswith("fetching secrets from the provider failed: rpc error: code = ")
    assert "AADSTS70021" in condition["message"], condition["message"]
    assert controller.secret(namespace, "stolen") is None
    events = controller.core.list_namespaced_event(namespace).items
    assert any(e.reason == "ProviderError" and e.involved_object.kind == "SecretSync" for e in events)


def test_a_service_account_token_secret_is_refused_naming_its_type(controller: Cluster) -> None:
    """The controller may write Secrets anywhere: it never has a token minted for a namespace user."""
    namespace, _ = setup_namespace(controller, "t")
    manifest = sync_manifest("tok", "kv", "app", [{"sourcePath": "password", "targetKey": "pw"}])
    manifest["spec"]["secretObject"].update(
        type="kubernetes.io/service-account-token",
        annotations={"kubernetes.io/service-account.name": "app"},
    )
    controller.secret_sync(namespace, manifest)

    def message() -> str:
        condition = controller.condition(namespace, "tok", "SecretCreated")
        return str(condition["message"]) if condition else ""

    eventually(
        lambda: "kubernetes.io/service-account-token" in message(), timeout=60, what="the refusal condition"
    )
    assert "is refused" in message()
    assert controller.secret(namespace, "tok") is None


def test_deleting_the_secret_sync_removes_the_secret(controller: Cluster) -> None:
    namespace, _ = setup_namespace(controller, "z")
    controller.secret_sync(
        namespace, sync_manifest("gone", "kv", "app", [{"sourcePath": "password", "targetKey": "pw"}])
    )
    eventually(
        lambda: controller.secret(namespace, "gone") is not None, timeout=60, what="the Secret is created"
    )
    controller.custom.delete_namespaced_custom_object(
        "secret-sync.x-k8s.io", "v1alpha1", namespace, "secretsyncs", "gone"
    )
    eventually(
        lambda: controller.secret(namespace, "gone") is None,
        timeout=60,
        what="garbage collection of the Secret",
    )


def test_upstream_readme_secret_sync_works_unchanged(controller: Cluster) -> None:
    """The SecretSync of upstream's README, as a user would paste it (only the names filled in)."""
    namespace = controller.namespace()
    controller.kv.put_secret(VAULT, "foo", "from-upstream-example")
    controller.service_account(namespace, "e2e-sa")
    controller.class_(namespace, "e2e-providerspc", [{"objectName": "foo", "objectType": "secret"}])
    manifest = """
apiVersion: secret-sync.x-k8s.io/v1alpha1
kind: SecretSync
metadata:
 name: sse2esecret
spec:
 serviceAccountName: e2e-sa
 secretProviderClassName: e2e-providerspc
 secretObject:
  type: Opaque
  data:
  - sourcePath: foo
    targetKey:  bar
"""
    controller.secret_sync(namespace, yaml.safe_load(manifest))
    eventually(
        lambda: controller.secret(namespace, "sse2esecret") is not None,
        timeout=60,
        what="the Secret is created",
    )
    assert decoded(controller.secret(namespace, "sse2esecret"), "bar") == "from-upstream-example"
