"""Secret sync through kubelet: a synced Secret read as an environment variable, gone with its pods."""

from __future__ import annotations

from tests.node.conftest import MOUNT, VAULT, Cluster
from tests.support import eventually


def test_synced_secret_feeds_env_and_goes_with_the_last_pod(cluster: Cluster) -> None:
    run = cluster.name("sync")
    cluster.kv.put_secret(VAULT, run, "from key vault")
    cluster.secret_provider_class(
        "app",
        [{"objectName": run, "objectType": "secret", "objectAlias": "password"}],
        secret_objects=[
            {"secretName": "db", "type": "Opaque", "data": [{"objectName": "password", "key": "pw"}]}
        ],
    )
    creds = cluster.service_principal()
    # The first pod mounts the volume, which makes the Secret.
    cluster.pod("mounter", "exec sleep 3600", cluster.csi_volume("app", creds))
    cluster.running("mounter")
    # The second reads it through secretKeyRef, and mounts the volume too (as upstream requires).
    cluster.pod(
        "reader",
        f'echo "PW=$PW"; ls {MOUNT}; exec sleep 3600',
        cluster.csi_volume("app", creds),
        env=[{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}],
    )
    cluster.running("reader")
    cluster.log_shows("reader", "PW=from key vault")
    secret = cluster.read("Secret", "db")
    assert secret["metadata"]["labels"]["secrets-store.csi.k8s.io/managed"] == "true"
    owners = [ref["kind"] for ref in secret["metadata"]["ownerReferences"]]
    assert owners == ["SecretProviderClassPodStatus"] * 2  # one per pod using it

    cluster.delete_pod("mounter")
    cluster.gone("Pod", "mounter")
    eventually(lambda: len(cluster.pod_statuses()) == 1, timeout=60, what="one pod status left")
    # Still used by "reader": the Secret stays.
    assert cluster.read("Secret", "db")["data"]["pw"]

    cluster.delete_pod("reader")
    cluster.gone("Secret", "db", timeout=90)
