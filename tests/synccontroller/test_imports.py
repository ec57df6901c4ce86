"""The sync controller, the one daemon that reads SecretSyncs, watches and elects a leader, does
all of it on kube/rest.py: a real run imports neither the kubernetes package nor pydantic."""

from __future__ import annotations

import pytest

from tests.imports import PROFILE, assert_lean
from tests.support import eventually
from tests.synccontroller.conftest import Cluster, holder_pid, lease_holder
from tests.synccontroller.test_sync_controller import decoded, setup_namespace, sync_manifest


def test_the_sync_controller_never_imports_the_kubernetes_package(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster.stop_controllers()
    for name, value in PROFILE.items():
        monkeypatch.setenv(name, value)
    controller = cluster.start_controller("--leader-elect=true")
    namespace, _ = setup_namespace(cluster, "lean")
    cluster.secret_sync(
        namespace, sync_manifest("lean", "kv", "app", [{"sourcePath": "password", "targetKey": "pw"}])
    )
    # Elected, listed, watched (the SecretSync came after the list), synced, status written.
    eventually(lambda: cluster.secret(namespace, "lean") is not None, timeout=60, what="the Secret")
    assert decoded(cluster.secret(namespace, "lean"), "pw") == "lean"
    eventually(
        lambda: (cluster.condition(namespace, "lean", "SecretCreated") or {}).get("status") == "True",
        timeout=30,
        what="the status",
    )
    assert holder_pid(lease_holder(cluster)) == controller.process.pid
    log = controller.log.read_text()
    cluster.stop_controllers()
    assert_lean(
        log,
        {
            "kvmount.kube.rest",
            "kvmount.synccontroller.informer",
            "kvmount.synccontroller.leader",
            "kvmount.secretsync.apply",
            "grpc",
        },
    )
