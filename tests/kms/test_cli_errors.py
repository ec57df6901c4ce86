"""`kvmount kms` refusing bad input: a clear message on stderr, nothing on
stdout, and no network call (the vault and authority here do not exist)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.certs import make_chain
from tests.kms.conftest import Kms, write_config

UNREACHABLE = {
    "KMS_PROVIDER": "azure-kv",
    "AZURE_VAULT_URL": "https://127.0.0.1:9",
    "AZURE_CLIENT_ID": "client",
    "AZURE_TENANT_ID": "tenant",
    "AZURE_AUTHORITY_HOST": "https://127.0.0.1:9",
}


@pytest.fixture
def cert(tmp_path: Path) -> str:
    chain = make_chain()
    path = tmp_path / "secret.yaml"
    encoded = base64.b64encode(chain.pfx(())).decode()
    path.write_text(
        f"kind: Secret\nmetadata:\n  name: ceph-csi-azure-credentials\ndata:\n  CLIENT_CERT: {encoded}\n"
    )
    return str(path)


def refused(kms: Kms, code: int, message: str, *args: str) -> str:
    done = kms(*args)
    stderr = done.stderr.decode()
    assert done.returncode == code, stderr
    assert done.stdout == b""
    assert message in stderr, stderr
    assert "Traceback" not in stderr
    return stderr


def request(action: str, config: str, cert: str, kms_id: str = "ceph") -> tuple[str, ...]:
    """An ``action`` on volume v1 of ``kms_id``, with the credentials file ``cert``."""
    return (action, "--config", config, "--kms-id", kms_id, "--volume-id", "v1", "--credentials", cert)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {**UNREACHABLE, "KMS_PROVIDER": "vault"},
            "KMS 'ceph': KMS_PROVIDER: is 'vault'; this store serves 'azure-kv'",
        ),
        ({k: v for k, v in UNREACHABLE.items() if k != "AZURE_TENANT_ID"}, "AZURE_TENANT_ID: is required"),
        ({k: v for k, v in UNREACHABLE.items() if k != "KMS_PROVIDER"}, "names no provider"),
    ],
)
def test_bad_entry(kms: Kms, tmp_path: Path, cert: str, entry: dict[str, str], message: str) -> None:
    config = write_config(tmp_path / "config.json", {"ceph": entry})
    for action in ("create", "fetch", "remove", "rotate"):
        refused(kms, 2, message, *request(action, config, cert))


def test_unknown_kms_id(kms: Kms, tmp_path: Path, cert: str) -> None:
    config = write_config(tmp_path / "config.json", {"ceph": UNREACHABLE})
    refused(kms, 2, "--kms-id: 'other' is not in", *request("fetch", config, cert, kms_id="other"))


def test_bad_volume_id_before_anything_else(kms: Kms, tmp_path: Path) -> None:
    # Checked first: not even the configuration is read.
    refused(
        kms,
        2,
        "--volume-id: 'pvc_1' cannot name a Key Vault secret",
        "create",
        "--config",
        str(tmp_path / "none.json"),
        "--kms-id",
        "ceph",
        "--volume-id",
        "pvc_1",
    )


def test_credentials(kms: Kms, tmp_path: Path, cert: str) -> None:
    config = write_config(tmp_path / "config.json", {"ceph": UNREACHABLE})
    base = ("fetch", "--config", config, "--kms-id", "ceph", "--volume-id", "v1")
    refused(kms, 2, "--credentials is required: the Secret 'ceph-csi-azure-credentials'", *base)
    extra = tmp_path / "extra.yaml"
    extra.write_text(Path(cert).read_text() + "  CLIENT_KEY: eA==\n")
    refused(kms, 2, "holds CLIENT_KEY; only CLIENT_CERT is supported", *base, "--credentials", str(extra))
    garbage = tmp_path / "cert.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    refused(
        kms, 2, "CLIENT_CERT: must be a PEM or an unencrypted PKCS#12", *base, "--credentials", str(garbage)
    )
    chain = make_chain()
    locked = tmp_path / "locked.pfx"
    locked.write_bytes(chain.pfx((), password=b"secret"))
    refused(
        kms, 2, "CLIENT_CERT: must be a PEM or an unencrypted PKCS#12", *base, "--credentials", str(locked)
    )


def test_workload_identity_takes_no_credentials(kms: Kms, tmp_path: Path, cert: str) -> None:
    entry = {
        **UNREACHABLE,
        "AZURE_AUTH_METHOD": "workload-identity",
        "AZURE_FEDERATED_TOKEN_FILE": "/nonexistent",
    }
    config = write_config(tmp_path / "config.json", {"ceph": entry})
    refused(
        kms,
        2,
        "--credentials is not used: KMS 'ceph' authenticates with workload identity",
        *request("fetch", config, cert),
    )


def test_unreachable_vault_is_a_failure_not_a_crash(kms: Kms, tmp_path: Path, cert: str) -> None:
    config = write_config(tmp_path / "config.json", {"ceph": UNREACHABLE})
    refused(
        kms, 1, "volume 'v1': Key Vault or the token endpoint is unreachable", *request("fetch", config, cert)
    )


def test_usage_errors_go_to_stderr(kms: Kms) -> None:
    refused(kms, 2, "required: --config", "fetch", "--kms-id", "ceph", "--volume-id", "v1")
    refused(kms, 2, "invalid choice", "purge")


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--max-object-bytes=0", "argument --max-object-bytes: '0' is not a positive integer"),
        ("--max-token-answer-bytes=1e9", "argument --max-token-answer-bytes: '1e9' is not a whole number"),
        ("--timeout=0s", "argument --timeout: '0s' is not a positive duration"),
    ],
)
def test_bad_bound(kms: Kms, tmp_path: Path, cert: str, flag: str, message: str) -> None:
    config = write_config(tmp_path / "c.json", {"ceph": UNREACHABLE})
    refused(kms, 2, message, *request("fetch", config, cert), flag)
