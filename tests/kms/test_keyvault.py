"""The passphrase store end to end: `kvmount kms` against the Key Vault and
Azure AD doubles with a real client certificate, and cryptsetup on a LUKS2
file with the passphrases it prints."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.certs import make_chain
from tests.kms.conftest import (
    VAULT,
    Kms,
    Setup,
    credentials_secret,
    failed,
    kms_entry,
    ok,
    volume_id,
    write_config,
)
from tests.peers.keyvault_double import KeyVaultDouble
from tests.support import peer_missing

CRYPTSETUP = shutil.which("cryptsetup") or "/usr/sbin/cryptsetup"
# Small and fast: a 32 MiB sparse file and a cheap KDF; the sandbox has no loop devices,
# and cryptsetup needs none to format, test and re-key a plain file.
LUKS_FAST = ("--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")


def cryptsetup(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([CRYPTSETUP, *args], input=stdin, capture_output=True, timeout=60, check=False)


def unlocks(device: Path, passphrase: bytes) -> bool:
    done = cryptsetup("open", "--test-passphrase", "--key-file", "-", str(device), stdin=passphrase)
    return done.returncode == 0


@pytest.fixture
def device(tmp_path: Path) -> Path:
    if not Path(CRYPTSETUP).exists():
        reason = "cryptsetup is not installed (scripts/peers/cryptsetup.sh)"
        peer_missing(reason)
    path = tmp_path / "volume.img"
    with path.open("wb") as fh:
        fh.truncate(32 * 1024 * 1024)
    return path


def test_luks_volume_lifecycle(kms: Kms, setup: Setup, device: Path, tmp_path: Path) -> None:
    volume = volume_id()
    first = ok(kms, setup, "create", volume)
    # Ceph-CSI's LUKS passphrase: 20 random bytes, URL-safe base64, no newline.
    assert len(first) == 28 and len(base64.urlsafe_b64decode(first)) == 20

    formatted = cryptsetup(
        "luksFormat", "--batch-mode", *LUKS_FAST, "--key-file", "-", str(device), stdin=first
    )
    assert formatted.returncode == 0, formatted.stderr.decode()
    assert ok(kms, setup, "fetch", volume) == first
    assert unlocks(device, ok(kms, setup, "fetch", volume))

    # Rotation: the new passphrase is printed, the old one stays fetchable.
    second = ok(kms, setup, "rotate", volume)
    assert len(second) == 28 and second != first
    assert ok(kms, setup, "fetch", volume) == second
    assert ok(kms, setup, "fetch", volume, "--previous") == first
    # Retrying a rotation that was not confirmed gives the same passphrase, no third one.
    assert ok(kms, setup, "rotate", volume) == second

    old_key, new_key = tmp_path / "old.key", tmp_path / "new.key"
    old_key.write_bytes(ok(kms, setup, "fetch", volume, "--previous"))
    new_key.write_bytes(second)
    changed = cryptsetup(
        "luksChangeKey", *LUKS_FAST[2:], "--key-file", str(old_key), str(device), str(new_key)
    )
    assert changed.returncode == 0, changed.stderr.decode()
    assert unlocks(device, second) and not unlocks(device, first)

    assert ok(kms, setup, "rotate", volume, "--confirm") == b""
    assert unlocks(device, ok(kms, setup, "fetch", volume))
    failed(
        kms,
        setup,
        3,
        "has no rotation pending, so no previous passphrase is kept",
        "fetch",
        volume,
        "--previous",
    )
    assert ok(kms, setup, "rotate", volume, "--confirm") == b""  # confirming again is harmless

    assert ok(kms, setup, "remove", volume) == b""
    failed(kms, setup, 3, f"volume {volume!r}: no passphrase is stored for this volume", "fetch", volume)
    assert ok(kms, setup, "remove", volume) == b""

    assert all(first not in err and second not in err for err in setup.stderr)
    assert any(b"rotation pending" in err for err in setup.stderr)  # stderr does carry the messages


def test_remove_deletes_without_purging(kms: Kms, keyvault: KeyVaultDouble, setup: Setup) -> None:
    volume = volume_id()
    passphrase = ok(kms, setup, "create", volume).decode()
    ok(kms, setup, "remove", volume)
    deleted = keyvault.vault_call(VAULT, "GET", f"/deletedsecrets/{volume}?api-version=7.4")
    assert deleted["recoveryId"].endswith(f"/deletedsecrets/{volume}")
    # Its name stays taken while it awaits purge or recovery.
    failed(kms, setup, 1, "a deleted secret of this name awaits purge or recovery", "create", volume)
    # Recoverable until someone purges it, passphrase and all.
    keyvault.vault_call(VAULT, "POST", f"/deletedsecrets/{volume}/recover?api-version=7.4", {})
    assert ok(kms, setup, "fetch", volume).decode() == passphrase


def test_rotation_versions_in_key_vault(kms: Kms, keyvault: KeyVaultDouble, setup: Setup) -> None:
    volume = volume_id()
    ok(kms, setup, "create", volume)
    ok(kms, setup, "rotate", volume)
    listed = keyvault.vault_call(VAULT, "GET", f"/secrets/{volume}/versions?api-version=7.4")["value"]
    assert len(listed) == 2
    latest = keyvault.vault_call(VAULT, "GET", f"/secrets/{volume}?api-version=7.4")
    previous = latest["tags"]["kvmount-previous-version"]
    assert latest["tags"]["kvmount-rotation"] == "pending"
    ok(kms, setup, "rotate", volume, "--confirm")
    listed = keyvault.vault_call(VAULT, "GET", f"/secrets/{volume}/versions?api-version=7.4")["value"]
    enabled = {item["id"].rsplit("/", 1)[1]: item["attributes"]["enabled"] for item in listed}
    assert enabled.pop(previous) is False and list(enabled.values()) == [True]
    latest = keyvault.vault_call(VAULT, "GET", f"/secrets/{volume}?api-version=7.4")
    assert latest["tags"] == {"kvmount-rotation": "confirmed", "kvmount-previous-version": previous}


def test_fscrypt_passphrase_and_pem_credentials(
    kms: Kms, keyvault: KeyVaultDouble, setup: Setup, tmp_path: Path
) -> None:
    # CLIENT_CERT as PEM (key and certificate) through stringData, in the ConfigMap layout.
    chain = make_chain("kms-pem-client")
    client_id = str(uuid.uuid4())
    keyvault.register_aad_client(client_id, cert_pem=chain.pem("leaf"))
    pem = (chain.key_pem() + chain.pem("leaf")).decode()
    secret = tmp_path / "pem-secret.yaml"
    indented = "\n".join(f"    {line}" for line in pem.splitlines())
    secret.write_text(
        f"kind: Secret\nmetadata:\n  name: my-azure-cert\nstringData:\n  CLIENT_CERT: |\n{indented}\n"
    )
    entry = kms_entry(keyvault, client_id, AZURE_CERT_SECRET_NAME="my-azure-cert")
    entry["KMS_PROVIDER"] = entry.pop("encryptionKMSType")
    configmap = tmp_path / "cm.json"
    configmap.write_text(
        json.dumps(
            {
                "kind": "ConfigMap",
                "metadata": {"name": "csi-kms-connection-details"},
                "data": {"az": json.dumps(entry)},
            }
        )
    )
    pem_setup = Setup(
        ("--config", str(configmap), "--kms-id", "az", "--credentials", str(secret)), setup.env, client_id
    )
    volume = volume_id()
    passphrase = ok(kms, pem_setup, "create", volume, "--type", "fscrypt")
    assert len(passphrase) == 88 and len(base64.urlsafe_b64decode(passphrase)) == 64
    assert ok(kms, pem_setup, "fetch", volume) == passphrase
    # The first client's certificate reaches the same vault too.
    assert ok(kms, setup, "fetch", volume) == passphrase


def test_existing_passphrase_is_never_overwritten(kms: Kms, setup: Setup) -> None:
    volume = volume_id()
    passphrase = ok(kms, setup, "create", volume)
    failed(kms, setup, 2, "already has a passphrase; fetch it, or rotate it", "create", volume)
    assert ok(kms, setup, "fetch", volume) == passphrase


def test_missing_volume(kms: Kms, setup: Setup) -> None:
    volume = volume_id()
    failed(kms, setup, 3, "no passphrase is stored for this volume", "fetch", volume)
    failed(kms, setup, 3, "no passphrase is stored for this volume", "rotate", volume)
    failed(kms, setup, 3, "no passphrase is stored for this volume", "rotate", volume, "--confirm")
    assert ok(kms, setup, "remove", volume) == b""


def test_wrong_certificate_is_unauthenticated(
    kms: Kms, keyvault: KeyVaultDouble, setup: Setup, tmp_path: Path
) -> None:
    other = make_chain("not-registered")
    secret = credentials_secret(tmp_path / "other.yaml", other.pfx(()))
    args = (*setup.args[:-1], secret)
    done = kms("fetch", *args, "--volume-id", volume_id(), env=setup.env)
    stderr = done.stderr.decode()
    assert (done.returncode, done.stdout) == (1, b""), stderr
    assert f"no token for client {setup.client_id!r}" in stderr


def test_workload_identity(kms: Kms, keyvault: KeyVaultDouble, setup: Setup, tmp_path: Path) -> None:
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6Y2VwaCJ9.c2ln\n")
    client_id = str(uuid.uuid4())
    entry = kms_entry(keyvault, client_id, AZURE_AUTH_METHOD="workload-identity")
    config = write_config(tmp_path / "wi.json", {"wi": entry})
    wi = Setup(
        ("--config", config, "--kms-id", "wi"),
        {**setup.env, "AZURE_FEDERATED_TOKEN_FILE": str(token_file)},
        client_id,
    )
    volume = volume_id()
    keyvault.reset_log()
    passphrase = ok(kms, wi, "create", volume)
    assert ok(kms, wi, "fetch", volume) == passphrase
    forms = [r["form"] for r in keyvault.requests() if r.get("service") == "aad"]
    assert forms and all(f["client_id"] == client_id for f in forms)
    assert {f["client_assertion"] for f in forms} == {token_file.read_text().strip()}
    assert all(f["client_assertion_type"].endswith("jwt-bearer") for f in forms)

    token_file.unlink()
    failed(kms, wi, 1, "cannot read the federated token file", "fetch", volume)
