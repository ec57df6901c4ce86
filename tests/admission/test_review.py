"""An AdmissionReview answered from `kvmount validate`'s findings: warnings by default, a
refusal with --deny-invalid, other objects allowed untouched, bad input one clear error."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kvmount.admission import BadReview, review
from kvmount.admission.review import MAX_WARNING_CHARS

TYPO_OBJECTS = "array:\n  - |\n    objectName: a\n    objectType: secret\n    objectAlais: b\n"


def spc(objects: str = TYPO_OBJECTS, version: str = "v1") -> dict[str, Any]:
    return {
        "apiVersion": f"secrets-store.csi.x-k8s.io/{version}",
        "kind": "SecretProviderClass",
        "metadata": {"name": "app", "namespace": "shop", "uid": "u", "managedFields": []},
        "spec": {
            "provider": "azure",
            "parameters": {"keyvaultName": "kv-shop", "tenantId": "t", "clientID": "c", "objects": objects},
        },
    }


def body(obj: dict[str, Any], kind: str = "SecretProviderClass") -> bytes:
    group = "secrets-store.csi.x-k8s.io" if kind == "SecretProviderClass" else ""
    request = {"uid": "r-1", "kind": {"group": group, "version": "v1", "kind": kind}, "object": obj}
    return json.dumps(
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    ).encode()


def test_findings_are_warnings_and_the_class_is_allowed() -> None:
    answer = review(body(spc()), deny=False)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == "r-1" and response["allowed"] is True
    assert response["warnings"] == [
        "spec.parameters.objects[0]: unknown key 'objectAlais'; did you mean 'objectAlias'?"
    ]


def test_deny_refuses_an_error_and_still_allows_a_warning() -> None:
    response = review(body(spc()), deny=True)["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 422
    assert "SecretProviderClass shop/app is invalid" in response["status"]["message"]
    assert "objectAlais" in response["status"]["message"]
    clean = "array:\n  - |\n    objectName: a\n    objectType: secret\n"
    deprecated = review(body(spc(clean, "v1alpha1")), deny=True)["response"]
    assert deprecated["allowed"] is True and len(deprecated["warnings"]) == 1
    assert "deprecated" in deprecated["warnings"][0]
    assert review(body(spc(clean)), deny=True)["response"] == {"uid": "r-1", "allowed": True}


def test_an_update_leaving_the_spec_as_it_was_is_never_refused() -> None:
    """A class admitted before deny mode (or the webhook) began must still take a label, or lose a
    finalizer on its way to deletion."""
    doc = json.loads(body(spc()))
    doc["request"] |= {"operation": "UPDATE", "oldObject": spc()}
    response = review(json.dumps(doc).encode(), deny=True)["response"]
    assert response["allowed"] is True and response["warnings"]
    changed = spc(TYPO_OBJECTS.replace("objectName: a", "objectName: b"))
    doc["request"] |= {"object": changed}
    assert review(json.dumps(doc).encode(), deny=True)["response"]["allowed"] is False


def test_other_objects_are_allowed_unchecked() -> None:
    assert review(body({"kind": "ConfigMap"}, "ConfigMap"), deny=True)["response"] == {
        "uid": "r-1",
        "allowed": True,
    }


def secret_sync(secret_type: str = "Opaque", **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "secret-sync.x-k8s.io/v1alpha1",
        "kind": "SecretSync",
        "metadata": {"name": "db", "namespace": "shop", "uid": "u"},
        "spec": {
            "secretProviderClassName": "db",
            "serviceAccountName": "web",
            "secretObject": {
                "type": secret_type,
                "data": [{"sourcePath": path, "targetKey": key} for key, path in data.items()],
            },
        },
    }


def test_a_secret_sync_gets_the_controllers_checks() -> None:
    assert review(body(secret_sync(password="db"), "SecretSync"), deny=True)["response"] == {
        "uid": "r-1",
        "allowed": True,
    }
    refused = secret_sync("kubernetes.io/service-account-token", token="db")
    warned = review(body(refused, "SecretSync"), deny=False)["response"]
    assert warned["allowed"] is True
    (warning,) = warned["warnings"]
    assert warning.startswith("spec.secretObject.type: 'kubernetes.io/service-account-token' is refused")
    denied = review(body(refused, "SecretSync"), deny=True)["response"]
    assert denied["allowed"] is False and denied["status"]["code"] == 422
    assert denied["status"]["message"].startswith("SecretSync shop/db is invalid: spec.secretObject.type")


def test_warnings_are_bounded() -> None:
    objects = "array:\n" + "".join(
        f"  - |\n    objectName: a{i}\n    objectTpye: secret\n" for i in range(40)
    )
    warnings = review(body(spc(objects)), deny=False)["response"]["warnings"]
    assert 0 < len(warnings) <= 20 and all(len(w) <= MAX_WARNING_CHARS for w in warnings)


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b"{", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b'{"kind": "Pod"}', "not an AdmissionReview"),
        (b'{"kind": "AdmissionReview", "apiVersion": "v1"}', "apiVersion"),
        (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}', "request is missing"),
        (b'{"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {}}', "request.uid"),
    ],
)
def test_bad_input_is_one_clear_error(raw: bytes, said: str) -> None:
    with pytest.raises(BadReview, match=said):
        review(raw, deny=False)
