"""A mount that fails shows why on the pod, and the pod starts once the cause is gone."""

from __future__ import annotations

from tests.node.conftest import MOUNT, VAULT, Cluster
from tests.support import eventually


def test_missing_object_is_named_in_failed_mount_then_pod_starts(cluster: Cluster) -> None:
    missing = cluster.name("absent")
    cluster.secret_provider_class("app", [{"objectName": missing, "objectType": "secret"}])
    cluster.pod(
        "web",
        f"cat {MOUNT}/{missing}; echo; exec sleep 3600",
        cluster.csi_volume("app", cluster.service_principal()),
    )

    def failed_mount() -> str | None:
        messages = [e.message or "" for e in cluster.events("web") if e.reason == "FailedMount"]
        return next((m for m in messages if missing in m), None)

    message = eventually(failed_mount, timeout=60, what=f"a FailedMount event naming {missing}")
    assert "not found" in message.lower(), message
    status = cluster.read_pod("web")["status"]
    assert status["phase"] == "Pending"
    waiting = [c["state"].get("waiting", {}).get("reason") for c in status.get("containerStatuses", [])]
    assert waiting in ([], ["ContainerCreating"])

    cluster.kv.put_secret(VAULT, missing, "here now")
    # kubelet retries with a growing back-off (up to about two minutes).
    cluster.running("web", timeout=150)
    cluster.log_shows("web", "here now")
