"""The sync controller's loop: what to sync when, and only while this replica leads.

A SecretSync is synced when it appears, when its spec changes (a new
``forceSynchronization`` value included), when the SecretProviderClass it
names changes, every ``interval``, and after a failure with a growing delay.
With leader election, replicas wait on a coordination.k8s.io Lease; the one
that holds it syncs, and stops writing as soon as it can no longer be sure it
still holds it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kvmount.kube.classes import CLASSES, GROUP, VERSION
from kvmount.kube.rest import RestClient
from kvmount.synccontroller import api
from kvmount.synccontroller.informer import Informer, Key
from kvmount.synccontroller.queue import WorkQueue
from kvmount.synccontroller.reconcile import NotLeading, Reconciler

log = logging.getLogger(__name__)


class Controller:
    def __init__(
        self,
        reconciler: Reconciler,
        rest: Callable[[], RestClient],
        interval: float,
        workers: int,
        controller_name: str = "",
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.reconciler = reconciler
        self.interval = interval
        self.workers = workers
        self.controller_name = controller_name
        self.leading = leading
        self.queue = WorkQueue()
        self.syncs = Informer(rest, api.GROUP, api.VERSION, api.PLURAL, self._on_sync, self._on_gone)
        self.classes = Informer(rest, GROUP, VERSION, CLASSES, self._on_class)

    def _mine(self, doc: dict[str, Any]) -> bool:
        # An empty name is anyone's; another controller's SecretSyncs are left to it.
        named = str((doc.get("spec") or {}).get("secretSyncControllerName") or "")
        return not named or not self.controller_name or named == self.controller_name

    def _on_sync(self, doc: dict[str, Any]) -> None:
        if self._mine(doc):
            meta = doc.get("metadata") or {}
            self.queue.add((str(meta.get("namespace")), str(meta.get("name"))))

    def _on_gone(self, key: Key) -> None:
        # The Secret goes with its owner through the garbage collector.
        self.queue.forget(key)

    def _on_class(self, doc: dict[str, Any]) -> None:
        meta = doc.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        for ss in self.syncs.objects():
            ss_meta, spec = ss.get("metadata") or {}, ss.get("spec") or {}
            if ss_meta.get("namespace") == namespace and spec.get("secretProviderClassName") == name:
                self._on_sync(ss)

    def run(self, stop: threading.Event) -> None:
        """Sync until ``stop`` is set (or leadership is lost: the caller then stops)."""
        self.syncs.start(stop)
        self.classes.start(stop)
        workers = [
            threading.Thread(target=self._work, args=(stop,), daemon=True, name=f"sync-worker-{i}")
            for i in range(self.workers)
        ]
        for worker in workers:
            worker.start()
        log.info("sync controller running", extra={"workers": self.workers, "interval": self.interval})
        while not stop.wait(self.interval):
            for doc in self.syncs.objects():
                self._on_sync(doc)
        self.queue.close()
        for worker in workers:
            worker.join(timeout=30)

    def _work(self, stop: threading.Event) -> None:
        while not stop.is_set():
            key = self.queue.get()
            if key is None:
                return
            try:
                if not self.leading():
                    raise NotLeading()
                self._sync(key)
            except NotLeading:
                log.warning("not leading any more: syncs stop")
                stop.set()
                return
            finally:
                self.queue.done(key)

    def _sync(self, key: Any) -> None:
        namespace, name = key
        start = time.monotonic()
        try:
            ss = self.reconciler.get(namespace, name)
            if ss is None:
                self.queue.forget(key)
                return
            ok = self.reconciler.reconcile(ss)
        except NotLeading:
            raise
        except Exception as err:  # an API or connection failure: try again later
            log.warning(
                "sync error", extra={"secretsync": f"{namespace}/{name}", "error": type(err).__name__}
            )
            ok = False
        if ok:
            self.queue.forget(key)
        else:
            delay = self.queue.retry(key)
            log.info(
                "sync retry scheduled",
                extra={
                    "secretsync": f"{namespace}/{name}",
                    "after": delay,
                    "seconds": round(time.monotonic() - start, 3),
                },
            )
