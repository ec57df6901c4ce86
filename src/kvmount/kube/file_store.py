"""Standalone mode as a Store: classes from YAML files in a directory, pod statuses as JSON files."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from enum import StrEnum

import yaml

from kvmount.base import yamlread
from kvmount.base.json_file import write_json
from kvmount.kube.classes import SecretProviderClass, parse_class
from kvmount.kube.errors import ClassNotFound, InvalidClass, InvalidName, StoreUnavailable
from kvmount.kube.names import name_problem
from kvmount.kube.podstatus import EventType, PodRef, PodStatus

log = logging.getLogger(__name__)


class FileStore:
    """Standalone mode: classes from ``*.yaml`` files, pod statuses as JSON files."""

    def __init__(self, classes_dir: str, state_dir: str) -> None:
        self.classes_dir = classes_dir
        self.status_dir = os.path.join(state_dir, "podstatuses")

    def get_class(self, namespace: str, name: str) -> SecretProviderClass:
        paths = sorted(glob.glob(os.path.join(self.classes_dir, "*.yaml")))
        paths += sorted(glob.glob(os.path.join(self.classes_dir, "*.yml")))
        for path in paths:
            try:
                with open(path, encoding="utf-8") as fh:
                    docs = yamlread.read(lambda: list(yaml.safe_load_all(fh)))
            except OSError as err:
                raise StoreUnavailable(f"class file {path}: {err.strerror}") from None
            except yamlread.Unreadable as err:
                raise InvalidClass(f"class file {path}", str(err)) from None
            for doc in docs:
                if not isinstance(doc, dict) or doc.get("kind") != "SecretProviderClass":
                    continue
                meta = doc.get("metadata") or {}
                if not isinstance(meta, dict):
                    raise InvalidClass(f"class file {path}", "metadata must be a mapping with name")
                if meta.get("name") == name and (meta.get("namespace") or "default") == namespace:
                    return parse_class(doc, f"SecretProviderClass {namespace}/{name} in {path}")
        raise ClassNotFound(namespace, name, f"in {self.classes_dir}")

    def _status_path(self, namespace: str, name: str) -> str:
        # Both become path components under --state-dir: only valid Kubernetes names may.
        problem = name_problem("namespace", namespace, label=True) or name_problem("pod status name", name)
        if problem:
            raise InvalidName(problem)
        return os.path.join(self.status_dir, namespace, f"{name}.json")

    def put_pod_status(self, status: PodStatus) -> str:
        path = self._status_path(status.namespace, status.name)
        write_json(path, status.manifest())
        return ""

    def delete_pod_status(self, namespace: str, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._status_path(namespace, name))

    def record_event(self, pod: PodRef, kind: EventType, reason: StrEnum, message: str) -> None:
        # No API to hold events: the log is where a standalone driver's user looks.
        log.info(
            "event",
            extra={"pod": f"{pod.namespace}/{pod.name}", "type": kind, "reason": reason, "detail": message},
        )
