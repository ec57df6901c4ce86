"""The sync controller's provider with --serve-stale-on-error (the chart's staleOnError reaches it
too): through a Key Vault outage a new SecretSync of the same service account gets its Secret from
the content that account was served, with a StaleContentServed event; another account's fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.provider.conftest import start_provider, stop_provider
from tests.support import eventually
from tests.synccontroller.conftest import Cluster
from tests.synccontroller.test_sync_controller import decoded, setup_namespace, sync_manifest

DATA = [{"sourcePath": "password", "targetKey": "pw"}]


@pytest.fixture(scope="module")
def stale_controller(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    provider = start_provider(
        Path(tmp_path_factory.mktemp("stale-provider")), cluster.kv, "--serve-stale-on-error=10m"
    )
    try:
        cluster.start_controller(provider=provider)
        yield cluster
    finally:
        cluster.kv.set_outage(0)
        cluster.stop_controllers()
        stop_provider(provider)


def test_a_new_secret_sync_of_the_same_account_is_synced_through_an_outage(stale_controller: Cluster) -> None:
    cluster = stale_controller
    namespace, kv_name = setup_namespace(cluster, "kept")
    cluster.secret_sync(namespace, sync_manifest("first", "kv", "app", DATA))
    eventually(lambda: cluster.secret(namespace, "first") is not None, timeout=60, what="Secret first")
    cluster.service_account(namespace, "other")
    cluster.kv.set_outage(503)
    try:
        cluster.secret_sync(namespace, sync_manifest("second", "kv", "app", DATA))
        cluster.secret_sync(namespace, sync_manifest("third", "kv", "other", DATA))
        eventually(lambda: cluster.secret(namespace, "second") is not None, timeout=60, what="Secret second")
        assert decoded(cluster.secret(namespace, "second"), "pw") == "kept"

        def stale_event() -> str | None:
            events = cluster.core.list_namespaced_event(
                namespace, field_selector="involvedObject.name=second"
            ).items
            return next((e.message for e in events if e.reason == "StaleContentServed"), None)

        note = eventually(stale_event, timeout=30, what="a StaleContentServed event on SecretSync second")
        assert f"secret {kv_name!r}" in note and "503" in note, note

        def failed() -> dict[str, str] | None:
            condition = cluster.condition(namespace, "third", "SecretCreated")
            return condition if condition and condition["reason"] == "ProviderError" else None

        condition = eventually(failed, timeout=60, what="another account's SecretSync fails")
        assert "503" in condition["message"], condition["message"]
        assert cluster.secret(namespace, "third") is None
    finally:
        cluster.kv.set_outage(0)
