"""110 volumes of one node syncing one Secret (issue 26): one write per node per change, no
false FailedToCreateSecret. Requests are counted in the real kube-apiserver's audit log."""

from __future__ import annotations

import base64
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client as _client

from tests.driver.conftest import Pod
from tests.driver.test_api_cost import (  # noqa: F401 (node, stack: fixtures)
    DRIVER_USER,
    Node,
    node,
    synced,
)
from tests.driver.test_rotation import VAULT, Namespace, stack  # noqa: F401
from tests.support import eventually

k8s: Any = _client
PODS = 110  # kubelet's default pods per node
SHARED = "shared"


@pytest.fixture
def watching(node: Node) -> Iterator[Node]:  # noqa: F811
    """The node with its watch-fed caches running and synced, as the driver runs."""
    stop = threading.Event()
    node.store.start_watches(stop)
    try:
        caches = node.store.caches
        assert caches is not None
        eventually(lambda: synced(caches), timeout=30, what="caches synced")
        yield node
    finally:
        stop.set()


def sharing(at: Node, kubelet_dir: Any) -> tuple[Namespace, str, list[Pod]]:
    """A class whose secretObjects sync one Secret, and PODS pods on this at using it."""
    ns = Namespace(at.stack)
    name = f"shared-{ns.name}"
    at.stack.kv.put_secret(VAULT, name, "one")
    ns.create_class(
        "kv",
        [{"objectName": name, "objectType": "secret"}],
        [{"secretName": SHARED, "type": "Opaque", "data": [{"objectName": name, "key": "value"}]}],
    )
    return ns, name, [ns.create_pod(kubelet_dir, f"web-{i}", "kv") for i in range(PODS)]


def publish_all(at: Node, ns: Namespace, pods: list[Pod]) -> Counter[str]:
    """Publish every pod's volume at once, as kubelet does; the driver's requests on the Secret."""
    mark = at.stack.kube.audit_mark()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda pod: at.publish(ns, pod), pods))
    return secret_calls(at, mark)


def secret_calls(at: Node, mark: int) -> Counter[str]:
    found = at.stack.kube.requests(DRIVER_USER, mark)
    return Counter(verb for verb, resource, name in found if resource == "secrets" and name == SHARED)


def false_warnings(ns: Namespace) -> list[Any]:
    return [e for e in ns.core.list_namespaced_event(ns.name).items if e.reason == "FailedToCreateSecret"]


def test_pods_of_one_replicaset_cost_one_create_then_one_write_per_change(
    watching: Node, kubelet_dir: Any
) -> None:
    """A Deployment's replicas: one owner (their ReplicaSet) for all, so after the create every
    other volume finds the Secret as it needs it and asks nothing; a change is one write."""
    ns, name, pods = sharing(watching, kubelet_dir)
    labels = {"app": "web"}
    template = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    rs = k8s.AppsV1Api(watching.stack.kube.admin).create_namespaced_replica_set(
        ns.name,
        {
            "metadata": {"name": "web-5d4f"},
            "spec": {"replicas": 0, "selector": {"matchLabels": labels}, "template": template},
        },
    )
    ref = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "web-5d4f",
        "uid": rs.metadata.uid,
        "controller": True,
    }
    for pod in pods:
        ns.core.patch_namespaced_pod(
            pod.name, ns.name, {"metadata": {"labels": labels, "ownerReferences": [ref]}}
        )
    caches = watching.store.caches
    assert caches is not None

    def owned(pod: Pod) -> bool:
        held = caches.pods.get(ns.name, pod.name) or {}
        return bool(held.get("metadata", {}).get("ownerReferences"))

    eventually(lambda: all(owned(p) for p in pods), timeout=60, what="the pods' owners in the cache")

    mark = watching.stack.kube.audit_mark()
    assert publish_all(watching, ns, pods) == {"get": 1, "create": 1}
    assert ("get", "pods") not in Counter(
        (v, r) for v, r, _ in watching.stack.kube.requests(DRIVER_USER, mark)
    )
    assert false_warnings(ns) == []
    owners = ns.secret(SHARED).metadata.owner_references
    assert [(o.kind, o.uid) for o in owners] == [("ReplicaSet", rs.metadata.uid)]

    watching.stack.kv.put_secret(VAULT, name, "two")
    mark = watching.stack.kube.audit_mark()

    def rotated() -> bool:
        """One poll of every volume; whether all have the new content (a poll within the
        provider's coalescing window may still see the old)."""
        watching.poll()
        return all((p.target / name).read_text() == "two" for p in pods)

    eventually(rotated, timeout=60, what="every volume rotated")
    assert secret_calls(watching, mark) == {"update": 1}
    assert base64.b64decode(ns.secret(SHARED).data["value"]) == b"two"
    assert false_warnings(ns) == []


def test_bare_pods_owners_are_batched(watching: Node, kubelet_dir: Any) -> None:
    """Bare pods: each volume's SecretProviderClassPodStatus is an owner, so owners accumulate;
    the write in progress takes every owner queued behind it, far fewer than one per pod."""
    ns, _, pods = sharing(watching, kubelet_dir)
    calls = publish_all(watching, ns, pods)
    assert len(ns.secret(SHARED).metadata.owner_references) == PODS
    assert false_warnings(ns) == []
    assert (calls["get"], calls["create"]) == (1, 1), calls
    # One per pod (PODS - 1) before owners were batched. How many writes carry several owners
    # depends on how the 16 concurrent publishes interleave: 32 to 39 updates measured on two
    # idle cores, more on a loaded machine, so the bound says only that batching happened.
    assert calls["update"] < PODS - 1, calls
    assert set(calls) <= {"get", "create", "update"}, calls
