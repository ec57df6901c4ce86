"""Bad input and failing peers: a gRPC status naming the field or object, before any network call."""

from __future__ import annotations

import json
import os

import grpc
import pytest

from kvmount.proto import v1alpha1_pb2 as pb
from tests.peers.keyvault_double import KeyVaultDouble
from tests.provider.conftest import VAULT, Provider


def call(provider: Provider, request: pb.MountRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        provider.stub.Mount(request, timeout=60)
    return info.value


def obj(**fields: object) -> dict[str, object]:
    return {"objectName": "a", "objectType": "secret", **fields}


BAD_OBJECTS = [
    ([obj(objectVerison="1")], "objectVerison"),
    ([obj(), obj(objectType="key")], "distinct objectAlias"),
    ([obj(objectAlias="/etc/shadow")], "absolute"),
    ([obj(objectAlias="../../escape")], ".."),
    ([obj(filePermission="0888")], "filePermission"),
    ([obj(filePermission="644x")], "filePermission"),
    ([obj(objectVersionHistory=-2)], "negative"),
    ([obj(objectType="blob")], "objectType"),
    ([obj(objectFormat="der")], "objectFormat"),
    ([obj(objectType="cert", objectFormat="pfx")], "objectFormat"),
    ([obj(objectEncoding="utf-16")], "objectEncoding"),
]


@pytest.mark.parametrize(("objects", "words"), BAD_OBJECTS)
def test_bad_objects_are_invalid_argument_before_any_request(
    provider: Provider,
    keyvault: KeyVaultDouble,
    sp: dict[str, str],
    objects: list[dict[str, object]],
    words: str,
) -> None:
    keyvault.reset_log()
    request = pb.MountRequest(
        attributes=json.dumps(provider.attributes(objects)), secrets=json.dumps(sp), permission="420"
    )
    err = call(provider, request)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert words in (err.details() or "")
    assert keyvault.requests() == [], "validation happens before any network call"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"keyvaultName": "x"}, "keyvaultName"),
        ({"usePodIdentity": "true", "useVMManagedIdentity": "true"}, "one identity mode"),
        ({"cloudName": "Mars"}, "cloudName"),
        ({"cloudEnvFileName": "/nonexistent/env.json"}, "cloudEnvFileName"),
    ],
)
def test_bad_parameters(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], extra: dict[str, str], words: str
) -> None:
    keyvault.reset_log()
    attributes = provider.attributes([obj()], **extra)
    err = call(
        provider, pb.MountRequest(attributes=json.dumps(attributes), secrets=json.dumps(sp), permission="420")
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and words in (err.details() or "")
    assert keyvault.requests() == []


@pytest.mark.parametrize("history", ["9" * 5000, "²", "٣"])
def test_an_oversize_or_foreign_number_is_invalid_not_internal(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], history: str
) -> None:
    """5,000 digits once reached int() and came back INTERNAL "internal error (ValueError)"."""
    keyvault.reset_log()
    objects = (
        f"array:\n  - |\n    objectName: a\n    objectType: secret\n    objectVersionHistory: {history}\n"
    )
    attributes = {**provider.attributes([obj()]), "objects": objects}
    err = call(
        provider, pb.MountRequest(attributes=json.dumps(attributes), secrets=json.dumps(sp), permission="420")
    )
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
    details = err.details() or ""
    assert "objectVersionHistory" in details and "whole number" in details and len(details) < 300
    assert keyvault.requests() == []


@pytest.mark.parametrize(
    ("field", "request_fields", "words"),
    [
        ("attributes", {"attributes": "{not json"}, "attributes"),
        ("attributes", {"attributes": '["a"]'}, "attributes"),
        ("attributes", {"attributes": '{"keyvaultName": 3}'}, "attributes"),
        ("attributes", {"attributes": "[" * 100_000}, "attributes"),
        ("secrets", {"attributes": "{}", "secrets": '{"a": ' + "9" * 5000 + "}"}, "secrets"),
        ("secrets", {"attributes": "{}", "secrets": "[1]"}, "secrets"),
        ("permission", {"attributes": "{}", "permission": '"0644"'}, "permission"),
        ("permission", {"attributes": "{}", "permission": "4096"}, "permission"),
        ("permission", {"attributes": "{}", "permission": "9" * 5000}, "permission"),
        ("permission", {"attributes": "{}", "permission": "[" * 100_000}, "permission"),
        ("permission", {"attributes": "{}", "permission": "٤٢٠"}, "permission"),
    ],
)
def test_malformed_request_fields(
    provider: Provider, field: str, request_fields: dict[str, str], words: str
) -> None:
    err = call(provider, pb.MountRequest(**request_fields))  # type: ignore[arg-type]
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith(field)


def test_missing_object_is_not_found(provider: Provider, sp: dict[str, str]) -> None:
    attributes = provider.attributes([obj(objectName="does-not-exist", objectType="key")])
    err = call(
        provider, pb.MountRequest(attributes=json.dumps(attributes), secrets=json.dumps(sp), permission="420")
    )
    assert err.code() is grpc.StatusCode.NOT_FOUND
    assert "key 'does-not-exist'" in (err.details() or "") and VAULT in (err.details() or "")


def test_disabled_version_is_permission_denied(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]
) -> None:
    name = f"off-{os.urandom(4).hex()}"
    version = keyvault.put_secret(VAULT, name, "hidden")["id"].rsplit("/", 1)[1]
    keyvault.update(VAULT, "secrets", name, version, {"attributes": {"enabled": False}})
    attributes = provider.attributes([obj(objectName=name, objectVersion=version)])
    err = call(
        provider, pb.MountRequest(attributes=json.dumps(attributes), secrets=json.dumps(sp), permission="420")
    )
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED and name in (err.details() or "")


def test_outage_is_unavailable(provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]) -> None:
    name = f"out-{os.urandom(4).hex()}"
    keyvault.put_secret(VAULT, name, "v")
    attributes = provider.attributes([obj(objectName=name)])
    keyvault.set_outage(503)
    try:
        err = call(
            provider,
            pb.MountRequest(attributes=json.dumps(attributes), secrets=json.dumps(sp), permission="420"),
        )
    finally:
        keyvault.set_outage(0)
    assert err.code() is grpc.StatusCode.UNAVAILABLE and "retry" in (err.details() or "")
    assert provider.mount(attributes, sp).files[0].contents == b"v"
