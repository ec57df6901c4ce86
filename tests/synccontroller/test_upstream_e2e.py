"""Upstream's sync-controller end-to-end suite (kubernetes-sigs/secrets-store-sync-controller,
test/bats/e2e-provider.bats at 3186f13), case by case, against `kvmount sync-controller` on a real
API server with the shipped CRDs, RBAC and admission policies; each test is named after upstream's
case and checks what it checks (conditions compared as upstream compares them: type, status, reason
and message, exactly). Then what the issue adds: removed labels and annotations leave the Secret,
the starting conditions, condition order, the unowned Secret's message, a SecretSync migrated from
upstream's controller. Where kvmount deliberately differs (the README's compatibility table), the
test says so and checks kvmount's side."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as _client
from kubernetes import watch as _watch

from kvmount.synccontroller import api
from tests.peers.keyvault_double import Fault
from tests.provider.conftest import VAULT
from tests.support import eventually
from tests.synccontroller.conftest import Cluster
from tests.synccontroller.test_sync_controller import decoded, sync_manifest

k8s: Any = _client
kwatch: Any = _watch
GROUP, VERSION, PLURAL = "secret-sync.x-k8s.io", "v1alpha1", "secretsyncs"
FOO = [{"sourcePath": "foo", "targetKey": "bar"}]


@pytest.fixture(scope="module")
def controller(cluster: Cluster) -> Iterator[Cluster]:
    cluster.start_controller()
    yield cluster
    cluster.stop_controllers()


def e2e_namespace(cluster: Cluster, value: str = "secret") -> str:
    """A namespace as upstream's e2e sets one up: object ``foo`` (here in the Key Vault double)
    and the class ``e2e-providerspc``, read by the ServiceAccount ``default``."""
    namespace = cluster.namespace()
    cluster.kv.put_secret(VAULT, f"foo-{namespace}", value)
    cluster.service_account(namespace, "default")
    cluster.class_(
        namespace,
        "e2e-providerspc",
        [{"objectName": f"foo-{namespace}", "objectType": "secret", "objectAlias": "foo"}],
    )
    return namespace


def settled(cluster: Cluster, namespace: str, name: str, kind: str) -> dict[str, str]:
    """The condition once it is no longer Unknown, as upstream's verify_secretsync_status reads it."""

    def known() -> bool:
        condition = cluster.condition(namespace, name, kind)
        return bool(condition and condition["status"] != "Unknown")

    eventually(known, timeout=60, what=f"{kind} of {namespace}/{name} settles")
    condition = cluster.condition(namespace, name, kind) or {}
    return {k: condition[k] for k in ("type", "status", "reason", "message")}


def failed(kind: str, message: str, reason: str) -> dict[str, str]:
    return {"type": kind, "status": "False", "reason": reason, "message": message}


def denied(secret: str, policy: str, message: str) -> str:
    """An admission policy's refusal of the controller's apply, in upstream's condition message."""
    return (
        f'failed to patch secret "{secret}": secrets "{secret}" is forbidden: ValidatingAdmissionPolicy '
        f"'{policy}' with binding '{policy}-binding' denied request: {message}"
    )


def established(cluster: Cluster, name: str) -> bool:
    crd = k8s.ApiextensionsV1Api(cluster.api.admin).read_custom_resource_definition(name)
    return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])


def test_secretproviderclasses_crd_is_established(controller: Cluster) -> None:
    assert established(controller, "secretproviderclasses.secrets-store.csi.x-k8s.io")


def test_secretsync_crd_is_established(controller: Cluster) -> None:
    assert established(controller, "secretsyncs.secret-sync.x-k8s.io")


def test_rbac_roles_and_role_bindings_exist(controller: Cluster) -> None:
    """Upstream's names are secrets-store-sync-controller-manager-role and -rolebinding; kvmount's
    chart names its own after itself (the README's compatibility table)."""
    rbac = k8s.RbacAuthorizationV1Api(controller.api.admin)
    role = rbac.read_cluster_role("kvmount-sync-controller")
    assert rbac.read_cluster_role_binding("kvmount-sync-controller").role_ref.name == role.metadata.name
    secrets = next(r for r in role.rules if r.resources == ["secrets"])
    assert sorted(secrets.verbs) == ["create", "patch"]  # as upstream: apply, never read or delete


def test_v1alpha1_validate_secret_creation_and_deletion_with_secretproviderclass_and_secretsync(
    controller: Cluster,
) -> None:
    namespace = e2e_namespace(controller)
    controller.secret_sync(namespace, sync_manifest("sse2esecret", "e2e-providerspc", "default", FOO))
    eventually(lambda: controller.secret(namespace, "sse2esecret") is not None, timeout=60, what="the Secret")
    secret = controller.secret(namespace, "sse2esecret")
    assert decoded(secret, "bar") == "secret"
    [owner] = secret.metadata.owner_references  # exactly one owner
    assert owner.api_version == "secret-sync.x-k8s.io/v1alpha1"
    managers = {(m.manager, m.operation) for m in secret.metadata.managed_fields}
    assert managers == {("secrets-store-sync-controller", "Apply")}
    controller.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "sse2esecret")
    eventually(
        lambda: controller.secret(namespace, "sse2esecret") is None, timeout=60, what="the Secret is deleted"
    )


def test_secretproviderclass_and_secretsync_are_deployed_in_different_namespaces(controller: Cluster) -> None:
    e2e_namespace(controller)  # the class lives here
    ss_namespace = controller.namespace()
    controller.service_account(ss_namespace, "default")
    controller.secret_sync(ss_namespace, sync_manifest("sse2esecret", "e2e-providerspc", "default", FOO))
    message = (
        'failed to get SecretProviderClass "e2e-providerspc": '
        'SecretProviderClass.secrets-store.csi.x-k8s.io "e2e-providerspc" not found'
    )
    assert settled(controller, ss_namespace, "sse2esecret", "SecretCreated") == failed(
        "SecretCreated", message, "SecretProviderClassMisconfigured"
    )
    assert controller.secret(ss_namespace, "sse2esecret") is None


def test_cannot_create_secret_with_type_not_in_allowed_list(controller: Cluster) -> None:
    namespace = e2e_namespace(controller)
    doc = sync_manifest("my-custom-api-secret", "e2e-providerspc", "default", FOO)
    doc["spec"]["secretObject"]["type"] = "example.com/api-credentials"
    controller.secret_sync(namespace, doc)
    message = denied(
        "my-custom-api-secret",
        "secrets-store-sync-controller-create-update-policy",
        f"secrets-store-sync-controller has failed to CREATE secret with example.com/api-credentials type "
        f"in the {namespace} namespace. The controller can only create or update secrets in the allowed "
        "types list with a single secretsync owner.",
    )
    assert settled(controller, namespace, "my-custom-api-secret", "SecretCreated") == failed(
        "SecretCreated", message, "ControllerPatchError"
    )
    assert controller.secret(namespace, "my-custom-api-secret") is None


def test_cannot_create_secret_with_disallowed_type(controller: Cluster) -> None:
    """kvmount's controller refuses a type Kubernetes acts on itself, before any write, so the
    condition names the type in kvmount's words rather than quoting upstream's admission policy
    (which refuses the same write: see test_guard_rails; the compatibility table's row on Secret
    types Kubernetes acts on)."""
    namespace = e2e_namespace(controller)
    doc = sync_manifest(
        "sse2eserviceaccountsecret",
        "e2e-providerspc",
        "default",
        FOO,
        annotations={"kubernetes.io/service-account.name": "default"},
    )
    doc["spec"]["secretObject"]["type"] = "kubernetes.io/service-account-token"
    controller.secret_sync(namespace, doc)
    condition = settled(controller, namespace, "sse2eserviceaccountsecret", "SecretCreated")
    assert (condition["status"], condition["reason"]) == ("False", "ControllerPatchError")
    assert condition["message"].startswith('failed to patch secret "sse2eserviceaccountsecret": ')
    assert "kubernetes.io/service-account-token" in condition["message"]
    assert controller.secret(namespace, "sse2eserviceaccountsecret") is None


@contextlib.contextmanager
def without_label_policy(cluster: Cluster) -> Iterator[None]:
    """kvmount's admission-time check of a SecretSync's label and annotation keys switched off, as
    for a SecretSync written while upstream's controller (which has no such check) ran the cluster."""
    admission = k8s.AdmissionregistrationV1Api(cluster.api.admin)
    binding = admission.read_validating_admission_policy_binding("kvmount-secretsync-labels")
    admission.delete_validating_admission_policy_binding("kvmount-secretsync-labels")
    try:
        yield
    finally:
        admission.create_validating_admission_policy_binding(
            {"metadata": {"name": "kvmount-secretsync-labels"}, "spec": binding.to_dict()["spec"]}
        )


def _refusal(cluster: Cluster, namespace: str, doc: dict[str, Any], dry_run: bool = True) -> str:
    try:
        cluster.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, doc, **({"dry_run": "All"} if dry_run else {})
        )
    except k8s.ApiException as err:
        return str(err.body)
    return ""


def _invalid_key_case(cluster: Cluster, name: str, field: str, key: str, value: str) -> None:
    """Upstream lets the write fail (ControllerPatchError with the API server's words); kvmount
    refuses such a SecretSync when it is created (the README's compatibility table), and one that
    got in anyway fails as upstream's does."""
    namespace = e2e_namespace(cluster)
    doc = sync_manifest(name, "e2e-providerspc", "default", FOO, **{field: {key: value}})
    refusal = _refusal(cluster, namespace, doc)
    assert "kvmount-secretsync-labels" in refusal and "must be valid" in refusal, refusal
    with without_label_policy(cluster):
        eventually(lambda: not _refusal(cluster, namespace, doc), timeout=30, what="the policy is off")
        cluster.secret_sync(namespace, doc)
    eventually(
        lambda: bool(_refusal(cluster, namespace, {**doc, "metadata": {"name": "x"}})),
        timeout=30,
        what="back on",
    )
    message = (
        f'failed to patch secret "{name}": Secret "{name}" is invalid: metadata.{field}: Invalid value: '
        f"\"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
        "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
        "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
    )
    assert settled(cluster, namespace, name, "SecretCreated") == failed(
        "SecretCreated", message, "ControllerPatchError"
    )
    assert cluster.secret(namespace, name) is None


def test_cannot_create_a_secret_with_invalid_annotations(controller: Cluster) -> None:
    _invalid_key_case(
        controller,
        "sse2einvalidannotationssecret",
        "annotations",
        "my.annotation/with_invalid_characters!",
        "x",
    )


def test_cannot_create_a_secret_with_invalid_labels(controller: Cluster) -> None:
    _invalid_key_case(
        controller, "sse2einvalidlabelsecret", "labels", "invalid/key_with_invalid_characters!", "validValue"
    )


def test_api_validations(controller: Cluster) -> None:
    namespace = e2e_namespace(controller)
    doc = sync_manifest(
        "sse2einvalidlabelsecret",
        "e2e-providerspc",
        "default",
        FOO,
        labels={"my.label": "ThisValueExceedsTheSixtyThreeCharacterLimitAndShouldFailValidation"},
    )
    refusal = _refusal(controller, namespace, doc, dry_run=False)
    assert (
        "Label keys must not exceed 317 characters (254 for prefix+separator, 63 for name), label values "
        "must not exceed 63 characters." in refusal
    ), refusal
    # The rest of the CRD's rules, as upstream's CRD words and draws them.
    reserved = sync_manifest(
        "reserved", "e2e-providerspc", "default", FOO, annotations={api.RESERVED_KEY: "x"}
    )
    refusal = _refusal(controller, namespace, reserved, dry_run=False)
    assert (
        "Annotations should not contain secrets-store.sync.x-k8s.io. This key is reserved for the controller."
        in refusal
    )
    controller.secret_sync(namespace, sync_manifest("status", "absent", "default", FOO))
    for bad in ({"reason": ""}, {"reason": "has spaces"}, {"type": "-bad"}):
        condition = {"type": "SecretCreated", "status": "False", "reason": "R", "message": "",
                     "lastTransitionTime": "2025-01-01T00:00:00Z", **bad}  # fmt: skip
        with pytest.raises(k8s.ApiException) as refused:
            controller.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, "status", {"status": {"conditions": [condition]}}
            )
        assert refused.value.status == 422, bad


def test_removed_labels_and_annotations_leave_the_secret_and_other_writers_fields_stay(
    controller: Cluster,
) -> None:
    namespace = e2e_namespace(controller)
    doc = sync_manifest(
        "meta", "e2e-providerspc", "default", FOO, labels={"a": "1", "b": "2"}, annotations={"x": "y"}
    )
    controller.secret_sync(namespace, doc)
    eventually(lambda: controller.secret(namespace, "meta") is not None, timeout=60, what="the Secret")
    # Another writer's label: not the controller's to remove.
    controller.core.patch_namespaced_secret("meta", namespace, {"metadata": {"labels": {"theirs": "t"}}})
    controller.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "meta",
        {"spec": {"secretObject": {"labels": {"b": None}, "annotations": None}}},
    )  # fmt: skip

    def labels() -> dict[str, str]:
        return dict(controller.secret(namespace, "meta").metadata.labels or {})

    eventually(lambda: "b" not in labels(), timeout=60, what="the removed label leaves the Secret")
    assert labels() == {"a": "1", "theirs": "t", "secrets-store.sync.x-k8s.io": ""}
    assert "x" not in (controller.secret(namespace, "meta").metadata.annotations or {})


def test_starting_conditions_come_first_and_conditions_keep_their_order(controller: Cluster) -> None:
    namespace = e2e_namespace(controller)
    seen: list[list[dict[str, Any]]] = []
    done = threading.Event()
    # From the list's resourceVersion: every change after it, the SecretSync's creation included.
    since = controller.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    version = since["metadata"]["resourceVersion"]

    def record() -> None:
        stream = kwatch.Watch()
        for event in stream.stream(
            controller.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
            resource_version=version, timeout_seconds=60,
        ):  # fmt: skip
            conditions = (event["object"].get("status") or {}).get("conditions")
            if conditions:
                seen.append(conditions)
            if conditions and all(c["status"] == "True" for c in conditions):
                break
        done.set()

    threading.Thread(target=record, daemon=True).start()
    controller.secret_sync(namespace, sync_manifest("starting", "e2e-providerspc", "default", FOO))
    assert done.wait(70), "the SecretSync is synced"
    first = [(c["type"], c["status"], c["reason"], c["message"]) for c in seen[0]]
    assert first == [
        ("SecretCreated", "Unknown", "SyncStarting", ""),
        ("SecretUpdated", "Unknown", "NoUpdatesAttemptedYet", ""),
    ]
    assert all([c["type"] for c in s] == ["SecretCreated", "SecretUpdated"] for s in seen)
    last = {c["type"]: (c["reason"], c["message"]) for c in seen[-1]}
    assert last == {
        "SecretCreated": ("CreateSuccessful", "Secret created successfully."),
        "SecretUpdated": ("SecretUpToDate", "Secret contains last observed values."),
    }


def test_a_failed_first_sync_leaves_secret_updated_as_it_started(controller: Cluster) -> None:
    """Upstream marks SecretUpdated True (SecretUpToDate) before a create it then fails; kvmount
    leaves it as it started, since no update was attempted."""
    namespace = e2e_namespace(controller)
    doc = sync_manifest("notype", "e2e-providerspc", "default", FOO)
    doc["spec"]["secretObject"]["type"] = "example.com/other"
    controller.secret_sync(namespace, doc)
    settled(controller, namespace, "notype", "SecretCreated")
    updated = controller.condition(namespace, "notype", "SecretUpdated") or {}
    assert (updated["status"], updated["reason"], updated["message"]) == (
        "Unknown",
        "NoUpdatesAttemptedYet",
        "",
    )


def test_a_successful_sync_after_a_failed_update_sets_secret_updated_back(controller: Cluster) -> None:
    """Upstream leaves SecretUpdated False when the retry that succeeds finds the same hash (same
    content, same specs); kvmount says the Secret is up to date again (the compatibility table)."""
    namespace = e2e_namespace(controller)
    controller.secret_sync(namespace, sync_manifest("recovers", "e2e-providerspc", "default", FOO))

    def updated() -> tuple[str, str]:
        condition = controller.condition(namespace, "recovers", "SecretUpdated") or {}
        return str(condition.get("status")), str(condition.get("reason"))

    eventually(lambda: updated() == ("True", "SecretUpToDate"), timeout=60, what="the first sync")
    synced_hash = controller.get_sync(namespace, "recovers")["status"]["syncHash"]
    # Key Vault refuses the object on the next polls (every 10 s), then answers again.
    controller.kv.set_faults(Fault("status", count=1000, path=f"foo-{namespace}", status=403))
    try:
        eventually(lambda: updated() == ("False", "ProviderError"), timeout=60, what="the failed update")
    finally:
        controller.kv.set_faults()
    eventually(lambda: updated() == ("True", "SecretUpToDate"), timeout=60, what="the recovery")
    assert controller.get_sync(namespace, "recovers")["status"]["syncHash"] == synced_hash


def test_an_unowned_secret_is_refused_in_the_admission_policys_words(controller: Cluster) -> None:
    namespace = e2e_namespace(controller)
    label = {"secrets-store.sync.x-k8s.io": ""}
    # Labelled as the controller's, but no SecretSync owns it: only the owner check refuses. (A key
    # of the SecretSync's own, set by another writer, would be a server-side apply conflict first.)
    controller.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "mine", "labels": label}, "stringData": {"other": "the user's own"}}
    )
    controller.secret_sync(namespace, sync_manifest("mine", "e2e-providerspc", "default", FOO))
    message = denied(
        "mine",
        "secrets-store-sync-controller-update-check-oldobject-policy",
        f"secrets-store-sync-controller has failed to UPDATE old secret in the {namespace} namespace. "
        "The controller can only update secrets with a single secrets-store-sync-controller owner.",
    )
    assert settled(controller, namespace, "mine", "SecretCreated") == failed(
        "SecretCreated", message, "ControllerPatchError"
    )
    assert controller.secret(namespace, "mine").data.keys() == {"other"}
    events = controller.core.list_namespaced_event(namespace).items
    assert any(e.reason == "ControllerPatchError" and e.message == message for e in events)


def test_a_secret_sync_migrated_from_upstream_is_not_synced_again(controller: Cluster) -> None:
    """Upstream's controller left a Secret (applied by its field manager) and a status with its sync
    hash; kvmount's controller, started on that cluster, finds nothing to do."""
    controller.stop_controllers()
    namespace = e2e_namespace(controller, "migrated")
    made = controller.secret_sync(namespace, sync_manifest("moved", "e2e-providerspc", "default", FOO))
    spc = controller.custom.get_namespaced_custom_object(
        "secrets-store.csi.x-k8s.io", "v1", namespace, "secretproviderclasses", "e2e-providerspc"
    )
    owner = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SecretSync",
        "name": "moved",
        "uid": made["metadata"]["uid"],
    }
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "moved",
            "labels": {"secrets-store.sync.x-k8s.io": ""},
            "ownerReferences": [owner],
        },
        "type": "Opaque",
        "data": {"bar": "bWlncmF0ZWQ="},
    }
    controller.core.patch_namespaced_secret(
        "moved", namespace, body, field_manager="secrets-store-sync-controller",
        _content_type="application/apply-patch+yaml",
    )  # fmt: skip
    upstream_hash = api.sync_hash({"bar": b"migrated"}, spc, api.parse(made))
    conditions = [
        {"type": "SecretCreated", "status": "True", "reason": "CreateSuccessful",
         "message": "Secret created successfully.", "lastTransitionTime": "2025-01-01T00:00:00Z"},
        {"type": "SecretUpdated", "status": "True", "reason": "SecretUpToDate",
         "message": "Secret contains last observed values.", "lastTransitionTime": "2025-01-01T00:00:00Z"},
    ]  # fmt: skip
    status = {
        "conditions": conditions,
        "syncHash": upstream_hash,
        "lastSuccessfulSyncTime": "2025-01-01T00:00:00Z",
    }
    controller.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "moved", {"status": status}
    )
    version = controller.secret(namespace, "moved").metadata.resource_version
    started = controller.start_controller()
    line = f"reconcile: synced secretsync=SecretSync {namespace}/moved written=False"
    eventually(
        lambda: line in started.log.read_text(), timeout=60, what="the migrated SecretSync is reconciled"
    )
    assert controller.secret(namespace, "moved").metadata.resource_version == version
    assert controller.get_sync(namespace, "moved")["status"] == status


@pytest.mark.parametrize("old_value", ["old value", "new value"])
def test_a_secret_written_by_earlier_kvmount_is_taken_over(controller: Cluster, old_value: str) -> None:
    """Earlier kvmount versions wrote the Secret by create and replace (field manager ``kvmount``):
    the first apply takes those fields over instead of failing on the conflict (a changed value),
    and drops that writer's shared claims (an unchanged one too)."""
    controller.stop_controllers()
    namespace = e2e_namespace(controller, "new value")
    made = controller.secret_sync(
        namespace, sync_manifest("legacy", "e2e-providerspc", "default", FOO, labels={"gone": "1"})
    )
    owner = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SecretSync",
        "name": "legacy",
        "uid": made["metadata"]["uid"],
    }
    old = {
        "metadata": {
            "name": "legacy",
            "labels": {"secrets-store.sync.x-k8s.io": "", "gone": "1"},
            "ownerReferences": [owner],
        },
        "stringData": {"bar": old_value},
    }
    controller.core.create_namespaced_secret(namespace, old, field_manager="kvmount")
    controller.start_controller()
    eventually(
        lambda: decoded(controller.secret(namespace, "legacy"), "bar") == "new value",
        timeout=60,
        what="taken over",
    )
    # The earlier writer's claims are gone, so a label dropped from the SecretSync leaves the Secret.
    eventually(
        lambda: (
            {m.manager for m in controller.secret(namespace, "legacy").metadata.managed_fields}
            == {"secrets-store-sync-controller"}
        ),
        timeout=10,
        what="only upstream's field manager",
    )
    controller.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "legacy", {"spec": {"secretObject": {"labels": None}}}
    )
    eventually(
        lambda: "gone" not in controller.secret(namespace, "legacy").metadata.labels,
        timeout=30,
        what="label removed",
    )
