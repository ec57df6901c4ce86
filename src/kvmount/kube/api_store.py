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
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Any, TypeVar, cast

from kvmount.kube import kubeconfig
from kvmount.kube.classes import CLASSES, GROUP, VERSION, SecretProviderClass, parse_class
from kvmount.kube.errors import ClassNotFound, StoreError, StoreReason, StoreUnavailable, api_error
from kvmount.kube.node_caches import NodeCaches, labelled_used, pod_annotations
from kvmount.kube.objects import (
    CSIDriver,
    CSIDriverSpec,
    Pod,
    PodStatusObject,
    PodWatchEvent,
    Secret,
    TokenRequestAnswer,
)
from kvmount.kube.official_client import official_client
from kvmount.kube.podstatus import NODE_LABEL, POD_STATUSES, EventType, PodRef, PodStatus, same_status
from kvmount.kube.rest import ApiError, RestClient, Unreachable, path
from kvmount.kube.tokens import TokenCache, TokenKey, request_body
from kvmount.kube.watchcache import WatchCache, watch_seconds

# The CSIDriver is read again after this long to half as long again (drawn each time, so that
# nodes started together do not read it together): a watch's renewals would cost as much.
CSIDRIVER_SECONDS = 300.0
EVENT_SOURCE = "csi-secrets-store-driver"
CUSTOM = f"{GROUP}/{VERSION}"
T = TypeVar("T")

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
        context: str = "",
    ) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.driver_name = driver_name
        self.node = node
        self.component = component
        self._rest: RestClient | None = None
        self._api_client: Any = None
        self._tokens = TokenCache()
        # The pod statuses this process wrote, as the server stored them, by (namespace, name).
        self._statuses: dict[tuple[str, str], PodStatusObject] = {}
        self._caches: NodeCaches | None = None
        # The CSIDriver's spec as last read (None: there is none), and when to read it again.
        self._driver: tuple[float, CSIDriverSpec | None] | None = None
        self._lock = threading.Lock()
        self._driver_read = threading.Lock()  # one GET when it expires, not one per rotation worker

    def start_watches(self, stop: threading.Event) -> None:
        """Serve this node's pods, their classes and its pod statuses from watch-fed caches
        (kube/node_caches.py) from now on, until ``stop``."""
        if self.node and self._caches is None:
            self._caches = NodeCaches(self.rest, self.node, self.driver_name)
            self._caches.start(stop)

    def start_secret_watch(self, stop: threading.Event) -> None:
        """Serve the labelled nodePublishSecretRef Secrets of this node's pods from a watch too
        (the driver may list and watch Secrets); others are still read by a GET."""
        if self._caches is not None:
            self._caches.watch_secrets(stop)

    @property
    def caches(self) -> NodeCaches | None:
        return self._caches

    def _cache(self, pick: Callable[[NodeCaches], WatchCache | None]) -> WatchCache | None:
        """The cache ``pick`` names, once it is synced; None means: ask the server."""
        cache = pick(self._caches) if self._caches is not None else None
        return cache if cache is not None and cache.synced.is_set() else None

    def rest(self) -> RestClient:
        """The REST client, configured on first use (so CSI is served before the API server is
        reachable, and a configuration error fails the publish that needs it, not the driver)."""
        with self._lock:
            if self._rest is None:
                try:
                    self._rest = RestClient(kubeconfig.load(self.kubeconfig, context=self.context))
                except kubeconfig.ConfigError as err:
                    raise StoreUnavailable(f"cannot configure the Kubernetes API client: {err}") from None
            return self._rest

    def api_client(self) -> Any:
        """A ``kubernetes`` ApiClient for the workstation tools (kube/official_client.py); no daemon
        asks. Raises ClientMissing without the ``cli`` extra."""
        with self._lock:
            if self._api_client is None:
                self._api_client = official_client(self.kubeconfig, self.context)
            return self._api_client

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **query: Any) -> T:
        """``fn(*args, **query)`` with no answer as StoreUnavailable; the server's answers stay ApiError."""
        try:
            return fn(*args, **query)
        except Unreachable as err:
            raise StoreUnavailable(f"{what}: API server unreachable ({err})") from None

    def get_class(self, namespace: str, name: str) -> SecretProviderClass:
        rest = self.rest()
        what = f"SecretProviderClass {namespace}/{name}"
        cache = self._cache(lambda c: c.classes)
        doc = cache.get(namespace, name) if cache is not None else None
        if doc is None:
            try:
                doc = self._call(what, rest.get, path(CUSTOM, CLASSES, namespace, name))
            except ApiError as err:
                if err.status == 404:
                    raise ClassNotFound(namespace, name, "in the API server") from None
                raise api_error(what, "get", err) from None
            if cache is not None:
                cache.offer(doc)  # a class a new pod names: the watch keeps it current from now on
        return parse_class(doc, what)

    def put_pod_status(self, status: PodStatus) -> str:
        """Written only when it changed since this process last wrote or read it: an unchanged
        rotation costs no request, a changed one a single PUT guarded by the known version."""
        rest = self.rest()
        what = f"SecretProviderClassPodStatus {status.namespace}/{status.name}"
        here = path(CUSTOM, POD_STATUSES, status.namespace, status.name)
        body = status.manifest()
        key = (status.namespace, status.name)
        cache = self._cache(lambda c: c.statuses)
        with self._lock:
            known = self._statuses.get(key)
        if cache is not None:
            known = cast(PodStatusObject | None, cache.get(*key)) or known
        if known is not None:
            if same_status(known, body):
                return str(known["metadata"]["uid"])
            body["metadata"]["resourceVersion"] = known["metadata"]["resourceVersion"]
            try:
                return self._keep_status(key, self._call(what, rest.replace, here, body))
            except ApiError as err:
                if err.status not in (404, 409):
                    raise api_error(what, "update", err) from None
            # Changed or deleted by someone else since: start again from the server's copy.
            body = status.manifest()
        try:
            return self._keep_status(
                key, self._call(what, rest.create, path(CUSTOM, POD_STATUSES, status.namespace), body)
            )
        except ApiError as err:
            if err.status != 409:
                raise api_error(what, "create", err) from None
        # It exists: a pod of the same name (a StatefulSet's) ran on another node,
        # or this process restarted. Take it over with a read-modify-write.
        for _ in range(3):
            try:
                current = cast(PodStatusObject, self._call(what, rest.get, here))
                if same_status(current, body):
                    return self._keep_status(key, current)
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                return self._keep_status(key, self._call(what, rest.replace, here, body))
            except ApiError as err:
                if err.status != 409:
                    raise api_error(what, "update", err) from None
        raise StoreUnavailable(f"{what}: kept conflicting with concurrent updates; will retry")

    def _keep_status(self, key: tuple[str, str], stored: dict[str, Any] | PodStatusObject) -> str:
        """Remember the server's copy of a status this process wrote; its uid."""
        with self._lock:
            self._statuses[key] = cast(PodStatusObject, stored)
        return str(stored["metadata"]["uid"])

    def delete_pod_status(self, namespace: str, name: str) -> None:
        """Left to the garbage collector, as upstream: the status is owned by the pod. This
        process forgets its copy, so what it holds is bounded by the volumes it serves."""
        with self._lock:
            self._statuses.pop((namespace, name), None)

    def node_pod_statuses(self, node_name: str) -> list[PodStatusObject]:
        cache = self._cache(lambda c: c.statuses)
        if cache is not None and node_name == self.node:
            return cast(list[PodStatusObject], cache.items())
        rest = self.rest()
        what = f"SecretProviderClassPodStatuses of node {node_name}"
        selector = f"{NODE_LABEL}={node_name}"
        try:
            found = self._call(what, rest.get, path(CUSTOM, POD_STATUSES), labelSelector=selector)
        except ApiError as err:
            raise api_error(what, "list", err) from None
        return cast(list[PodStatusObject], found.get("items", []))

    def get_pod(self, namespace: str, name: str) -> Pod | None:
        cache = self._cache(lambda c: c.pods)
        held = cache.get(namespace, name) if cache is not None else None
        if held is not None:
            return cast(Pod, held)
        rest = self.rest()
        what = f"pod {namespace}/{name}"
        try:
            return cast(Pod, self._call(what, rest.get, path("v1", "pods", namespace, name)))
        except ApiError as err:
            if err.status == 404:
                return None
            raise api_error(what, "get", err) from None

    def node_publish_secret(self, namespace: str, name: str) -> dict[str, str]:
        """A nodePublishSecretRef Secret's data: from the Secret watch when it runs and the Secret
        carries its label, else by a GET."""
        cache = self._cache(lambda c: c.secrets)
        secret = cast(Secret | None, cache.get(namespace, name) if cache is not None else None)
        if secret is None:
            rest = self.rest()
            what = f"Secret {namespace}/{name} (nodePublishSecretRef)"
            try:
                secret = cast(Secret, self._call(what, rest.get, path("v1", "secrets", namespace, name)))
            except ApiError as err:
                if err.status == 404:
                    raise StoreError(StoreReason.NODE_PUBLISH_SECRET_NOT_FOUND, f"{what} not found") from None
                raise api_error(what, "get", err) from None
            if cache is not None and labelled_used(cast(dict[str, Any], secret)):
                cache.offer(cast(dict[str, Any], secret))  # a new pod's: the watch keeps it current
        data = secret.get("data", {})
        return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in data.items()}

    def csidriver(self) -> CSIDriverSpec | None:
        """The spec of this driver's CSIDriver object, or None when there is none; read again at
        most every CSIDRIVER_SECONDS."""
        with self._driver_read:
            with self._lock:
                held = self._driver
            if held is not None and time.monotonic() < held[0]:
                return held[1]
            what = f"CSIDriver {self.driver_name}"
            try:
                where = path("storage.k8s.io/v1", "csidrivers", name=self.driver_name)
                got = cast(CSIDriver, self._call(what, self.rest().get, where))
                spec: CSIDriverSpec | None = got.get("spec", {})
            except ApiError as err:
                if err.status != 404:
                    raise api_error(what, "get", err) from None
                spec = None
            # None (not installed yet, or a misconfigured cluster) is asked again sooner.
            ttl = CSIDRIVER_SECONDS * random.uniform(1.0, 1.5) if spec is not None else CSIDRIVER_SECONDS / 10
            with self._lock:
                self._driver = (time.monotonic() + ttl, spec)
            return spec

    def may(self, verb: str, resource: str, subresource: str = "", group: str = "") -> bool:
        """Whether this client may ``verb`` the resource in every namespace (SelfSubjectAccessReview,
        which every authenticated user may create). Raises StoreError when the API cannot say."""
        rest = self.rest()
        what = f"access review of {verb} {resource}{'/' + subresource if subresource else ''}"
        attributes = {"verb": verb, "resource": resource, "subresource": subresource, "group": group}
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        try:
            answer = self._call(
                what, rest.create, path("authorization.k8s.io/v1", "selfsubjectaccessreviews"), body
            )
        except ApiError as err:
            raise api_error(what, "create", err) from None
        return bool((answer.get("status") or {}).get("allowed"))

    def service_account_tokens(self, pod: Pod) -> str | None:
        # No CSIDriver object, or no tokenRequests: kubelet would send no tokens either.
        requests = (self.csidriver() or {}).get("tokenRequests", [])
        if not requests:
            return None
        meta, spec = pod["metadata"], pod.get("spec", {})
        return self.tokens_for(
            meta["namespace"],
            spec.get("serviceAccountName") or "default",
            [(r.get("audience", ""), r.get("expirationSeconds", 3600)) for r in requests],
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
        kubelet puts in ``csi.storage.k8s.io/serviceAccount.tokens``; bound to the pod when named.
        A token is reused until 80 % of its life has passed, as kubelet reuses them."""
        rest = self.rest()
        what = f"token of ServiceAccount {namespace}/{account}"
        where = path("v1", "serviceaccounts", namespace, account, "token")
        tokens: dict[str, dict[str, str]] = {}
        for audience, seconds in audiences:
            key = TokenKey(namespace, account, audience, seconds, bound_pod[1] if bound_pod else "")
            reused = self._tokens.get(key)
            if reused is not None:
                tokens[audience] = {"token": reused[0], "expirationTimestamp": reused[1]}
                continue
            issued_at = time.time()
            body = request_body(audience, seconds, bound_pod)
            try:
                made = cast(TokenRequestAnswer, self._call(what, rest.create, where, body))
            except ApiError as err:
                if err.status == 404:
                    raise StoreError(
                        StoreReason.SERVICE_ACCOUNT_NOT_FOUND,
                        f"ServiceAccount {namespace}/{account} not found",
                    ) from None
                raise api_error(what, "create", err) from None
            status = made.get("status", {})
            # The expiry in the API's own spelling (RFC 3339, seconds, UTC), as kubelet passes it on.
            token, expiration = status.get("token", ""), status.get("expirationTimestamp", "")
            tokens[audience] = {"token": token, "expirationTimestamp": expiration}
            self._tokens.put(key, token, expiration, issued_at)
        return json.dumps(tokens)

    def record_event(self, pod: PodRef, kind: EventType, reason: StrEnum, message: str) -> None:
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
            rest = self.rest()
            self._call(
                f"event on pod {pod.namespace}/{pod.name}",
                rest.create,
                path("v1", "events", pod.namespace),
                body,
            )
        except (ApiError, StoreError) as err:
            # Events are a courtesy: losing one must not fail the work it reports.
            log.warning(
                "cannot record event",
                extra={"pod": f"{pod.namespace}/{pod.name}", "reason": reason, "error": str(err)[:200]},
            )

    def watch_node_pods(self, node_name: str) -> Iterator[tuple[str, dict[str, str]]]:
        """(uid, annotations) of this node's pods as they are added or change: from the pod
        cache's watch when the caches run (no watch of its own), else from a watch."""
        caches = self._caches
        if caches is None or node_name != self.node:
            events = cast(
                Iterator[PodWatchEvent],
                self.rest().watch(
                    path("v1", "pods"), watch_seconds(), fieldSelector=f"spec.nodeName={node_name}"
                ),
            )
            yield from pod_annotations(events)
            return
        queued: queue.SimpleQueue[PodWatchEvent] = queue.SimpleQueue()
        unsubscribe = caches.subscribe(lambda kind, pod: queued.put({"type": kind, "object": cast(Pod, pod)}))
        try:
            yield from pod_annotations(iter(queued.get, None))
        finally:
            unsubscribe()
