"""Shared fixtures. Each block is owned by one area; keep blocks separate."""

from __future__ import annotations

# ---------------------------------------------------------------- Key Vault double
# Owner: tests/peers. The double is documented in tests/peers/keyvault_double.py.
from collections.abc import Iterator

import pytest

from tests.peers.keyvault_double import KeyVaultDouble


@pytest.fixture(scope="session")
def keyvault() -> Iterator[KeyVaultDouble]:
    """One in-process Key Vault/AAD/IMDS/NMI double for the whole session.

    Shared state: use unique object names (e.g. uuid) and undo latency/outage
    settings you change. Needs scripts/peers/hosts.sh for the vault host names.
    """
    double = KeyVaultDouble().start()
    try:
        yield double
    finally:
        double.stop()


@pytest.fixture
def kv_env(keyvault: KeyVaultDouble, monkeypatch: pytest.MonkeyPatch) -> KeyVaultDouble:
    """The double, with REQUESTS_CA_BUNDLE/SSL_CERT_FILE/AZURE_POD_IDENTITY_AUTHORITY_HOST set."""
    for name, value in keyvault.env().items():
        monkeypatch.setenv(name, value)
    return keyvault


# ---------------------------------------------------------------- end Key Vault double
