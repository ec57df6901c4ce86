"""A pod's secrets through a real kubelet: mount, pod status, unmount and garbage collection on delete."""

from __future__ import annotations

from kvmount.volume import mounts
from tests.certs import make_chain
from tests.node.conftest import MOUNT, VAULT, Cluster
from tests.support import eventually


def test_pod_reads_secret_key_and_certificate(cluster: Cluster) -> None:
    kv, run = cluster.kv, cluster.name("obj")
    value = f"secret value {run}"
    kv.put_secret(VAULT, f"{run}-s", value)
    kv.create_key(VAULT, f"{run}-k")
    kv.import_certificate(VAULT, f"{run}-c", make_chain(f"{run}.example").pfx())
    cluster.secret_provider_class(
        "app",
        [
            {"objectName": f"{run}-s", "objectType": "secret", "objectAlias": "password"},
            {"objectName": f"{run}-k", "objectType": "key", "objectAlias": "key.pem"},
            {"objectName": f"{run}-c", "objectType": "cert", "objectAlias": "cert.pem"},
        ],
    )
    cluster.pod(
        "web",
        f"cat {MOUNT}/password; echo; cat {MOUNT}/key.pem {MOUNT}/cert.pem; echo END; exec sleep 3600",
        cluster.csi_volume("app", cluster.service_principal()),
    )
    cluster.running("web")
    logs = cluster.log_shows("web", "END")
    assert value in logs
    assert "-----BEGIN PUBLIC KEY-----" in logs
    assert "-----BEGIN CERTIFICATE-----" in logs


def test_pod_status_then_unmount_and_garbage_collection_on_delete(cluster: Cluster) -> None:
    kv, run = cluster.kv, cluster.name("obj")
    version = kv.put_secret(VAULT, run, "v1")["id"].rsplit("/", 1)[1]
    cluster.secret_provider_class("app", [{"objectName": run, "objectType": "secret"}])
    cluster.pod("web", "exec sleep 3600", cluster.csi_volume("app", cluster.service_principal()))
    pod = cluster.running("web")
    target = cluster.volume_dir(pod) / "mount"
    assert mounts.is_mounted(str(target))

    (status,) = eventually(cluster.pod_statuses, timeout=30, what="a SecretProviderClassPodStatus")
    assert status["status"]["podName"] == "web"
    assert status["status"]["secretProviderClassName"] == "app"
    assert status["status"]["mounted"] is True
    assert status["status"]["objects"] == [{"id": f"secret/{run}", "version": version}]
    (owner,) = status["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Pod", "web", pod["metadata"]["uid"])

    cluster.delete_pod("web")
    cluster.gone("Pod", "web")
    assert not mounts.is_mounted(str(target))
    assert not target.exists()
    eventually(lambda: cluster.pod_statuses() == [], timeout=60, what="the pod status garbage-collected")
