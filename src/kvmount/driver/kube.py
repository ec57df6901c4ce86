"""Where SecretProviderClasses come from and where SecretProviderClassPodStatuses go.

``KubeStore`` talks to the API server (group secrets-store.csi.x-k8s.io, v1);
it connects on first use, so the driver serves CSI before the API server is
reachable. ``FileStore`` is the standalone mode: classes are read from YAML
files in a directory and pod statuses are kept as JSON files in a state
directory. Neither ever sees a secret value.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml

GROUP = "secrets-store.csi.x-k8s.io"
VERSION = "v1"
CLASSES = "secretproviderclasses"
POD_STATUSES = "secretproviderclasspodstatuses"
NODE_LABEL = "internal.secrets-store.csi.k8s.io/node-name"
REQUEST_TIMEOUT = 10.0


class StoreError(Exception):
    """A class or status that cannot be read or written; ``reason`` is a closed-set metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ClassNotFound(StoreError):
    def __init__(self, namespace: str, name: str, where: str) -> None:
        super().__init__(
            "SecretProviderClassNotFound",
            f"SecretProviderClass {namespace}/{name} not found {where}: "
            f"create it in the pod's namespace ({namespace})",
        )


class InvalidClass(StoreError):
    def __init__(self, what: str, message: str) -> None:
        super().__init__("InvalidSecretProviderClass", f"{what}: {message}")


class StoreUnavailable(StoreError):
    def __init__(self, message: str) -> None:
        super().__init__("APIServerUnavailable", message)


@dataclass(frozen=True)
class SecretProviderClass:
    namespace: str
    name: str
    provider: str
    parameters: dict[str, str]
    # Kept as the API returns them, for Kubernetes Secret sync.
    secret_objects: list[dict[str, Any]] = field(default_factory=list)


def parse_class(doc: Any, what: str) -> SecretProviderClass:
    """A SecretProviderClass from its API object; raises InvalidClass naming the field."""
    if not isinstance(doc, dict):
        raise InvalidClass(what, "not an object")
    meta = doc.get("metadata") or {}
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise InvalidClass(what, "spec is missing")
    provider = spec.get("provider")
    if not isinstance(provider, str) or not provider:
        raise InvalidClass(what, "spec.provider is missing; set it to the provider's name (e.g. azure)")
    params = spec.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidClass(what, "spec.parameters must be a map of strings")
    for key, value in params.items():
        if not isinstance(value, str):
            raise InvalidClass(what, f"spec.parameters.{key} must be a string; quote it in YAML")
    secret_objects = spec.get("secretObjects") or []
    if not isinstance(secret_objects, list):
        raise InvalidClass(what, "spec.secretObjects must be a list")
    return SecretProviderClass(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        provider=provider,
        parameters={str(k): v for k, v in params.items()},
        secret_objects=secret_objects,
    )


@dataclass(frozen=True)
class PodStatus:
    """What a SecretProviderClassPodStatus records about one mounted volume."""

    pod_name: str
    namespace: str
    pod_uid: str
    class_name: str
    target_path: str
    node_name: str
    objects: list[tuple[str, str]]
    mounted: bool = True

    @property
    def name(self) -> str:
        return f"{self.pod_name}-{self.namespace}-{self.class_name}"

    def manifest(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/v1",
            "kind": "SecretProviderClassPodStatus",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {NODE_LABEL: self.node_name},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Pod", "name": self.pod_name, "uid": self.pod_uid}
                ],
            },
            "status": {
                "podName": self.pod_name,
                "secretProviderClassName": self.class_name,
                "mounted": self.mounted,
                "targetPath": self.target_path,
                "objects": [{"id": i, "version": v} for i, v in sorted(self.objects)],
            },
        }


class Store(Protocol):
    def get_class(self, namespace: str, name: str) -> SecretProviderClass: ...

    def put_pod_status(self, status: PodStatus) -> None: ...

    def delete_pod_status(self, namespace: str, name: str) -> None: ...


class KubeStore:
    """The API server, reached with a kubeconfig file or the in-cluster service account."""

    def __init__(self, kubeconfig: str = "") -> None:
        self.kubeconfig = kubeconfig
        self._api: Any = None
        self._lock = threading.Lock()

    def _custom_objects(self) -> Any:
        with self._lock:
            if self._api is None:
                # Imported here: the client is slow to import and unused in standalone mode.
                from kubernetes import client
                from kubernetes import config as kube_config

                config: Any = kube_config
                settings = client.Configuration()
                try:
                    if self.kubeconfig or os.environ.get("KUBECONFIG"):
                        config.load_kube_config(
                            config_file=self.kubeconfig or None, client_configuration=settings
                        )
                    else:
                        config.load_incluster_config(client_configuration=settings)
                except (config.ConfigException, OSError, TypeError, ValueError) as err:
                    raise StoreUnavailable(f"cannot configure the Kubernetes API client: {err}") from None
                # Fail fast: kubelet retries the whole publish anyway.
                settings.retries = 1
                api_client = client.ApiClient(settings)
                self._api = client.CustomObjectsApi(api_client)
            return self._api

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException:
            raise
        except (HTTPError, OSError) as err:
            raise StoreUnavailable(f"{what}: API server unreachable ({type(err).__name__})") from None

    def get_class(self, namespace: str, name: str) -> SecretProviderClass:
        from kubernetes.client.exceptions import ApiException

        api = self._custom_objects()
        what = f"SecretProviderClass {namespace}/{name}"
        try:
            doc = self._call(what, api.get_namespaced_custom_object, GROUP, VERSION, namespace, CLASSES, name)
        except ApiException as err:
            if err.status == 404:
                raise ClassNotFound(namespace, name, "in the API server") from None
            raise _api_error(what, "get", err) from None
        return parse_class(doc, what)

    def put_pod_status(self, status: PodStatus) -> None:
        from kubernetes.client.exceptions import ApiException

        api = self._custom_objects()
        what = f"SecretProviderClassPodStatus {status.namespace}/{status.name}"
        body = status.manifest()
        try:
            self._call(
                what,
                api.create_namespaced_custom_object,
                GROUP,
                VERSION,
                status.namespace,
                POD_STATUSES,
                body,
            )
            return
        except ApiException as err:
            if err.status != 409:
                raise _api_error(what, "create", err) from None
        # It exists: a pod of the same name (a StatefulSet's) ran on another node,
        # or this is a republish. Take it over with a read-modify-write.
        for _ in range(3):
            try:
                current = self._call(
                    what,
                    api.get_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    status.namespace,
                    POD_STATUSES,
                    status.name,
                )
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                self._call(
                    what,
                    api.replace_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    status.namespace,
                    POD_STATUSES,
                    status.name,
                    body,
                )
                return
            except ApiException as err:
                if err.status != 409:
                    raise _api_error(what, "update", err) from None
        raise StoreUnavailable(f"{what}: kept conflicting with concurrent updates; will retry")

    def delete_pod_status(self, namespace: str, name: str) -> None:
        """Left to the garbage collector, as upstream: the status is owned by the pod."""


def _api_error(what: str, verb: str, err: Any) -> StoreError:
    if err.status in (401, 403):
        return StoreError(
            "APIServerForbidden",
            f"{what}: the driver's service account may not {verb} it (HTTP {err.status}); check its RBAC",
        )
    return StoreUnavailable(f"{what}: {verb} failed with HTTP {err.status} {err.reason}")


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
                    docs = list(yaml.safe_load_all(fh))
            except OSError as err:
                raise StoreUnavailable(f"class file {path}: {err.strerror}") from None
            except yaml.YAMLError:
                raise InvalidClass(f"class file {path}", "not valid YAML") from None
            for doc in docs:
                if not isinstance(doc, dict) or doc.get("kind") != "SecretProviderClass":
                    continue
                meta = doc.get("metadata") or {}
                if meta.get("name") == name and (meta.get("namespace") or "default") == namespace:
                    return parse_class(doc, f"SecretProviderClass {namespace}/{name} in {path}")
        raise ClassNotFound(namespace, name, f"in {self.classes_dir}")

    def _status_path(self, namespace: str, name: str) -> str:
        return os.path.join(self.status_dir, namespace, f"{name}.json")

    def put_pod_status(self, status: PodStatus) -> None:
        path = self._status_path(status.namespace, status.name)
        write_json(path, status.manifest())

    def delete_pod_status(self, namespace: str, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._status_path(namespace, name))


def write_json(path: str, doc: Any) -> None:
    """Replace ``path`` atomically with ``doc`` as JSON, readable by root only."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
