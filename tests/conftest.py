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


# ---------------------------------------------------------------- Kubernetes API server
# Owner: tests/peers. A real etcd + kube-apiserver (tests/peers/kube.py); binaries
# from scripts/peers/kube-apiserver.sh.
import os  # noqa: E402

from tests.peers.kube import KubeAPIServer, binaries  # noqa: E402


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def kube_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    """One API server for the whole session (admin kubeconfig: ``.kubeconfig``).

    Shared state: create objects in a namespace of your own (uuid). Skipped when
    the binaries are missing, except under CI (env CI set), where that fails.
    """
    if binaries() is None:
        reason = "etcd or kube-apiserver not installed: run scripts/peers/kube-apiserver.sh"
        if in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    server = KubeAPIServer(tmp_path_factory.mktemp("kube")).start()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- end Kubernetes API server
