"""A collection of the API server mirrored in memory: listed once, then kept current by a watch.

The watch resumes from the last resourceVersion seen (bookmarks included), so a watch the server
ends costs one request, not a list; a resourceVersion the server no longer has (410 Gone) lists
again; while the API server is away the copy is served as last seen and the watch is retried with
a jittered backoff. ``keep`` decides which objects are held, so memory follows what the node uses.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

from kvmount.kube.errors import StoreError
from kvmount.kube.rest import ApiError, RestClient, Unreachable

# The server ends a watch after WATCH_SECONDS to twice that, drawn per watch as client-go's
# reflectors do, so that the watches of many nodes started together (after an API server
# restart) are not renewed together; each is then resumed from its resourceVersion.
WATCH_SECONDS = 300


def watch_seconds() -> int:
    return random.randint(WATCH_SECONDS, 2 * WATCH_SECONDS)


# A list is read in pages of this many objects, so no answer is unbounded.
PAGE = 500
BACKOFF_START, BACKOFF_MAX = 0.5, 30.0

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
Listener = Callable[[str, dict[str, Any]], None]

log = logging.getLogger(__name__)


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class WatchCache:
    """Thread-safe. ``synced`` is set once the first list is in; until then readers ask the server."""

    def __init__(
        self,
        name: str,
        rest: Callable[[], RestClient],
        where: str,
        query: Mapping[str, str] | None = None,
        keep: Callable[[dict[str, Any]], bool] = lambda _: True,
        listener: Listener | None = None,
    ) -> None:
        self.name = name
        self._rest = rest
        self._where = where
        self._query = dict(query or {})
        self._keep = keep
        self._listener = listener
        self._objects: dict[Key, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()
        # How many lists and watches were started: tests and logs see a re-list after 410 Gone.
        self.lists = self.watches = 0

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.get((namespace, name))

    def held(self) -> list[Key]:
        with self._lock:
            return list(self._objects)

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._objects.values())

    def offer(self, obj: dict[str, Any]) -> None:
        """Hold an object read directly (a miss), unless the watch already has it or a newer copy."""
        with self._lock:
            self._objects.setdefault(key_of(obj), obj)

    def prune(self, keep: Callable[[dict[str, Any]], bool]) -> None:
        """Drop the objects no longer kept (what the node uses shrank)."""
        with self._lock:
            self._objects = {k: o for k, o in self._objects.items() if keep(o)}

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name=f"watch-{self.name}", daemon=True)
        thread.start()
        return thread

    def run(self, stop: threading.Event) -> None:
        version, delay = "", BACKOFF_START
        while not stop.is_set():
            try:
                if not version:
                    version = self._list()
                    self.synced.set()
                version = self._watch(version, stop)
                delay = BACKOFF_START  # the server ended the watch: resume at once
                continue
            except ApiError as err:
                if err.status == 410:
                    log.info("watch expired; listing again", extra={"cache": self.name})
                    version = ""
                    continue
                log.warning("watch failed", extra={"cache": self.name, "error": str(err)[:200]})
            except Unreachable as err:
                log.warning(
                    "API server unreachable; watch retried", extra={"cache": self.name, "error": str(err)}
                )
            except StoreError as err:  # no usable configuration (yet): reads fail the same way
                log.warning("cannot watch; retried", extra={"cache": self.name, "error": str(err)})
            stop.wait(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, BACKOFF_MAX)

    def _list(self) -> str:
        self.lists += 1
        objects: dict[Key, dict[str, Any]] = {}
        token, version = "", ""
        while True:
            page: dict[str, str | int] = {**self._query, "limit": PAGE}
            if token:
                page["continue"] = token
            answer = self._rest().get(self._where, **page)
            for obj in answer.get("items") or []:
                if self._keep(obj):
                    objects[key_of(obj)] = obj
            meta = answer.get("metadata") or {}
            version, token = str(meta.get("resourceVersion") or ""), str(meta.get("continue") or "")
            if not token:
                break
        with self._lock:
            gone = [o for k, o in self._objects.items() if k not in objects]
            self._objects = objects
        if self._listener is not None:
            for obj in objects.values():
                self._listener("ADDED", obj)
            for obj in gone:
                self._listener("DELETED", obj)
        return version

    def _watch(self, version: str, stop: threading.Event) -> str:
        self.watches += 1
        events = self._rest().watch(
            self._where, watch_seconds(), version, allowWatchBookmarks="true", **self._query
        )
        for event in events:
            kind, obj = str(event.get("type")), event.get("object") or {}
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind == "BOOKMARK":
                continue
            with self._lock:
                if kind in ("ADDED", "MODIFIED") and self._keep(obj):
                    self._objects[key_of(obj)] = obj
                else:
                    self._objects.pop(key_of(obj), None)
            if self._listener is not None:
                self._listener(kind, obj)
            if stop.is_set():
                break
        return version
