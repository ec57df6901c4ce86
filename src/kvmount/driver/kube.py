"""Where SecretProviderClasses come from and where SecretProviderClassPodStatuses go.

``KubeStore`` talks to the API server (group secrets-store.csi.x-k8s.io, v1);
it connects on first use, so the driver serves CSI before the API server is
reachable. ``FileStore`` is the standalone mode: classes are read from YAML
files in a directory and pod statuses are kept as JSON files in a state
directory. Neither ever sees a secret value.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import glob
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml

GROUP = "secrets-store.csi.x-k8s.io"
VERSION = "v1"
CLASSES = "secretproviderclasses"
POD_STATUSES = "secretproviderclasspodstatuses"
NODE_LABEL = "internal.secrets-store.csi.k8s.io/node-name"
REQUEST_TIMEOUT = 10.0
# A pod watch is renewed this often (the server ends it after at most this long).
WATCH_SECONDS = 300
EVENT_SOURCE = "csi-secrets-store-driver"

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class PodRef:
    """The pod an event is about."""

    namespace: str
    name: str
    uid: str


class Store(Protocol):
    def get_class(self, namespace: str, name: str) -> SecretProviderClass: ...

    def put_pod_status(self, status: PodStatus) -> str:
        """Create or replace the status; returns its uid ("" where objects have none)."""
        ...

    def delete_pod_status(self, namespace: str, name: str) -> None: ...

    def record_event(self, pod: PodRef, kind: str, reason: str, message: str) -> None: ...


class KubeStore:
    """The API server, reached with a kubeconfig file or the in-cluster service account.

    Beyond the Store calls it reads what rotation needs: this node's pod statuses,
    pods, node-publish Secrets and service account tokens, and it watches pods.
    """

    def __init__(
        self, kubeconfig: str = "", driver_name: str = "secrets-store.csi.k8s.io", node: str = ""
    ) -> None:
        self.kubeconfig = kubeconfig
        self.driver_name = driver_name
        self.node = node
        self._api_client: Any = None
        self._lock = threading.Lock()

    def _client(self) -> Any:
        with self._lock:
            if self._api_client is None:
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
                self._api_client = client.ApiClient(settings)
            return self._api_client

    def _custom_objects(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self._client())

    def core(self) -> Any:
        """A CoreV1Api on the shared connection pool."""
        from kubernetes import client

        return client.CoreV1Api(self._client())

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

    def put_pod_status(self, status: PodStatus) -> str:
        from kubernetes.client.exceptions import ApiException

        api = self._custom_objects()
        what = f"SecretProviderClassPodStatus {status.namespace}/{status.name}"
        args = (GROUP, VERSION, status.namespace, POD_STATUSES)
        body = status.manifest()
        try:
            created = self._call(what, api.create_namespaced_custom_object, *args, body)
            return str(created["metadata"]["uid"])
        except ApiException as err:
            if err.status != 409:
                raise _api_error(what, "create", err) from None
        # It exists: a pod of the same name (a StatefulSet's) ran on another node,
        # or this is a republish. Take it over with a read-modify-write.
        for _ in range(3):
            try:
                current = self._call(what, api.get_namespaced_custom_object, *args, status.name)
                if _same_status(current, body):
                    return str(current["metadata"]["uid"])
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                replaced = self._call(what, api.replace_namespaced_custom_object, *args, status.name, body)
                return str(replaced["metadata"]["uid"])
            except ApiException as err:
                if err.status != 409:
                    raise _api_error(what, "update", err) from None
        raise StoreUnavailable(f"{what}: kept conflicting with concurrent updates; will retry")

    def delete_pod_status(self, namespace: str, name: str) -> None:
        """Left to the garbage collector, as upstream: the status is owned by the pod."""

    def node_pod_statuses(self, node_name: str) -> list[dict[str, Any]]:
        from kubernetes.client.exceptions import ApiException

        api = self._custom_objects()
        what = f"SecretProviderClassPodStatuses of node {node_name}"
        try:
            found = self._call(
                what,
                api.list_cluster_custom_object,
                GROUP,
                VERSION,
                POD_STATUSES,
                label_selector=f"{NODE_LABEL}={node_name}",
            )
        except ApiException as err:
            raise _api_error(what, "list", err) from None
        return list(found.get("items") or [])

    def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        core = self.core()
        what = f"pod {namespace}/{name}"
        try:
            response = self._call(what, core.read_namespaced_pod, name, namespace, _preload_content=False)
        except ApiException as err:
            if err.status == 404:
                return None
            raise _api_error(what, "get", err) from None
        pod: dict[str, Any] = json.loads(response.data)
        return pod

    def node_publish_secret(self, namespace: str, name: str) -> dict[str, str]:
        from kubernetes.client.exceptions import ApiException

        core = self.core()
        what = f"Secret {namespace}/{name} (nodePublishSecretRef)"
        try:
            secret = self._call(what, core.read_namespaced_secret, name, namespace)
        except ApiException as err:
            if err.status == 404:
                raise StoreError("NodePublishSecretNotFound", f"{what} not found") from None
            raise _api_error(what, "get", err) from None
        return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (secret.data or {}).items()}

    def service_account_tokens(self, pod: dict[str, Any]) -> str | None:
        from kubernetes.client.exceptions import ApiException

        storage_what = f"CSIDriver {self.driver_name}"
        try:
            from kubernetes import client

            driver = self._call(
                storage_what, client.StorageV1Api(self._client()).read_csi_driver, self.driver_name
            )
        except ApiException as err:
            if err.status == 404:
                return None  # no CSIDriver object, so kubelet would send no tokens either
            raise _api_error(storage_what, "get", err) from None
        requests = driver.spec.token_requests or []
        if not requests:
            return None
        meta, spec = pod["metadata"], pod.get("spec") or {}
        account = spec.get("serviceAccountName") or "default"
        what = f"token of ServiceAccount {meta['namespace']}/{account}"
        tokens: dict[str, dict[str, str]] = {}
        for request in requests:
            body = {
                "spec": {
                    "audiences": [request.audience] if request.audience else [],
                    "expirationSeconds": request.expiration_seconds or 3600,
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": meta["name"],
                        "uid": meta["uid"],
                    },
                }
            }
            try:
                made = self._call(
                    what,
                    self.core().create_namespaced_service_account_token,
                    account,
                    meta["namespace"],
                    body,
                )
            except ApiException as err:
                raise _api_error(what, "create", err) from None
            expires = made.status.expiration_timestamp
            tokens[request.audience or ""] = {
                "token": made.status.token,
                "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ") if expires else "",
            }
        return json.dumps(tokens)

    def record_event(self, pod: PodRef, kind: str, reason: str, message: str) -> None:
        from kubernetes.client.exceptions import ApiException

        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"generateName": f"{pod.name}.", "namespace": pod.namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "namespace": pod.namespace,
                "name": pod.name,
                "uid": pod.uid,
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": EVENT_SOURCE, "host": self.node},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._call(
                f"event on pod {pod.namespace}/{pod.name}",
                self.core().create_namespaced_event,
                pod.namespace,
                body,
            )
        except (ApiException, StoreError) as err:
            # Events are a courtesy: losing one must not fail the work it reports.
            log.warning(
                "cannot record event",
                extra={"pod": f"{pod.namespace}/{pod.name}", "reason": reason, "error": str(err)[:200]},
            )

    def watch_node_pods(self, node_name: str) -> Iterator[tuple[str, dict[str, str]]]:
        from kubernetes import watch as kube_watch

        watch: Any = kube_watch  # the module carries no annotations
        stream = watch.Watch().stream(
            self.core().list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={node_name}",
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=WATCH_SECONDS + REQUEST_TIMEOUT,
        )
        for event in stream:
            pod = event["object"]
            if event["type"] in ("ADDED", "MODIFIED") and pod.metadata is not None:
                yield str(pod.metadata.uid), dict(pod.metadata.annotations or {})


def _same_status(current: dict[str, Any], body: dict[str, Any]) -> bool:
    meta = current.get("metadata") or {}
    return bool(
        current.get("status") == body["status"]
        and meta.get("labels") == body["metadata"]["labels"]
        and meta.get("ownerReferences") == body["metadata"]["ownerReferences"]
    )


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

    def put_pod_status(self, status: PodStatus) -> str:
        path = self._status_path(status.namespace, status.name)
        write_json(path, status.manifest())
        return ""

    def delete_pod_status(self, namespace: str, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._status_path(namespace, name))

    def record_event(self, pod: PodRef, kind: str, reason: str, message: str) -> None:
        # No API to hold events: the log is where a standalone driver's user looks.
        log.info(
            "event",
            extra={"pod": f"{pod.namespace}/{pod.name}", "type": kind, "reason": reason, "detail": message},
        )


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
