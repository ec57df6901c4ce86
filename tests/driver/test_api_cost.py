"""What a rotation poll costs the API server, counted in the real kube-apiserver's audit log
(issue 26): tokens reused per audience, the pod status written only when it changes."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from kvmount.csi.provider_client import ProviderClients
from kvmount.driver.publish import Publisher
from kvmount.driver.request import VolumeRequest
from kvmount.driver.rotation import Rotator
from kvmount.driver.volumes import VolumeRegistry
from kvmount.kube.api_store import KubeStore
from kvmount.secretsync.writer import SecretSync
from kvmount.volume.target import KubeletRoot
from tests.driver.test_rotation import VAULT, Namespace, Stack, stack  # noqa: F401 (a fixture)

DRIVER_USER = "system:serviceaccount:kube-system:secrets-store-csi-driver"
AUDIENCES = 2  # deploy/driver/csidriver.yaml's tokenRequests
STATUSES = "secretproviderclasspodstatuses"


def test_unchanged_polls_reuse_tokens_and_write_no_status(
    stack: Stack,  # noqa: F811
    tmp_path: Path,
    kubelet_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = Namespace(stack)
    name = f"cost-{ns.name}"
    stack.kv.put_secret(VAULT, name, "one")
    ns.create_class("kv", [{"objectName": name, "objectType": "secret"}])
    pod = ns.create_pod(kubelet_dir, "web", "kv")
    monkeypatch.setenv("KUBECONFIG", str(stack.driver_kubeconfig))
    store = KubeStore(str(stack.driver_kubeconfig), node="test-node")
    providers = ProviderClients([str(stack.providers)], 4 << 20)
    publisher = Publisher(
        store,
        providers,
        VolumeRegistry(str(tmp_path / "state")),
        "test-node",
        8 << 20,
        3600.0,
        SecretSync(store.rest),
        kubelet_root=KubeletRoot(str(kubelet_dir)),
    )
    rotator = Rotator(publisher, store, "test-node", 3600.0)
    node_secret = {"clientid": ns.client_id, "clientsecret": ns.client_secret}
    request = pod.publish_request("kv", secrets=node_secret)
    try:
        publisher.publish(
            VolumeRequest(request.volume_id, request.target_path, dict(request.volume_context), node_secret)
        )
        (state,) = publisher.served_volumes()

        mark = stack.kube.audit_mark()
        rotator.rotate(state)
        rotator.rotate(state)
        calls = Counter((verb, resource) for verb, resource, _ in stack.kube.requests(DRIVER_USER, mark))
        assert calls[("create", "serviceaccounts/token")] == AUDIENCES, calls
        writes = {k: n for k, n in calls.items() if k[1] == STATUSES}
        assert writes == {}, writes  # versions unchanged: the status is neither read nor written

        stack.kv.put_secret(VAULT, name, "two")
        time.sleep(1.2)  # past the provider's coalescing window, so the poll reads Key Vault anew
        mark = stack.kube.audit_mark()
        rotator.rotate(publisher.served_volumes()[0])
        assert (pod.target / name).read_text() == "two"
        calls = Counter((verb, resource) for verb, resource, _ in stack.kube.requests(DRIVER_USER, mark))
        writes = {k: n for k, n in calls.items() if k[1] == STATUSES}
        assert writes == {("update", STATUSES): 1}, writes
        assert calls[("create", "serviceaccounts/token")] == 0, calls
    finally:
        publisher.unpublish("v", str(pod.target))
        providers.close()
