"""The KMS configuration and credentials files, as Ceph-CSI lays them out."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvmount.keyvault import Category, InvalidSpec
from kvmount.kms.config import (
    DEFAULT_CERT_SECRET_NAME,
    AuthMethod,
    load_client_certificate,
    load_config,
    parse_entry,
)

ENTRY = {
    "KMS_PROVIDER": "azure-kv",
    "AZURE_VAULT_URL": "https://kv.vault.azure.net",
    "AZURE_CLIENT_ID": "client",
    "AZURE_TENANT_ID": "tenant",
}


def write(path: Path, doc: Any) -> str:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def test_config_json_entry_with_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_AUTHORITY_HOST", raising=False)
    path = write(tmp_path / "config.json", {"other": {"encryptionKMSType": "vault"}, "azure": ENTRY})
    config = load_config(path, "azure")
    assert config.vault_url == "https://kv.vault.azure.net"
    assert (config.client_id, config.tenant_id) == ("client", "tenant")
    assert config.cert_secret_name == DEFAULT_CERT_SECRET_NAME == "ceph-csi-azure-credentials"
    assert config.authority == "https://login.microsoftonline.com"
    assert config.auth_method is AuthMethod.CLIENT_CERTIFICATE


def test_connection_details_configmap_holds_json_strings(tmp_path: Path) -> None:
    entry = {**ENTRY, "AZURE_CERT_SECRET_NAME": "my-cert"}
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "csi-kms-connection-details"},
        "data": {"azure": json.dumps(entry), "broken": "{not json"},
    }
    config = load_config(write(tmp_path / "cm.yaml", yaml.safe_dump(manifest)), "azure")
    assert config.cert_secret_name == "my-cert"
    # The data section alone reads the same; only the requested entry must parse.
    assert load_config(write(tmp_path / "data.json", manifest["data"]), "azure") == config
    with pytest.raises(InvalidSpec, match=r"'broken'.*not valid JSON"):
        load_config(write(tmp_path / "data.json", manifest["data"]), "broken")


def test_encryption_kms_type_wins_over_kms_provider() -> None:
    with pytest.raises(InvalidSpec, match=r"encryptionKMSType: is 'vault'; this store serves 'azure-kv'"):
        parse_entry("x", {**ENTRY, "encryptionKMSType": "vault"})
    assert parse_entry("x", {**ENTRY, "KMS_PROVIDER": "vault", "encryptionKMSType": "azure-kv"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"KMS_PROVIDER": None}, "names no provider"),
        ({"KMS_PROVIDER": "aws-metadata"}, "KMS_PROVIDER: is 'aws-metadata'"),
        ({"AZURE_VAULT_URL": None}, "AZURE_VAULT_URL: is required"),
        ({"AZURE_VAULT_URL": ""}, "AZURE_VAULT_URL: is required"),
        ({"AZURE_VAULT_URL": "http://kv.vault.azure.net"}, "AZURE_VAULT_URL: .* must be an https URL"),
        ({"AZURE_CLIENT_ID": None}, "AZURE_CLIENT_ID: is required"),
        ({"AZURE_TENANT_ID": 7}, "AZURE_TENANT_ID: must be a string, not int"),
        ({"AZURE_AUTH_METHOD": "password"}, "AZURE_AUTH_METHOD: is 'password'; one of"),
        ({"AZURE_AUTHORITY_HOST": "http://login.example"}, "AZURE_AUTHORITY_HOST: .* must be an https URL"),
    ],
)
def test_bad_entries(change: dict[str, Any], message: str) -> None:
    entry = {k: v for k, v in {**ENTRY, **change}.items() if v is not None}
    with pytest.raises(InvalidSpec, match=message) as caught:
        parse_entry("azure", entry)
    assert caught.value.category is Category.INVALID
    assert "KMS 'azure'" in str(caught.value)


def test_unknown_kms_id_lists_the_known(tmp_path: Path) -> None:
    path = write(tmp_path / "config.json", {"b": ENTRY, "a": ENTRY})
    with pytest.raises(InvalidSpec, match=r"'c' is not in .* \(have 'a', 'b'\)"):
        load_config(path, "c")


@pytest.mark.parametrize(
    ("content", "message"),
    [("[1, 2]", "must hold an object"), ("a: [b", "neither JSON nor YAML"), ('{"x": 3}', "must be a JSON")],
)
def test_unreadable_config(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        load_config(write(tmp_path / "config.json", content), "x")
    with pytest.raises(InvalidSpec, match="cannot read"):
        load_config(str(tmp_path / "missing.json"), "x")


def test_authority_from_entry_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "https://login.localhost:9443/")
    assert parse_entry("x", ENTRY).authority == "https://login.localhost:9443"
    entry = {**ENTRY, "AZURE_AUTHORITY_HOST": "login.microsoftonline.us"}
    assert parse_entry("x", entry).authority == "https://login.microsoftonline.us"


def test_workload_identity_token_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_FEDERATED_TOKEN_FILE", raising=False)
    entry = {**ENTRY, "AZURE_AUTH_METHOD": "workload-identity"}
    with pytest.raises(InvalidSpec, match="AZURE_FEDERATED_TOKEN_FILE: is required for workload-identity"):
        parse_entry("x", entry)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token")
    assert parse_entry("x", entry).federated_token_file == "/var/run/token"
    entry["AZURE_FEDERATED_TOKEN_FILE"] = "/other/token"
    config = parse_entry("x", entry)
    assert (config.auth_method, config.federated_token_file) == (AuthMethod.WORKLOAD_IDENTITY, "/other/token")


PEM = b"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"
PFX = bytes(range(256))  # binary, as a PKCS#12 is


def secret(data: dict[str, bytes] | None = None, string_data: dict[str, str] | None = None) -> str:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": DEFAULT_CERT_SECRET_NAME},
    }
    if data is not None:
        doc["data"] = {k: base64.b64encode(v).decode() for k, v in data.items()}
    if string_data is not None:
        doc["stringData"] = string_data
    return yaml.safe_dump(doc)


def test_client_cert_from_secret_manifests(tmp_path: Path) -> None:
    assert (
        load_client_certificate(
            write(tmp_path / "s.yaml", secret({"CLIENT_CERT": PFX})), "ceph-csi-azure-credentials"
        )
        == PFX
    )
    as_json = json.dumps(yaml.safe_load(secret(string_data={"CLIENT_CERT": PEM.decode()})))
    assert load_client_certificate(write(tmp_path / "s.json", as_json), DEFAULT_CERT_SECRET_NAME) == PEM


def test_client_cert_as_plain_files(tmp_path: Path) -> None:
    (tmp_path / "cert.pfx").write_bytes(PFX)
    (tmp_path / "cert.pem").write_bytes(PEM)
    assert load_client_certificate(str(tmp_path / "cert.pfx"), DEFAULT_CERT_SECRET_NAME) == PFX
    assert load_client_certificate(str(tmp_path / "cert.pem"), DEFAULT_CERT_SECRET_NAME) == PEM


def test_client_cert_from_mounted_secret(tmp_path: Path) -> None:
    # Kubelet's layout: keys are symlinks into a timestamped directory behind ..data.
    stamp = tmp_path / "..2024_01_01"
    stamp.mkdir()
    (stamp / "CLIENT_CERT").write_bytes(PFX)
    (tmp_path / "..data").symlink_to(stamp.name)
    (tmp_path / "CLIENT_CERT").symlink_to("..data/CLIENT_CERT")
    assert load_client_certificate(str(tmp_path), DEFAULT_CERT_SECRET_NAME) == PFX
    (tmp_path / "CLIENT_KEY").write_bytes(b"x")
    with pytest.raises(InvalidSpec, match="holds CLIENT_KEY; only CLIENT_CERT is supported"):
        load_client_certificate(str(tmp_path), DEFAULT_CERT_SECRET_NAME)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (
            secret({"CLIENT_CERT": PEM, "AZURE_CLIENT_SECRET": b"s"}),
            "holds AZURE_CLIENT_SECRET; only CLIENT_CERT",
        ),
        (secret(string_data={"extra": "x"}, data={"CLIENT_CERT": PEM}), "holds extra; only CLIENT_CERT"),
        (secret({}), "holds no CLIENT_CERT"),
        (secret({"CLIENT_CERT": b""}), "holds no CLIENT_CERT"),
        (
            secret().replace(DEFAULT_CERT_SECRET_NAME, "other"),
            "is Secret 'other', but AZURE_CERT_SECRET_NAME",
        ),
        ("kind: Secret\ndata:\n  CLIENT_CERT: not-base64!\n", "data.CLIENT_CERT is not base64"),
        ("kind: Secret\ndata: [CLIENT_CERT]\n", "metadata, data and stringData must be mappings"),
    ],
)
def test_bad_credentials(tmp_path: Path, manifest: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        load_client_certificate(write(tmp_path / "s.yaml", manifest), DEFAULT_CERT_SECRET_NAME)
