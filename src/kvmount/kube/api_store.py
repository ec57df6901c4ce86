"""The API server as a Store: classes, pod statuses and events, plus what rotation reads.

It connects on first use, so the driver serves CSI before the API server is
reachable. It never sees a secret value except the node-publish Secret and the
service account tokens it reads for a rotation, which it hands back unlogged.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

from kvmount.kube.classes import CLASSES, GROUP, VERSION, SecretProviderClass, parse_class
from kvmount.kube.errors import ClassNotFound, StoreError, StoreUnavailable, api_error
from kvmount.kube.podstatus import NODE_LABEL, POD_STATUSES, PodRef, PodStatus

REQUEST_TIMEOUT = 10.0
# A pod watch is renewed this often (the server ends it after at most this long).
WATCH_SECONDS = 300
EVENT_SOURCE = "csi-secrets-store-driver"

log = logging.getLogger(__name__)


class KubeStore:
    """The API server, reached with a kubeconfig file or the in-cluster service account.

    Beyond the Store calls it reads what rotation needs: this node's pod statuses,
    pods, node-publish Secrets and service account tokens, and it watches pods.
    """

    def __init__(
        self,
        kubeconfig: str = "",
        driver_name: str = "secrets-store.csi.k8s.io",
        node: str = "",
        component: str = EVENT_SOURCE,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.driver_name = driver_name
        self.node = node
        self.component = component
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

    def api_client(self) -> Any:
        """The shared ApiClient, for API groups this store has no call for."""
        return self._client()

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
            raise api_error(what, "get", err) from None
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
                raise api_error(what, "create", err) from None
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
                    raise api_error(what, "update", err) from None
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
            raise api_error(what, "list", err) from None
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
            raise api_error(what, "get", err) from None
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
            raise api_error(what, "get", err) from None
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
            raise api_error(storage_what, "get", err) from None
        requests = driver.spec.token_requests or []
        if not requests:
            return None
        meta, spec = pod["metadata"], pod.get("spec") or {}
        return self.tokens_for(
            meta["namespace"],
            spec.get("serviceAccountName") or "default",
            [(r.audience or "", r.expiration_seconds or 3600) for r in requests],
            bound_pod=(meta["name"], meta["uid"]),
        )

    def tokens_for(
        self,
        namespace: str,
        account: str,
        audiences: list[tuple[str, int]],
        bound_pod: tuple[str, str] | None = None,
    ) -> str:
        """Service account tokens (TokenRequest), one per (audience, lifetime), as the JSON that
        kubelet puts in ``csi.storage.k8s.io/serviceAccount.tokens``; bound to the pod when named."""
        from kubernetes.client.exceptions import ApiException

        what = f"token of ServiceAccount {namespace}/{account}"
        tokens: dict[str, dict[str, str]] = {}
        for audience, seconds in audiences:
            body: dict[str, Any] = {
                "spec": {"audiences": [audience] if audience else [], "expirationSeconds": seconds}
            }
            if bound_pod is not None:
                body["spec"]["boundObjectRef"] = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": bound_pod[0],
                    "uid": bound_pod[1],
                }
            try:
                made = self._call(
                    what, self.core().create_namespaced_service_account_token, account, namespace, body
                )
            except ApiException as err:
                if err.status == 404:
                    raise StoreError(
                        "ServiceAccountNotFound", f"ServiceAccount {namespace}/{account} not found"
                    ) from None
                raise api_error(what, "create", err) from None
            expires = made.status.expiration_timestamp
            tokens[audience] = {
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
                "apiVersion": pod.api_version,
                "kind": pod.kind,
                "namespace": pod.namespace,
                "name": pod.name,
                "uid": pod.uid,
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self.component, "host": self.node},
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
