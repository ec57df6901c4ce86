"""`kvmount kms` on configurations and credentials that once ended in a traceback:
one line naming the field and the fix, exit 2, nothing on stdout."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.certs import make_chain
from tests.kms.conftest import Kms

ENTRY = {
    "KMS_PROVIDER": "azure-kv",
    "AZURE_VAULT_URL": "https://127.0.0.1:9",
    "AZURE_CLIENT_ID": "client",
    "AZURE_TENANT_ID": "tenant",
    "AZURE_AUTHORITY_HOST": "https://127.0.0.1:9",
}


def secret_file(path: Path, cert: bytes) -> str:
    path.write_text(f"kind: Secret\ndata:\n  CLIENT_CERT: {base64.b64encode(cert).decode()}\n")
    return str(path)


def refused(kms: Kms, config: str, credentials: str, words: str) -> None:
    done = kms(
        "fetch", "--config", config, "--kms-id", "ceph", "--volume-id", "v1", "--credentials", credentials
    )
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert done.stdout == b""
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert words in stderr, stderr


@pytest.fixture
def good_cert(tmp_path: Path) -> str:
    return secret_file(tmp_path / "cert.yaml", make_chain().pfx(()))


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (
            {"ceph": {**ENTRY, "AZURE_VAULT_URL": "https://["}},
            "AZURE_VAULT_URL: 'https://[' must be an https URL",
        ),
        ({"ceph": {**ENTRY, "AZURE_AUTHORITY_HOST": "https://[x"}}, "AZURE_AUTHORITY_HOST"),
        ({"ceph": {**ENTRY, "AZURE_VAULT_URL": {"nested": ["x"]}}}, "AZURE_VAULT_URL: must be a string"),
        ({"ceph": [ENTRY]}, "its entry must be a JSON object"),
        ({"ceph": "[" * 100_000}, "its entry is not valid JSON"),
        (
            {"ceph": {**ENTRY, "AZURE_VAULT_URL": "https://127.0.0.1:99999999"}},
            "AZURE_VAULT_URL: 'https://127.0.0.1:99999999' has no valid port",
        ),
        ({"ceph": {**ENTRY, "AZURE_VAULT_URL": "https://vault:٣٣"}}, "has no valid port"),
    ],
    ids=["vault-url", "authority", "nested-value", "list-entry", "deep-entry-string", "port", "digits"],
)
def test_bad_config_is_one_line(
    kms: Kms, tmp_path: Path, good_cert: str, config: dict[str, Any], words: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    refused(kms, str(path), good_cert, words)


def test_a_deeply_nested_config_file_is_one_line(kms: Kms, tmp_path: Path, good_cert: str) -> None:
    path = tmp_path / "config.json"
    path.write_text("[" * 100_000)
    refused(kms, str(path), good_cert, "--config")


@pytest.mark.parametrize("where", ["entry", "file"])
def test_a_number_past_pythons_digit_limit_is_one_line(
    kms: Kms, tmp_path: Path, good_cert: str, where: str
) -> None:
    """int() refuses more than 4,300 digits with an error of its own; the config may hold any."""
    big = "9" * 5000
    entry = json.dumps(ENTRY)[:-1] + f', "AZURE_RETRIES": {big}}}'
    text = f'{{"ceph": {json.dumps(entry) if where == "entry" else entry}}}'
    path = tmp_path / "config.json"
    path.write_text(text)
    refused(kms, str(path), good_cert, "not valid JSON" if where == "entry" else "--config")


def test_an_encrypted_pem_client_certificate_is_one_line(kms: Kms, tmp_path: Path) -> None:
    chain = make_chain()
    key = chain.leaf_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"password"),
    )
    credentials = secret_file(
        tmp_path / "cert.yaml", key + chain.leaf.public_bytes(serialization.Encoding.PEM)
    )
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"ceph": ENTRY}))
    refused(kms, str(config), credentials, "CLIENT_CERT: must be a PEM or an unencrypted PKCS#12")
