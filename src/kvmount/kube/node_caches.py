"""What one node's driver reads from the API server, held by four watches (issue 26):

* this node's pods (field selector ``spec.nodeName``);
* the SecretProviderClasses those pods' volumes name (one cluster-wide watch, holding only
  the classes in use here, so memory follows the node, not the cluster);
* this node's SecretProviderClassPodStatuses (the node label);
* the driver's own CSIDriver object (field selector ``metadata.name``).

Readers fall back to a direct read while a cache is not synced, and on a miss.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from kvmount.kube.classes import CLASSES, GROUP, VERSION
from kvmount.kube.objects import PodWatchEvent
from kvmount.kube.podstatus import NODE_LABEL, POD_STATUSES
from kvmount.kube.rest import RestClient, path
from kvmount.kube.watchcache import Key, Listener, WatchCache

CLASS_ATTRIBUTE = "secretProviderClass"


class NodeCaches:
    def __init__(self, rest: Callable[[], RestClient], node: str, driver_name: str) -> None:
        self.driver_name = driver_name
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        custom = f"{GROUP}/{VERSION}"
        self.pods = WatchCache(
            "pods", rest, path("v1", "pods"), {"fieldSelector": f"spec.nodeName={node}"}, listener=self._pod
        )
        self.classes = WatchCache("secretproviderclasses", rest, path(custom, CLASSES), keep=self._in_use)
        self.statuses = WatchCache(
            "secretproviderclasspodstatuses",
            rest,
            path(custom, POD_STATUSES),
            {"labelSelector": f"{NODE_LABEL}={node}"},
        )
        self.driver = WatchCache(
            "csidriver",
            rest,
            path("storage.k8s.io/v1", "csidrivers"),
            {"fieldSelector": f"metadata.name={driver_name}"},
        )

    def start(self, stop: threading.Event) -> None:
        """The pods first: which classes are kept depends on them."""
        self.pods.start(stop)
        for cache in (self.statuses, self.driver):
            cache.start(stop)

        def classes() -> None:
            while not self.pods.synced.wait(1.0):
                if stop.is_set():
                    return
            self.classes.run(stop)

        threading.Thread(target=classes, name="watch-secretproviderclasses", daemon=True).start()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """``listener(type, pod)`` for each pod event; returns the way to unsubscribe."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners.remove(listener)

        return unsubscribe

    def _pod(self, kind: str, pod: dict[str, Any]) -> None:
        if kind == "DELETED":
            self.classes.prune(self._in_use)
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(kind, pod)

    def _in_use(self, spc: dict[str, Any]) -> bool:
        meta = spc.get("metadata") or {}
        return (str(meta.get("namespace") or ""), str(meta.get("name") or "")) in self.named_classes()

    def named_classes(self) -> set[Key]:
        named = set()
        for pod in self.pods.items():
            namespace = str((pod.get("metadata") or {}).get("namespace") or "")
            for volume in (pod.get("spec") or {}).get("volumes") or []:
                csi = volume.get("csi") or {}
                if csi.get("driver") == self.driver_name:
                    named.add((namespace, str((csi.get("volumeAttributes") or {}).get(CLASS_ATTRIBUTE, ""))))
        return named


def pod_annotations(events: Iterator[PodWatchEvent]) -> Iterator[tuple[str, dict[str, str]]]:
    """(uid, annotations) of each pod added or changed."""
    for event in events:
        meta = event.get("object", {}).get("metadata")
        if event.get("type") in ("ADDED", "MODIFIED") and meta is not None:
            yield str(meta.get("uid")), dict(meta.get("annotations", {}))
