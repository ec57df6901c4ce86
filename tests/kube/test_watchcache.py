"""kube/watchcache.py against the real kube-apiserver: a resourceVersion the server no longer
has is answered 410 Gone, and the cache lists again and serves what the server holds.

No mock: kube-apiserver is restarted while an object is deleted in etcd itself. The restarted
server's own watch cache starts from etcd's newest revision, so the cache's watch, resumed from
the revision it had, is refused as too old (410), and the deletion, which no watch event ever
carried, can reach the cache only through the re-list.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as _client

from kvmount.kube.kubeconfig import from_kubeconfig
from kvmount.kube.rest import RestClient, path
from kvmount.kube.watchcache import WatchCache
from tests.peers.kube import KubeAPIServer
from tests.support import eventually

k8s: Any = _client


@pytest.fixture
def rest(kube_apiserver: KubeAPIServer) -> Iterator[RestClient]:
    made = RestClient(from_kubeconfig([str(kube_apiserver.kubeconfig)]))
    yield made
    made.close()


def test_a_watch_too_old_for_the_server_lists_again(kube_apiserver: KubeAPIServer, rest: RestClient) -> None:
    core = k8s.CoreV1Api(kube_apiserver.admin)
    ns = f"wc-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": ns}})
    for name in ("kept", "dropped"):
        core.create_namespaced_config_map(ns, {"metadata": {"name": name}, "data": {"v": name}})
    events: list[tuple[str, str]] = []
    cache = WatchCache(
        "configmaps",
        lambda: rest,
        path("v1", "configmaps", ns),
        listener=lambda kind, obj: events.append((kind, obj["metadata"]["name"])),
    )
    stop = threading.Event()
    cache.start(stop)
    try:
        eventually(lambda: len(cache) == 2 and cache.watches >= 1, timeout=30, what="listed and watching")
        assert cache.lists == 1

        deleted: list[int] = []
        kube_apiserver.restart_apiserver(
            while_down=lambda: deleted.append(
                kube_apiserver.delete_from_etcd(f"/registry/configmaps/{ns}/dropped")
            )
        )
        assert deleted == [1]

        eventually(lambda: cache.get(ns, "dropped") is None, timeout=90, what="the deletion seen")
        assert cache.lists == 2  # only a list can know of it: no watch event carried it
        assert ("DELETED", "dropped") in events
        held = cache.get(ns, "kept")
        assert held is not None and held["data"] == {"v": "kept"}

        # Watching again from the new list's version: later changes arrive as events.
        core.create_namespaced_config_map(ns, {"metadata": {"name": "later"}, "data": {"v": "later"}})
        core.patch_namespaced_config_map("kept", ns, {"data": {"v": "changed"}})
        eventually(lambda: cache.get(ns, "later") is not None, timeout=30, what="a new object seen")
        eventually(
            lambda: (cache.get(ns, "kept") or {}).get("data") == {"v": "changed"},
            timeout=30,
            what="a change seen",
        )
        assert cache.lists == 2
    finally:
        stop.set()
        core.delete_namespace(ns)
