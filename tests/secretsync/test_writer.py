"""Kubernetes Secret sync (secretObjects) against a real API server."""

from __future__ import annotations

import base64
import functools
import ssl
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes import client as _client

from kvmount.kube.kubeconfig import Connection, from_kubeconfig
from kvmount.kube.rest import RestClient
from kvmount.secretsync.data import MANAGED_LABEL
from kvmount.secretsync.errors import SyncError
from kvmount.secretsync.writer import Owner, SecretSync
from tests.certs import Chain, make_chain
from tests.peers.kube import KubeAPIServer
from tests.support import eventually

# The client's partial annotations do not cover dict bodies; treat it as untyped.
k8s: Any = _client
GROUP = "secrets-store.csi.x-k8s.io"
CLASS = "app"
# File contents that must never show up in an error message.
SENSITIVE = b"s3cret-value-do-not-print"


def rest_of(client: RestClient) -> Callable[[], RestClient]:
    return lambda: client


def pod_status(api: Any, ns: str, pod: str = "web") -> Owner:
    """A real SecretProviderClassPodStatus, to own the Secrets."""
    name = f"{pod}-{ns}-{CLASS}"
    created = k8s.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP,
        "v1",
        ns,
        "secretproviderclasspodstatuses",
        {
            "apiVersion": f"{GROUP}/v1",
            "kind": "SecretProviderClassPodStatus",
            "metadata": {"name": name},
            "status": {"podName": pod, "secretProviderClassName": CLASS, "mounted": True},
        },
    )
    return Owner(name, created["metadata"]["uid"])


def read(api: Any, ns: str, name: str) -> Any:
    return k8s.CoreV1Api(api).read_namespaced_secret(name, ns)


def decoded(secret: Any) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def owners(secret: Any) -> list[tuple[str, str, str, str]]:
    return [(r.api_version, r.kind, r.name, r.uid) for r in secret.metadata.owner_references or []]


def opaque(name: str = "db", **extra: Any) -> dict[str, Any]:
    return {
        "secretName": name,
        "type": "Opaque",
        "data": [{"objectName": "user", "key": "username"}, {"objectName": "pass", "key": "password"}],
        **extra,
    }


FILES = {"user": b"admin", "pass": SENSITIVE}


def test_opaque_two_keys_from_two_files(api: Any, rest: RestClient, ns: str) -> None:
    owner = pod_status(api, ns)
    entry = opaque(labels={"app": "web"}, annotations={"example.com/note": "synced"})
    assert SecretSync(rest_of(rest)).sync(ns, [entry], FILES, (owner,), CLASS) == ["db"]

    secret = read(api, ns, "db")
    assert secret.type == "Opaque"
    assert decoded(secret) == {"username": b"admin", "password": SENSITIVE}
    assert secret.metadata.labels == {"app": "web", MANAGED_LABEL: "true"}
    assert secret.metadata.annotations == {"example.com/note": "synced"}
    assert owners(secret) == [(f"{GROUP}/v1", "SecretProviderClassPodStatus", owner.name, owner.uid)]


def certs_of(pem: bytes) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(pem)]


def der(*certs: x509.Certificate) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in certs]


def assert_key_of(chain: Chain, key_pem: bytes) -> None:
    assert b"CERTIFICATE" not in key_pem
    key = serialization.load_pem_private_key(key_pem, None)
    assert key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == chain.leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def tls(name: str = "tls", object_name: str = "cert") -> dict[str, Any]:
    return {
        "secretName": name,
        "type": "kubernetes.io/tls",
        "data": [
            {"objectName": object_name, "key": "tls.key"},
            {"objectName": object_name, "key": "tls.crt"},
        ],
    }


def test_tls_from_pem_in_any_order(api: Any, rest: RestClient, ns: str) -> None:
    chain = make_chain()
    # Key Vault's order is key, leaf, intermediate; any order must do.
    pem = chain.pem("intermediate") + chain.key_pem() + chain.pem("leaf")
    entry = tls()
    entry["data"].append({"objectName": "ca", "key": "ca.crt"})
    files = {"cert": pem, "ca": chain.pem("root")}
    SecretSync(rest_of(rest)).sync(ns, [entry], files, (pod_status(api, ns),), CLASS)

    secret = read(api, ns, "tls")
    assert secret.type == "kubernetes.io/tls"
    data = decoded(secret)
    assert_key_of(chain, data["tls.key"])
    assert certs_of(data["tls.crt"]) == der(chain.leaf, chain.intermediate)
    assert b"PRIVATE KEY" not in data["tls.crt"]
    assert data["ca.crt"] == chain.pem("root")  # other keys get the file as it is


@pytest.mark.parametrize("encoding", ["binary", "base64"])
def test_tls_from_pkcs12(api: Any, rest: RestClient, ns: str, encoding: str) -> None:
    chain = make_chain()
    pfx = chain.pfx()  # leaf + intermediate + root
    if encoding == "base64":
        text = base64.b64encode(pfx)
        pfx = b"\n".join(text[i : i + 64] for i in range(0, len(text), 64)) + b"\n"
    SecretSync(rest_of(rest)).sync(ns, [tls()], {"cert": pfx}, (pod_status(api, ns),), CLASS)

    data = decoded(read(api, ns, "tls"))
    assert set(data) == {"tls.key", "tls.crt"}
    assert_key_of(chain, data["tls.key"])
    assert certs_of(data["tls.crt"]) == der(chain.leaf, chain.intermediate, chain.root)


def test_the_managed_label_is_the_drivers_whatever_the_entry_says(
    api: Any, rest: RestClient, ns: str
) -> None:
    """As upstream's driver: an entry's own value for the managed label is overridden."""
    entry = opaque(labels={"app": "web", MANAGED_LABEL: "false"})
    assert SecretSync(rest_of(rest)).sync(ns, [entry], FILES, (pod_status(api, ns),), CLASS) == ["db"]
    assert read(api, ns, "db").metadata.labels == {"app": "web", MANAGED_LABEL: "true"}


def test_update_when_content_changes_keeps_foreign_labels(api: Any, rest: RestClient, ns: str) -> None:
    owner = pod_status(api, ns)
    sync = SecretSync(rest_of(rest))
    sync.sync(ns, [opaque(labels={"app": "web"})], FILES, (owner,), CLASS)
    # Someone else labels and annotates the managed Secret: merged, not dropped.
    k8s.CoreV1Api(api).patch_namespaced_secret(
        "db", ns, {"metadata": {"labels": {"team": "a"}, "annotations": {"note": "kept"}}}
    )
    before = read(api, ns, "db")

    rotated = {"user": b"admin", "pass": b"rotated"}
    assert sync.sync(ns, [opaque(labels={"app": "web2"})], rotated, (owner,), CLASS) == ["db"]
    after = read(api, ns, "db")
    assert after.metadata.resource_version != before.metadata.resource_version
    assert decoded(after) == {"username": b"admin", "password": b"rotated"}
    assert after.metadata.labels == {"app": "web2", "team": "a", MANAGED_LABEL: "true"}
    assert after.metadata.annotations == {"note": "kept"}
    assert owners(after) == owners(before)


def test_a_type_of_the_users_own_domain_is_written_as_asked(api: Any, rest: RestClient, ns: str) -> None:
    SecretSync(rest_of(rest)).sync(ns, [opaque(type="example.com/db")], FILES, (pod_status(api, ns),), CLASS)
    assert read(api, ns, "db").type == "example.com/db"


def test_second_owner_is_added(api: Any, rest: RestClient, ns: str) -> None:
    first, second = pod_status(api, ns, "web-0"), pod_status(api, ns, "web-1")
    sync = SecretSync(rest_of(rest))
    sync.sync(ns, [opaque()], FILES, (first,), CLASS)
    sync.sync(ns, [opaque()], FILES, (second,), CLASS)
    assert [uid for *_, uid in owners(read(api, ns, "db"))] == [first.uid, second.uid]


def make_pod(api: Any, ns: str, name: str, owner: dict[str, str] | None = None) -> dict[str, Any]:
    """A real pod (never scheduled), owned by ``owner`` as a controller would own it."""
    meta: dict[str, Any] = {"name": name}
    if owner is not None:
        meta["ownerReferences"] = [{**owner, "controller": True, "blockOwnerDeletion": True}]
    body = {"metadata": meta, "spec": {"containers": [{"name": "app", "image": "busybox"}]}}
    created: dict[str, Any] = api.sanitize_for_serialization(
        k8s.CoreV1Api(api).create_namespaced_pod(ns, body)
    )
    return created


def replica_set(name: str) -> dict[str, str]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": str(uuid.uuid4())}


def test_pods_controllers_own_the_secret_as_upstream(api: Any, rest: RestClient, ns: str) -> None:
    """Two Deployments' pods: their ReplicaSets own the Secret (upstream's owners), not the
    pod statuses, so the Secret outlives a scale to zero; a bare pod's status owns it."""
    sync = SecretSync(rest_of(rest))
    rs_a, rs_b = replica_set("web-a-5d4f"), replica_set("web-b-77c9")
    status = pod_status(api, ns, "a-1")
    for pod_name, rs in (("a-1", rs_a), ("a-2", rs_a), ("b-1", rs_b)):
        pod = make_pod(api, ns, pod_name, rs)
        found = sync.owners_of(ns, pod_name, pod["metadata"]["uid"], status)
        assert found == (Owner(rs["name"], rs["uid"], rs["apiVersion"], rs["kind"]),)
        sync.sync(ns, [opaque()], FILES, found, CLASS)
    refs = read(api, ns, "db").metadata.owner_references
    assert [(r.kind, r.name, r.uid) for r in refs] == [
        ("ReplicaSet", rs["name"], rs["uid"]) for rs in (rs_a, rs_b)
    ]
    # As upstream: neither controller nor blockOwnerDeletion, so deleting a pod's status
    # or the ReplicaSet is never held up by the Secret.
    assert all(r.controller is None and r.block_owner_deletion is None for r in refs)

    bare = make_pod(api, ns, "bare")
    assert sync.owners_of(ns, "bare", bare["metadata"]["uid"], status) == (status,)
    # A pod replaced by another of the same name, or gone: its status owns the Secret.
    assert sync.owners_of(ns, "a-1", "another-uid", status) == (status,)
    assert sync.owners_of(ns, "never-made", "uid", status) == (status,)


def test_no_write_when_nothing_changed(api: Any, rest: RestClient, ns: str) -> None:
    owner = pod_status(api, ns)
    sync = SecretSync(rest_of(rest))
    entry = opaque(labels={"app": "web"}, annotations={"a": "b"})
    sync.sync(ns, [entry], FILES, (owner,), CLASS)
    version = read(api, ns, "db").metadata.resource_version
    assert sync.sync(ns, [entry], dict(FILES), (owner,), CLASS) == ["db"]
    assert read(api, ns, "db").metadata.resource_version == version


class Racing(RestClient):
    """A client whose first replace loses a race: another writer changes the Secret first."""

    replaces = 0

    def replace(self, where: str, body: Any) -> dict[str, Any]:
        self.replaces += 1
        if self.replaces == 1:
            self.patch(where, {"metadata": {"labels": {"racer": "yes"}}})
        return super().replace(where, body)


def test_conflicting_update_is_retried_on_a_fresh_read(api: Any, rest: RestClient, ns: str) -> None:
    owner = pod_status(api, ns)
    SecretSync(rest_of(rest)).sync(ns, [opaque()], FILES, (owner,), CLASS)
    racing = Racing(rest.connection)
    rotated = {"user": b"admin", "pass": b"rotated"}
    assert SecretSync(rest_of(racing)).sync(ns, [opaque()], rotated, (owner,), CLASS) == ["db"]
    assert racing.replaces == 2  # the first was refused (409): its resourceVersion was stale
    secret = read(api, ns, "db")
    assert decoded(secret)["password"] == b"rotated"
    assert secret.metadata.labels["racer"] == "yes"  # the other writer's change survived


def test_unmanaged_secret_is_left_alone_and_others_sync(api: Any, rest: RestClient, ns: str) -> None:
    theirs = base64.b64encode(b"theirs").decode()
    k8s.CoreV1Api(api).create_namespaced_secret(
        ns, {"metadata": {"name": "taken", "labels": {"app": "other"}}, "data": {"password": theirs}}
    )
    before = read(api, ns, "taken").to_dict()

    with pytest.raises(SyncError) as info:
        SecretSync(rest_of(rest)).sync(
            ns, [opaque("taken"), opaque("free")], FILES, (pod_status(api, ns),), CLASS
        )
    assert info.value.reason == "SecretNotManaged"
    message = str(info.value)
    assert f"Secret {ns}/taken" in message and "secretObjects[0]" in message
    assert "free" not in message
    assert SENSITIVE.decode() not in message and "theirs" not in message
    assert read(api, ns, "taken").to_dict() == before
    assert decoded(read(api, ns, "free"))["password"] == SENSITIVE


def test_type_of_a_managed_secret_cannot_change(api: Any, rest: RestClient, ns: str) -> None:
    owner = pod_status(api, ns)
    sync = SecretSync(rest_of(rest))
    sync.sync(ns, [opaque("tls")], FILES, (owner,), CLASS)
    chain = make_chain()
    with pytest.raises(SyncError) as info:
        sync.sync(ns, [tls()], {"cert": chain.pem("leaf") + chain.key_pem()}, (owner,), CLASS)
    assert info.value.reason == "SecretTypeMismatch"
    assert "delete the Secret" in str(info.value)
    assert read(api, ns, "tls").type == "Opaque"


OTHER_CHAIN = make_chain("other.example")
CHAIN = make_chain()
TLS_FILES = {
    "user": b"admin",
    "pass": SENSITIVE,
    "cert": CHAIN.key_pem() + CHAIN.pem("leaf", "intermediate"),
    "other": OTHER_CHAIN.key_pem() + OTHER_CHAIN.pem("leaf"),
    "certonly": CHAIN.pem("leaf"),
}


def entry_with(**changes: Any) -> dict[str, Any]:
    return {**opaque("second"), **changes}


BAD: list[tuple[str, Any, str, str]] = [
    ("not an object", "db", "InvalidSecretObject", "secretObjects[1] must be"),
    ("no name", entry_with(secretName=None), "InvalidSecretObject", "secretObjects[1].secretName"),
    ("bad name", entry_with(secretName="Bad_Name"), "InvalidSecretObject", "secretObjects[1].secretName"),
    ("same name", opaque("first"), "InvalidSecretObject", "secretObjects[1].secretName 'first'"),
    ("no data", entry_with(data=None), "InvalidSecretObject", "secretObjects[1].data"),
    ("empty data", entry_with(data=[]), "InvalidSecretObject", "secretObjects[1].data"),
    ("no key", entry_with(data=[{"objectName": "user"}]), "InvalidSecretObject", ".data[0].key"),
    (
        "bad key",
        entry_with(data=[{"objectName": "user", "key": "a/b"}]),
        "InvalidSecretObject",
        ".data[0].key 'a/b'",
    ),
    (
        "duplicate key",
        entry_with(data=[{"objectName": "user", "key": "k"}, {"objectName": "pass", "key": "k"}]),
        "InvalidSecretObject",
        ".data[1].key 'k'",
    ),
    ("no object", entry_with(data=[{"key": "k"}]), "InvalidSecretObject", ".data[0].objectName"),
    (
        "not mounted",
        entry_with(data=[{"objectName": "nope", "key": "k"}]),
        "ObjectNotMounted",
        ".data[0].objectName 'nope'",
    ),
    ("bad label", entry_with(labels={"app": "a b"}), "InvalidSecretObject", "secretObjects[1].labels"),
    (
        "bad annotation",
        entry_with(annotations={"a": 1}),
        "InvalidSecretObject",
        "secretObjects[1].annotations",
    ),
    (
        "tls without tls.key",
        {**tls("second"), "data": [{"objectName": "cert", "key": "tls.crt"}]},
        "InvalidSecretObject",
        "secretObjects[1].data lacks key(s) tls.key",
    ),
    ("tls from a password", tls("second", "pass"), "InvalidCertificate", "secretObjects[1].data[0]"),
    # The token controller would mint a long-lived token of that ServiceAccount into the Secret.
    (
        "service account token",
        entry_with(
            type="kubernetes.io/service-account-token",
            annotations={"kubernetes.io/service-account.name": "default"},
        ),
        "InvalidSecretObject",
        "secretObjects[1].type 'kubernetes.io/service-account-token' is refused",
    ),
    (
        "bootstrap token",
        entry_with(type="bootstrap.kubernetes.io/token"),
        "InvalidSecretObject",
        "secretObjects[1].type 'bootstrap.kubernetes.io/token' is refused",
    ),
    (
        "any other type of Kubernetes' own",
        entry_with(type="example.k8s.io/future"),
        "InvalidSecretObject",
        "'example.k8s.io/future' is refused",
    ),
    ("tls without a key", tls("second", "certonly"), "InvalidCertificate", "no private key"),
    (
        "tls key of another cert",
        {
            **tls("second"),
            "data": [{"objectName": "other", "key": "tls.key"}, {"objectName": "cert", "key": "tls.crt"}],
        },
        "InvalidCertificate",
        "does not belong",
    ),
]


@pytest.mark.parametrize(("case", "bad", "reason", "names"), BAD, ids=[b[0] for b in BAD])
def test_an_invalid_entry_is_skipped_and_the_others_sync(
    api: Any, rest: RestClient, ns: str, case: str, bad: Any, reason: str, names: str
) -> None:
    """As upstream's driver: the broken entry is reported and writes nothing, the valid one syncs."""
    with pytest.raises(SyncError) as info:
        SecretSync(rest_of(rest)).sync(ns, [opaque("first"), bad], TLS_FILES, (pod_status(api, ns),), CLASS)
    assert info.value.reason == reason
    message = str(info.value)
    assert names in message
    assert f"SecretProviderClass {ns}/{CLASS}" in message
    assert [s.metadata.name for s in k8s.CoreV1Api(api).list_namespaced_secret(ns).items] == ["first"]
    assert decoded(read(api, ns, "first")) == {"username": b"admin", "password": SENSITIVE}
    # No file content in the message, whole or in part.
    for content in TLS_FILES.values():
        for line in content.splitlines():
            if len(line) > 8 and b"-----" not in line:
                assert line.decode() not in message
    assert "PRIVATE KEY" not in message


def wait_until_allowed(
    client: Any, ns: str, resource: str, verbs: tuple[str, ...], timeout: float = 30.0
) -> None:
    """Poll SelfSubjectAccessReviews until ``client`` may use every verb on ``resource`` in ``ns``."""
    reviews = k8s.AuthorizationV1Api(client)

    def allowed(verb: str) -> bool:
        review = {"spec": {"resourceAttributes": {"namespace": ns, "resource": resource, "verb": verb}}}
        return bool(reviews.create_self_subject_access_review(review).status.allowed)

    for verb in verbs:
        eventually(
            functools.partial(allowed, verb), timeout=timeout, what=f"{verb} {resource} in {ns} allowed"
        )


def test_forbidden_without_rbac_for_secrets(server: KubeAPIServer, api: Any, ns: str, tmp_path: Path) -> None:
    token = server.service_account_token(ns, "driver")
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig", token)
    owner = pod_status(api, ns)
    driver: Any = server.api_client(kubeconfig)
    try:
        sync = SecretSync(rest_of(RestClient(from_kubeconfig([str(kubeconfig)]))))
        with pytest.raises(SyncError) as info:
            sync.sync(ns, [opaque()], FILES, (owner,), CLASS)
        assert info.value.reason == "APIServerForbidden"
        assert "RBAC" in str(info.value) and "secrets" in str(info.value)

        # The verbs the message names are enough: create, then update.
        rbac = k8s.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(
            ns,
            {
                "metadata": {"name": "secrets"},
                "rules": [
                    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "update"]}
                ],
            },
        )
        rbac.create_namespaced_role_binding(
            ns,
            {
                "metadata": {"name": "secrets"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secrets"},
                "subjects": [{"kind": "ServiceAccount", "name": "driver", "namespace": ns}],
            },
        )
        # The API server's authorizer learns of new RBAC objects from a watch, a moment later.
        wait_until_allowed(driver, ns, "secrets", ("get", "create", "update"))
        assert sync.sync(ns, [opaque()], FILES, (owner,), CLASS) == ["db"]
        assert sync.sync(ns, [opaque()], {"user": b"root", "pass": b"x"}, (owner,), CLASS) == ["db"]
        assert decoded(read(api, ns, "db"))["username"] == b"root"
    finally:
        driver.close()


def test_unreachable_api_server() -> None:
    unreachable = RestClient(Connection("https://127.0.0.1:1", ssl.create_default_context(), None))
    with pytest.raises(SyncError) as info:
        SecretSync(rest_of(unreachable)).sync(
            "default", [opaque()], FILES, (Owner("web-default-app", "uid"),), CLASS
        )
    assert info.value.reason == "APIServerUnavailable"
    assert "unreachable (MaxRetryError)" in str(info.value)


def test_nothing_to_sync_needs_no_api_server() -> None:
    def never() -> RestClient:
        raise AssertionError("not called")

    assert SecretSync(never).sync("default", [], FILES, (Owner("x", "y"),), CLASS) == []


def test_only_broken_entries_need_no_api_server() -> None:
    def never() -> RestClient:
        raise AssertionError("not called")

    with pytest.raises(SyncError) as info:
        SecretSync(never).sync("default", [opaque("db", data=[])], FILES, (Owner("x", "y"),), CLASS)
    assert info.value.reason == "InvalidSecretObject"
