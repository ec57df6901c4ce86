"""What one node's driver reads from the API server, held by at most four watches (issue 26):

* this node's pods (field selector ``spec.nodeName``);
* the SecretProviderClasses those pods' volumes name (one cluster-wide watch, holding only
  the classes in use here, so memory follows the node, not the cluster);
* this node's SecretProviderClassPodStatuses (the node label);
* with rotation on and where the driver's RBAC allows ``list`` and ``watch`` of Secrets, the
  nodePublishSecretRef Secrets labelled ``secrets-store.csi.k8s.io/used=true`` (upstream v1.5's
  filter; one cluster-wide watch, holding only those this node's pods name).

The driver's CSIDriver object is not watched: it changes when the driver is installed or
upgraded, and KubeStore reads it at most every few minutes, which costs the API server what a
watch's renewals cost, without a standing watch (the fourth is the Secrets').

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
from kvmount.kube.watchcache import Key, Listener, WatchCache, key_of

CLASS_ATTRIBUTE = "secretProviderClass"
# Upstream's label of the nodePublishSecretRef Secrets its rotation read from an informer.
SECRET_USED_LABEL = "secrets-store.csi.k8s.io/used"


def labelled_used(secret: dict[str, Any]) -> bool:
    labels = (secret.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(SECRET_USED_LABEL) == "true")


class NodeCaches:
    def __init__(self, rest: Callable[[], RestClient], node: str, driver_name: str) -> None:
        self.driver_name = driver_name
        self._rest = rest
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        custom = f"{GROUP}/{VERSION}"
        self.pods = WatchCache(
            "pods", rest, path("v1", "pods"), {"fieldSelector": f"spec.nodeName={node}"}, listener=self._pod
        )
        self.classes = WatchCache("secretproviderclasses", rest, path(custom, CLASSES), keep=self._class_used)
        self.statuses = WatchCache(
            "secretproviderclasspodstatuses",
            rest,
            path(custom, POD_STATUSES),
            {"labelSelector": f"{NODE_LABEL}={node}"},
        )
        self.secrets: WatchCache | None = None  # started by watch_secrets only

    def start(self, stop: threading.Event) -> None:
        """The pods first: which classes are kept depends on them."""
        self.pods.start(stop)
        self.statuses.start(stop)
        self._after_pods(self.classes, stop)

    def watch_secrets(self, stop: threading.Event) -> None:
        """Hold the labelled nodePublishSecretRef Secrets this node's pods name, from a watch."""
        with self._lock:
            if self.secrets is not None:
                return
            self.secrets = WatchCache(
                "secrets",
                self._rest,
                path("v1", "secrets"),
                {"labelSelector": f"{SECRET_USED_LABEL}=true"},
                keep=self._secret_used,
            )
        self._after_pods(self.secrets, stop)

    def _after_pods(self, cache: WatchCache, stop: threading.Event) -> None:
        def run() -> None:
            while not self.pods.synced.wait(1.0):
                if stop.is_set():
                    return
            cache.run(stop)

        threading.Thread(target=run, name=f"watch-{cache.name}", daemon=True).start()

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
            self.classes.prune(self._class_used)
            if self.secrets is not None:
                self.secrets.prune(self._secret_used)
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(kind, pod)

    def _class_used(self, spc: dict[str, Any]) -> bool:
        return key_of(spc) in self.named_classes()

    def _secret_used(self, secret: dict[str, Any]) -> bool:
        return key_of(secret) in self.named_secrets()

    def _volumes(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(namespace, csi) of each of this driver's volumes of this node's pods."""
        for pod in self.pods.items():
            namespace = str((pod.get("metadata") or {}).get("namespace") or "")
            for volume in (pod.get("spec") or {}).get("volumes") or []:
                csi = volume.get("csi") or {}
                if csi.get("driver") == self.driver_name:
                    yield namespace, csi

    def named_classes(self) -> set[Key]:
        return {
            (namespace, str((csi.get("volumeAttributes") or {}).get(CLASS_ATTRIBUTE, "")))
            for namespace, csi in self._volumes()
        }

    def named_secrets(self) -> set[Key]:
        return {
            (namespace, str((csi.get("nodePublishSecretRef") or {}).get("name") or ""))
            for namespace, csi in self._volumes()
            if csi.get("nodePublishSecretRef")
        }


def pod_annotations(events: Iterator[PodWatchEvent]) -> Iterator[tuple[str, dict[str, str]]]:
    """(uid, annotations) of each pod added or changed."""
    for event in events:
        meta = event.get("object", {}).get("metadata")
        if event.get("type") in ("ADDED", "MODIFIED") and meta is not None:
            yield str(meta.get("uid")), dict(meta.get("annotations", {}))
