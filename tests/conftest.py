"""Shared fixtures and the test tiers. Each block is owned by one area; keep blocks separate."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.peers.keyvault_double import KeyVaultDouble
from tests.peers.kube import KubeAPIServer, binaries
from tests.peers.upstream import UpstreamDriver, UpstreamProvider
from tests.support import peer_missing, starts_process, tiers

# ---------------------------------------------------------------- tiers
# Owner: tests/support. unit, peer, node (tests/support/tiers.py; registered in pyproject.toml).


def pytest_configure(config: pytest.Config) -> None:
    tiers.guard_processes()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(tiers.tier_of(item))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    tiers.entering(item)  # before the test's fixtures start anything


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    tiers.leaving()


# ---------------------------------------------------------------- Key Vault double
# Owner: tests/peers. The double is documented in tests/peers/keyvault_double/__init__.py.


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


# ---------------------------------------------------------------- Kubernetes API server
# Owner: tests/peers. A real etcd + kube-apiserver (tests/peers/kube.py); binaries
# from scripts/peers/kube-apiserver.sh.


@pytest.fixture(scope="session")
@starts_process
def kube_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    """One API server for the whole session (admin kubeconfig: ``.kubeconfig``).

    Shared state: create objects in a namespace of your own (uuid). Skipped when
    the binaries are missing, except under CI (env CI set), where that fails.
    """
    if binaries() is None:
        peer_missing("etcd or kube-apiserver not installed: run scripts/peers/kube-apiserver.sh")
    server = KubeAPIServer(tmp_path_factory.mktemp("kube")).start()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- Upstream peers
# Owner: tests/peers. Upstream's provider v1.8.2 and driver v1.6.1 (tests/peers/upstream.py),
# built by scripts/peers/upstream-*.sh; a missing binary skips, or fails under CI.

CRDS = Path(__file__).resolve().parents[1] / "deploy" / "crds"


@pytest.fixture(scope="module")
@starts_process
def upstream_provider(
    keyvault: KeyVaultDouble, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., UpstreamProvider]]:
    """``upstream_provider(*flags)``: upstream's provider in front of the double.

    One process per flag set, reused within the module and stopped at its end;
    it serves ``<its directory>/azure.sock``, so that directory is a driver's
    provider volume.
    """
    started: dict[tuple[str, ...], UpstreamProvider] = {}

    def start(*flags: str) -> UpstreamProvider:
        if flags not in started:
            workdir = tmp_path_factory.mktemp("upstream-provider")
            started[flags] = UpstreamProvider(workdir, keyvault, *flags)
        return started[flags]

    try:
        yield start
    finally:
        for provider in started.values():
            provider.stop()


@pytest.fixture(scope="session")
def secrets_store_api(kube_apiserver: KubeAPIServer) -> KubeAPIServer:
    """The API server with the Secrets Store CRDs of deploy/crds applied."""
    for path in sorted(CRDS.glob("*.yaml")):
        kube_apiserver.apply_yaml(path)
    return kube_apiserver


@pytest.fixture(scope="module")
@starts_process
def upstream_driver(
    secrets_store_api: KubeAPIServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., UpstreamDriver]]:
    """``upstream_driver(provider_dir, *flags)``: upstream's driver on node "test-node".

    It talks to the API server as admin; each call starts one more process, all
    stopped at the module's end.
    """
    started: list[UpstreamDriver] = []

    def start(provider_dir: Path, *flags: str) -> UpstreamDriver:
        workdir = tmp_path_factory.mktemp("upstream-driver")
        started.append(UpstreamDriver(workdir, provider_dir, secrets_store_api.kubeconfig, *flags))
        return started[-1]

    try:
        yield start
    finally:
        for driver in started:
            driver.stop()


# ---------------------------------------------------------------- kubelet root
# Owner: tests/driver. pytest's base temporary directory holds every test's tmp_path, so
# every kubelet directory a test makes; a driver the tests start takes it as --kubelet-root-dir.

BASE_TEMP: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _base_temp(tmp_path_factory: pytest.TempPathFactory) -> None:
    BASE_TEMP[:] = [tmp_path_factory.getbasetemp()]
