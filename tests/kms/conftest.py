"""Running `kvmount kms` as a process, as cryptsetup pipelines and Ceph-CSI would."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.certs import make_chain
from tests.peers.keyvault_double import KeyVaultDouble
from tests.support import starts_process

Kms = Callable[..., subprocess.CompletedProcess[bytes]]
VAULT = "kvtest"


@pytest.fixture
@starts_process
def kms() -> Kms:
    """kms(action, *args, env=..., stdin=...): the exit status, and stdout and stderr as bytes."""

    def run(
        action: str, *args: str, env: Mapping[str, str] | None = None, stdin: bytes = b""
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "kvmount.cli", "kms", action, *args],
            input=stdin,
            capture_output=True,
            env={**os.environ, **(env or {})},
            timeout=120,
            check=False,
        )

    return run


def write_config(path: Path, entries: dict[str, dict[str, Any]]) -> str:
    path.write_text(json.dumps(entries))
    return str(path)


@dataclass
class Setup:
    args: tuple[str, ...]  # --config, --kms-id and --credentials
    env: dict[str, str]
    client_id: str
    stderr: list[bytes] = field(default_factory=list)  # of every run, to look for passphrases in


def volume_id() -> str:
    return f"0001-0009-rook-ceph-0000000000000002-{uuid.uuid4()}"


def kms_entry(kv: KeyVaultDouble, client_id: str, **extra: str) -> dict[str, str]:
    return {
        "encryptionKMSType": "azure-kv",
        "AZURE_VAULT_URL": kv.url_for(VAULT),
        "AZURE_CLIENT_ID": client_id,
        "AZURE_TENANT_ID": kv.tenant,
        "AZURE_AUTHORITY_HOST": kv.authority,
        **extra,
    }


def credentials_secret(path: Path, client_cert: bytes) -> str:
    encoded = base64.b64encode(client_cert).decode()
    path.write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: ceph-csi-azure-credentials\n"
        f"type: Opaque\ndata:\n  CLIENT_CERT: {encoded}\n"
    )
    return str(path)


@pytest.fixture
def setup(keyvault: KeyVaultDouble, tmp_path: Path) -> Setup:
    """A client registered with its certificate; CLIENT_CERT is its PKCS#12 without password."""
    chain = make_chain("kms-client")
    client_id = str(uuid.uuid4())
    keyvault.register_aad_client(client_id, cert_pem=chain.pem("leaf"))
    config = write_config(tmp_path / "config.json", {"ceph-azure": kms_entry(keyvault, client_id)})
    secret = credentials_secret(tmp_path / "secret.yaml", chain.pfx(()))
    args = ("--config", config, "--kms-id", "ceph-azure", "--credentials", secret)
    return Setup(args, keyvault.env(), client_id)


def ok(kms: Kms, setup: Setup, action: str, volume: str, *args: str) -> bytes:
    """stdout of a successful run; stderr must not carry any passphrase it printed."""
    done = kms(action, *setup.args, "--volume-id", volume, *args, env=setup.env)
    setup.stderr.append(done.stderr)
    assert done.returncode == 0, done.stderr.decode()
    if done.stdout:
        assert done.stdout not in done.stderr
    return done.stdout


def failed(kms: Kms, setup: Setup, code: int, message: str, action: str, volume: str, *args: str) -> str:
    done = kms(action, *setup.args, "--volume-id", volume, *args, env=setup.env)
    setup.stderr.append(done.stderr)
    stderr = done.stderr.decode()
    assert (done.returncode, done.stdout) == (code, b""), stderr
    assert message in stderr, stderr
    return stderr
