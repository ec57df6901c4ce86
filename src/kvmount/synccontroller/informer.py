"""List, then watch from the list's resourceVersion, for ever: the objects of one custom resource.

Each object is handed to ``on_change`` when it is first seen and whenever its
``metadata.generation`` moves (a spec change; status writes do not count), and
its key to ``on_delete`` when it goes. A watch that ends is resumed; one that
has fallen too far behind (410 Gone) starts over with a fresh list.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kvmount.kube.rest import ApiError, RestClient, path
from kvmount.kube.watchcache import watch_seconds

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0

Key = tuple[str, str]


def _key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class Informer:
    def __init__(
        self,
        rest: Callable[[], RestClient],
        group: str,
        version: str,
        plural: str,
        on_change: Callable[[dict[str, Any]], None],
        on_delete: Callable[[Key], None] = lambda key: None,
    ) -> None:
        self._rest = rest
        self.plural = plural
        self._where = path(f"{group}/{version}", plural)
        self.on_change = on_change
        self.on_delete = on_delete
        self._generations: dict[Key, int] = {}
        self._objects: dict[Key, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()

    def objects(self) -> list[dict[str, Any]]:
        """The objects as last seen."""
        with self._lock:
            return list(self._objects.values())

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                version = self._list()
                self.synced.set()
                while not stop.is_set() and version:
                    version = self._watch(version)
            except Exception as err:  # any API or connection failure: list again shortly
                log.warning(
                    "list/watch failed; retrying",
                    extra={"resource": self.plural, "error": type(err).__name__},
                )
                stop.wait(RETRY_SECONDS)

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), daemon=True, name=f"watch-{self.plural}")
        thread.start()
        return thread

    def _list(self) -> str:
        found = self._rest().get(self._where)
        items = list(found.get("items") or [])
        seen = {_key(obj) for obj in items}
        with self._lock:
            gone = [key for key in self._objects if key not in seen]
        for key in gone:
            self._forget(key)
        for obj in items:
            self._seen(obj)
        return str((found.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, version: str) -> str:
        """Watch from ``version``; returns where to resume, or "" to list again."""
        try:
            for event in self._rest().watch(self._where, watch_seconds(), version):
                obj = event.get("object") or {}
                kind = event.get("type")
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "DELETED":
                    self._forget(_key(obj))
                elif kind in ("ADDED", "MODIFIED"):
                    self._seen(obj)
        except ApiError as err:
            if err.status == 410:  # too far behind: the server no longer has that version
                return ""
            raise
        return version

    def _seen(self, obj: dict[str, Any]) -> None:
        key = _key(obj)
        generation = int((obj.get("metadata") or {}).get("generation") or 0)
        with self._lock:
            changed = self._generations.get(key) != generation
            self._generations[key] = generation
            self._objects[key] = obj
        if changed:
            self.on_change(obj)

    def _forget(self, key: Key) -> None:
        with self._lock:
            self._generations.pop(key, None)
            self._objects.pop(key, None)
        self.on_delete(key)
