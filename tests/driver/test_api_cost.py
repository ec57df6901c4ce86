"""What a rotation poll costs the API server, counted in the real kube-apiserver's audit log
(issue 26): tokens reused per audience, the pod status written only when it changes, and with
the watch-fed caches no request at all; the watches survive a restart of kube-apiserver."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as _client

from kvmount.driver.publish import Publisher
from kvmount.driver.request import VolumeRequest
from kvmount.driver.rotation import Rotator
from kvmount.kube.api_store import KubeStore
from kvmount.kube.node_caches import NodeCaches
from tests.driver.conftest import Pod
from tests.driver.test_rotation import (  # noqa: F401 (stack: a fixture)
    GROUP,
    VAULT,
    Namespace,
    Stack,
    in_process_publisher,
    stack,
)
from tests.support import eventually

k8s: Any = _client  # the client's partial annotations do not cover dict bodies
DRIVER_USER = "system:serviceaccount:kube-system:secrets-store-csi-driver"
AUDIENCES = 2  # deploy/driver/csidriver.yaml's tokenRequests
STATUSES = "secretproviderclasspodstatuses"


@dataclass
class Node:
    """The driver's parts in this process, as the driver's ServiceAccount, on node "test-node"."""

    stack: Stack
    store: KubeStore
    publisher: Publisher
    rotator: Rotator

    def publish(self, ns: Namespace, pod: Pod) -> None:
        node_secret = {"clientid": ns.client_id, "clientsecret": ns.client_secret}
        request = pod.publish_request("kv", secrets=node_secret)
        self.publisher.publish(
            VolumeRequest(request.volume_id, request.target_path, dict(request.volume_context), node_secret)
        )

    def poll(self) -> None:
        """One rotation poll of every served volume."""
        for state in self.publisher.served_volumes():
            self.rotator.rotate(state)

    def calls(self, mark: int) -> Counter[tuple[str, str]]:
        found = self.stack.kube.requests(DRIVER_USER, mark)
        return Counter((verb, resource) for verb, resource, _ in found)


@pytest.fixture
def node(
    stack: Stack,  # noqa: F811
    tmp_path: Path,
    kubelet_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Node]:
    monkeypatch.setenv("KUBECONFIG", str(stack.driver_kubeconfig))
    store, publisher = in_process_publisher(stack, tmp_path / "state", kubelet_dir)
    try:
        yield Node(stack, store, publisher, Rotator(publisher, store, "test-node", 3600.0))
    finally:
        for state in publisher.served_volumes():
            publisher.unpublish(state.volume_id, state.target_path)
        publisher.providers.close()


def mounted(node: Node, kubelet_dir: Path) -> tuple[Namespace, str, Pod]:
    ns = Namespace(node.stack)
    name = f"cost-{ns.name}"
    node.stack.kv.put_secret(VAULT, name, "one")
    ns.create_class("kv", [{"objectName": name, "objectType": "secret"}])
    pod = ns.create_pod(kubelet_dir, "web", "kv")
    node.publish(ns, pod)
    return ns, name, pod


def synced(caches: NodeCaches) -> bool:
    return all(c.synced.is_set() for c in (caches.pods, caches.classes, caches.statuses))


def test_unchanged_polls_reuse_tokens_and_write_no_status(node: Node, kubelet_dir: Path) -> None:
    _, name, pod = mounted(node, kubelet_dir)
    mark = node.stack.kube.audit_mark()
    node.poll()
    node.poll()
    calls = node.calls(mark)
    assert calls[("create", "serviceaccounts/token")] == AUDIENCES, calls
    writes = {k: n for k, n in calls.items() if k[1] == STATUSES}
    assert writes == {}, writes  # versions unchanged: the status is neither read nor written

    node.stack.kv.put_secret(VAULT, name, "two")
    time.sleep(1.2)  # past the provider's coalescing window, so the poll reads Key Vault anew
    mark = node.stack.kube.audit_mark()
    node.poll()
    assert (pod.target / name).read_text() == "two"
    calls = node.calls(mark)
    writes = {k: n for k, n in calls.items() if k[1] == STATUSES}
    assert writes == {("update", STATUSES): 1}, writes
    assert calls[("create", "serviceaccounts/token")] == 0, calls


def test_with_watches_an_unchanged_poll_makes_no_request(node: Node, kubelet_dir: Path) -> None:
    stop = threading.Event()
    mark = node.stack.kube.audit_mark()
    node.store.start_watches(stop)
    try:
        caches = node.store.caches
        assert caches is not None
        eventually(lambda: synced(caches), timeout=30, what="caches synced")
        ns, _, pod = mounted(node, kubelet_dir)
        eventually(lambda: caches.pods.get(ns.name, "web"), timeout=30, what="pod in the cache")
        node.poll()  # the first poll asks for the pod's tokens
        polls = node.stack.kube.audit_mark()
        node.poll()
        node.poll()
        calls = node.calls(polls)
        # The nodePublishSecretRef Secret is still read: no Secret watch here (test_secret_watch.py).
        assert {k: n for k, n in calls.items() if k != ("get", "secrets")} == {}, calls
        assert calls[("get", "secrets")] == 2
        watched = {r for (verb, r), _ in node.calls(mark).items() if verb == "watch"}
        assert watched == {"pods", "secretproviderclasses", STATUSES}  # the CSIDriver is read, not watched
        # Only the classes this node's pods name are held, not every class of the cluster.
        ns.create_class("unused", [{"objectName": "x", "objectType": "secret"}])
        eventually(lambda: caches.classes.get(ns.name, "kv"), timeout=30, what="used class held")
        assert all(k in caches.named_classes() for k in caches.classes.held())
        assert caches.classes.get(ns.name, "unused") is None
        assert (pod.target / f"cost-{ns.name}").read_text() == "one"
    finally:
        stop.set()


def test_watches_recover_after_kube_apiserver_restarts(node: Node, kubelet_dir: Path) -> None:
    stop = threading.Event()
    node.store.start_watches(stop)
    try:
        caches = node.store.caches
        assert caches is not None
        eventually(lambda: synced(caches), timeout=30, what="caches synced")
        ns, _, _ = mounted(node, kubelet_dir)
        eventually(
            lambda: caches.classes.get(ns.name, "kv") is not None, timeout=30, what="class in the cache"
        )
        watches = caches.classes.watches + caches.classes.lists
        node.stack.kube.restart_apiserver()
        body = {"metadata": {"labels": {"after": "restart"}}}
        custom = k8s.CustomObjectsApi(node.stack.kube.admin)
        custom.patch_namespaced_custom_object(GROUP, "v1", ns.name, "secretproviderclasses", "kv", body)

        def seen() -> bool:
            held = caches.classes.get(ns.name, "kv") or {}
            return bool(held.get("metadata", {}).get("labels", {}).get("after") == "restart")

        eventually(seen, timeout=60, what="the class change seen after the restart")
        assert caches.classes.watches + caches.classes.lists > watches  # it came back by itself
    finally:
        stop.set()


def test_rotation_workers_share_one_read_of_the_csidriver(node: Node) -> None:
    """The CSIDriver is read, not watched: when its copy expires, the workers that ask at once
    wait for one GET (20 nodes' workers made 53 GETs in 90 s before: bench/RESULTS.md)."""
    store = KubeStore(node.store.kubeconfig, node.store.driver_name)
    mark = node.stack.kube.audit_mark()
    start = threading.Barrier(16)

    def ask() -> None:
        start.wait()
        assert store.csidriver() is not None

    workers = [threading.Thread(target=ask) for _ in range(16)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert node.calls(mark) == Counter({("get", "csidrivers"): 1})
