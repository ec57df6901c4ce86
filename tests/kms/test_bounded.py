"""Hostile answers at `kvmount kms`: Key Vault's and Entra ID's, too large (decoded),
endless or drip-fed, through the real Key Vault and identity SDKs against the double.

Each hostile body is the real answer behind whitespace, so a client that held it whole
would take it and succeed: a refusal naming the cap shows the answer was counted while
it arrived. A drip-fed answer ends at the call's --timeout. Once the double answers
normally again, the same call succeeds.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.kms.conftest import Kms, Setup, failed, kms_entry, ok, volume_id, write_config
from tests.peers.keyvault_double import Fault, KeyVaultDouble

# endless-chunked's size: a safety stop for a kms without bounds (the test then fails).
BODIES = [
    Fault("gzip-bomb", size=64 << 20),
    Fault("huge-body", size=8 << 20),
    Fault("endless-chunked", size=256 << 20),
]
IDS = ["gzip-bomb", "huge-body", "endless-chunked"]
# Refused at the cap, not after reading the answer (or its retries) to the end; the
# process's start (the Azure SDK's import) is in it.
QUICK = 30.0


def _on_route(fault: Fault, route: str, setup: Setup, volume: str, seconds: float = 30.0) -> Fault:
    """``fault`` for every answer of the Key Vault reads of ``volume`` (route ``keyvault``),
    or of the client's token requests to Entra ID (``aad``)."""
    if route == "keyvault":
        return Fault(fault.kind, count=100, size=fault.size, seconds=seconds, path=volume)
    return Fault(
        fault.kind, count=100, size=fault.size, seconds=seconds, service="aad", client=setup.client_id
    )


def _timed_failure(
    kms: Kms, setup: Setup, keyvault: KeyVaultDouble, fault: Fault, expect: tuple[int, str], *args: str
) -> tuple[str, float]:
    """stderr and time of a `fetch ARGS` failing with ``expect`` (exit status, message) under ``fault``."""
    keyvault.set_faults(fault)
    try:
        started = time.monotonic()
        stderr = failed(kms, setup, *expect, "fetch", *args)
        took = time.monotonic() - started
    finally:
        keyvault.set_faults()
    return stderr, took


@pytest.mark.parametrize("fault", BODIES, ids=IDS)
def test_a_key_vault_answer_past_the_cap_fails_naming_the_flag(
    kms: Kms, keyvault: KeyVaultDouble, setup: Setup, fault: Fault
) -> None:
    volume = volume_id()
    passphrase = ok(kms, setup, "create", volume)
    stderr, took = _timed_failure(
        kms, setup, keyvault, _on_route(fault, "keyvault", setup, volume), (2, "--max-object-bytes"), volume
    )
    assert f"volume {volume!r}" in stderr and "Traceback" not in stderr
    assert passphrase.decode() not in stderr
    assert took < QUICK, f"the refusal took {took:.1f} s"
    assert ok(kms, setup, "fetch", volume) == passphrase


@pytest.mark.parametrize("fault", BODIES, ids=IDS)
def test_a_token_answer_past_the_cap_fails_naming_the_flag(
    kms: Kms, keyvault: KeyVaultDouble, setup: Setup, fault: Fault
) -> None:
    volume = volume_id()
    passphrase = ok(kms, setup, "create", volume)
    stderr, took = _timed_failure(
        kms, setup, keyvault, _on_route(fault, "aad", setup, volume), (1, "--max-token-answer-bytes"), volume
    )
    assert f"volume {volume!r}" in stderr and "Traceback" not in stderr
    assert "access_token" not in stderr and passphrase.decode() not in stderr
    assert took < QUICK, f"the refusal took {took:.1f} s"
    assert ok(kms, setup, "fetch", volume) == passphrase


@pytest.mark.parametrize("route", ["keyvault", "aad"])
def test_a_drip_fed_answer_ends_at_the_timeout(
    kms: Kms, keyvault: KeyVaultDouble, setup: Setup, route: str
) -> None:
    volume = volume_id()
    passphrase = ok(kms, setup, "create", volume)
    # A byte every half second for far longer than the test: each would restart a per-recv timeout.
    drip = _on_route(Fault("drip", size=100_000), route, setup, volume, seconds=0.5)
    stderr, took = _timed_failure(kms, setup, keyvault, drip, (1, "--timeout"), volume, "--timeout=4s")
    assert "did not answer in time" in stderr and "Traceback" not in stderr
    assert took < 4 + 15, f"the call took {took:.1f} s past its 4 s"
    assert any(r.get("fault") == "drip" for r in keyvault.requests()), "no drip was served"
    assert ok(kms, setup, "fetch", volume) == passphrase


def test_the_caps_are_the_flags_values(kms: Kms, setup: Setup) -> None:
    volume = volume_id()
    ok(kms, setup, "create", volume)
    # A real secret bundle is a few hundred bytes and a token answer over a kilobyte.
    failed(kms, setup, 2, "limit of 64 bytes per object (--max-object-bytes)", "fetch", volume,
           "--max-object-bytes=64")  # fmt: skip
    failed(kms, setup, 1, "limit of 100 bytes per token answer (--max-token-answer-bytes)", "fetch",
           volume, "--max-token-answer-bytes=100")  # fmt: skip


def test_a_workload_identity_token_answer_past_the_cap_fails_naming_the_flag(
    kms: Kms, keyvault: KeyVaultDouble, setup: Setup, tmp_path: Path
) -> None:
    token_file = tmp_path / "azure-identity-token"
    sa_token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6Y2VwaCJ9.c2ln"
    token_file.write_text(sa_token)
    client_id = str(uuid.uuid4())
    entry = kms_entry(keyvault, client_id, AZURE_AUTH_METHOD="workload-identity")
    config = write_config(tmp_path / "wi.json", {"wi": entry})
    wi = Setup(
        ("--config", config, "--kms-id", "wi"),
        {**setup.env, "AZURE_FEDERATED_TOKEN_FILE": str(token_file)},
        client_id,
    )
    volume = volume_id()
    passphrase = ok(kms, wi, "create", volume)
    bomb = _on_route(Fault("gzip-bomb", size=64 << 20), "aad", wi, volume)
    stderr, took = _timed_failure(kms, wi, keyvault, bomb, (1, "--max-token-answer-bytes"), volume)
    assert sa_token not in stderr and "access_token" not in stderr and passphrase.decode() not in stderr
    assert took < QUICK, f"the refusal took {took:.1f} s"
    assert ok(kms, wi, "fetch", volume) == passphrase
