"""`jmesPath`: parts of a JSON secret as files, over the provider's socket against the Key Vault double."""

from __future__ import annotations

import json
import os
from typing import Any

import grpc
import pytest
import yaml

from tests.peers.keyvault_double import KeyVaultDouble
from tests.provider.conftest import VAULT, Provider
from tests.provider.test_mount import files, modes, versions

DOCUMENT = {
    "username": "app",
    "password": "pa:ss wörd",
    "db": {"host": "db.example", "port": 5432, "replicas": ["r1", "r2"]},
    "flags": [{"name": "a", "on": True}, {"name": "b", "on": False}],
}

# A class written for the AWS provider, as its README shows jmesPath (only the secret's name differs).
AWS_CLASS = """
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: nginx-deployment-aws-secrets
spec:
  provider: aws
  parameters:
    objects: |
        - objectName: "MySecret"
          objectType: "secretsmanager"
          jmesPath:
              - path: username
                objectAlias: dbusername
              - path: password
                objectAlias: dbpassword
"""


def json_secret(keyvault: KeyVaultDouble, value: str) -> str:
    name = f"json-{os.urandom(4).hex()}"
    keyvault.put_secret(VAULT, name, value)
    return name


def refusal(provider: Provider, sp: dict[str, str], entry: dict[str, Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        provider.mount(provider.attributes([entry]), sp)
    return caught.value


def test_nested_paths_arrays_and_non_strings_each_a_file(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]
) -> None:
    name = json_secret(keyvault, json.dumps(DOCUMENT))
    parts = [
        {"path": "password", "objectAlias": "password"},
        {"path": "db.host", "objectAlias": "db/host"},
        {"path": "db.port", "objectAlias": "db/port"},
        {"path": "db.replicas[-1]", "objectAlias": "last-replica"},
        {"path": "flags[?on].name", "objectAlias": "enabled.json"},
        {"path": "db", "objectAlias": "db.json"},
    ]
    entry = {"objectName": name, "objectType": "secret", "jmesPath": parts, "filePermission": "0400"}
    response = provider.mount(provider.attributes([entry]), sp)
    # Strings as they are; other JSON values JSON-encoded. No whole-secret file without an objectAlias.
    assert files(response) == {
        "password": "pa:ss wörd".encode(),
        "db/host": b"db.example",
        "db/port": b"5432",
        "last-replica": b"r2",
        "enabled.json": b'["a"]',
        "db.json": json.dumps(DOCUMENT["db"], separators=(",", ":")).encode(),
    }
    assert set(modes(response).values()) == {0o400}
    assert set(versions(response)) == {f"secret/{name}"}


def test_the_whole_secret_is_written_under_its_own_alias(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]
) -> None:
    value = json.dumps(DOCUMENT)
    name = json_secret(keyvault, value)
    entry = {
        "objectName": name,
        "objectType": "secret",
        "objectAlias": "all.json",
        "jmesPath": [{"path": "username", "objectAlias": "user"}],
    }
    assert files(provider.mount(provider.attributes([entry]), sp)) == {
        "all.json": value.encode(),
        "user": b"app",
    }


@pytest.mark.parametrize(
    ("value", "path", "problem"),
    [
        ("not json: s3cr3t-value", "username", "is not JSON"),
        (json.dumps({"user": "s3cr3t-value"}), "username", "matches nothing"),
        (json.dumps({"a": "s3cr3t-value"}), "a.b.c", "matches nothing"),
        ("[" * 100_000 + "]" * 100_000, "username", "is not JSON"),
        (json.dumps({"a": "s3cr3t-value"}), "abs(a)", "cannot be evaluated"),
    ],
    ids=["not-json", "missing-key", "missing-nested", "too-deep", "type-error"],
)
def test_a_value_or_path_that_does_not_fit_names_object_and_path_never_the_value(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], value: str, path: str, problem: str
) -> None:
    name = json_secret(keyvault, value)
    entry = {"objectName": name, "objectType": "secret", "jmesPath": [{"path": path, "objectAlias": "x"}]}
    err = refusal(provider, sp, entry)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    message = err.details() or ""
    assert name in message and problem in message and repr(path) in message
    assert "s3cr3t" not in message


@pytest.mark.parametrize(
    ("head", "step", "tail"),
    [
        # Each step doubles what the last made: 40 steps of a 1 KB value are a terabyte.
        ("@", "|[@,@]", ""),
        ("@", "|[@,@]", "|to_string(@)"),
        ("[a,a]", "|[join('',@),join('',@)]", ""),
    ],
    ids=["encoded", "to_string", "join"],
)
def test_a_path_cannot_build_more_than_the_object_cap(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], head: str, step: str, tail: str
) -> None:
    name = json_secret(keyvault, json.dumps({"a": "x" * 1000}))

    def entry(steps: int) -> dict[str, Any]:
        path = head + step * steps + tail
        return {"objectName": name, "objectType": "secret", "jmesPath": [{"path": path, "objectAlias": "x"}]}

    assert len(files(provider.mount(provider.attributes([entry(3)]), sp))["x"]) > 8000
    err = refusal(provider, sp, entry(36))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "--max-object-bytes" in (err.details() or "")


def test_a_class_written_for_the_aws_provider_reads_the_same(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]
) -> None:
    aws = yaml.safe_load(AWS_CLASS)
    (entry,) = yaml.safe_load(aws["spec"]["parameters"]["objects"])
    name = json_secret(keyvault, json.dumps({"username": "app", "password": "pw"}))
    # Only the provider's own keys change: the Azure object type and name; jmesPath is AWS's as written.
    azure = {"objectName": name, "objectType": "secret", "jmesPath": entry["jmesPath"]}
    assert files(provider.mount(provider.attributes([azure]), sp)) == {
        "dbusername": b"app",
        "dbpassword": b"pw",
    }
