"""A small Kubernetes REST client: JSON dicts in and out over one urllib3 connection pool.

The daemons' whole conversation with the API server (gets, lists, creates,
replaces, patches, deletes, watches, the sync controller's Lease) is plain
JSON on a handful of paths; the ``kubernetes`` package would add 58 MB to the
image for it (its models, pydantic, oauthlib). Only the workstation tools
(doctor, ``validate --cluster``) use that package, from the ``cli`` extra,
through ``KubeStore.api_client()``.

Errors: an answer other than 2xx is an ApiError carrying the status, the
reason phrase and the server's Status message; no answer at all (refused,
reset, timed out, TLS) is Unreachable, named by urllib3's exception type.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from urllib3.exceptions import HTTPError

from kvmount import __version__
from kvmount.kube.kubeconfig import Connection

REQUEST_TIMEOUT = 10.0
# Connections kept per server: publishes, rotation workers and the watch run at once.
POOL_SIZE = 10


class Patch(StrEnum):
    """The patch kinds the API server takes, by their content type."""

    MERGE = "application/merge-patch+json"
    STRATEGIC_MERGE = "application/strategic-merge-patch+json"
    # Server-side apply; JSON is YAML, so the body is sent as JSON.
    APPLY = "application/apply-patch+yaml"


class ApiError(Exception):
    """The API server answered with a status other than 2xx."""

    def __init__(self, status: int, reason: str, body: str = "") -> None:
        self.status = status
        self.reason = reason
        self.body = body
        super().__init__(
            f"HTTP {status} {reason}: {self.message}" if self.message else f"HTTP {status} {reason}"
        )

    @property
    def message(self) -> str:
        """The message of the server's Status object, if the body is one."""
        doc = _json(self.body)
        return str(doc.get("message") or "") if isinstance(doc, dict) else ""


class Unreachable(Exception):
    """No answer from the API server; the message is the type of the underlying error."""


def _json(text: str | bytes) -> Any:
    """An answer's JSON, or None when this process cannot hold it as JSON: not JSON, nested past
    the recursion limit (RecursionError), a number past int()'s 4,300 digits (ValueError)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def path(api_version: str, resource: str, namespace: str = "", name: str = "", subresource: str = "") -> str:
    """The URL path of a collection or object: ("v1", "pods", "ns", "web") is
    /api/v1/namespaces/ns/pods/web, ("apps/v1", "deployments") /apis/apps/v1/deployments."""
    parts = ["api" if "/" not in api_version else "apis", *api_version.split("/")]
    if namespace:
        parts += ["namespaces", quote(namespace, safe="")]
    parts.append(resource)
    parts += [quote(p, safe="") for p in (name, subresource) if p]
    return "/" + "/".join(parts)


class RestClient:
    """Thread-safe; the pool is made on the first request, so nothing connects before one is sent."""

    def __init__(self, connection: Connection, timeout: float = REQUEST_TIMEOUT) -> None:
        self.connection = connection
        self.timeout = timeout
        self._pool: urllib3.PoolManager | None = None
        self._lock = threading.Lock()

    def _manager(self) -> urllib3.PoolManager:
        with self._lock:
            if self._pool is None:
                conn = self.connection
                options: dict[str, Any] = {"maxsize": POOL_SIZE, "retries": 1}
                if conn.tls is not None:
                    options["ssl_context"] = conn.tls
                if conn.tls_server_name:
                    options["server_hostname"] = conn.tls_server_name
                if conn.proxy:
                    self._pool = urllib3.ProxyManager(conn.proxy, **options)
                else:
                    self._pool = urllib3.PoolManager(**options)
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.clear()

    def _headers(self, content_type: str = "") -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": f"kvmount/{__version__}"}
        if content_type:
            headers["Content-Type"] = content_type
        token = self.connection.token.value() if self.connection.token is not None else ""
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _url(self, where: str, query: Mapping[str, str | int] | None) -> str:
        return self.connection.server + where + (f"?{urlencode(query)}" if query else "")

    def request(
        self,
        method: str,
        where: str,
        body: Any = None,
        query: Mapping[str, str | int] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """``method`` on the path ``where``; the answer's JSON object. Raises ApiError, Unreachable."""
        data = None if body is None else json.dumps(body).encode()
        try:
            response = self._manager().request(
                method,
                self._url(where, query),
                body=data,
                headers=self._headers(content_type if data is not None else ""),
                timeout=urllib3.Timeout(total=self.timeout),
            )
        except (HTTPError, OSError) as err:
            raise Unreachable(type(err).__name__) from None
        text = response.data.decode("utf-8", "replace")
        if not 200 <= response.status < 300:
            raise ApiError(response.status, response.reason or "", text)
        answer = _json(text)
        if not isinstance(answer, dict):
            raise Unreachable("InvalidJSONResponse")
        return answer

    def get(self, where: str, **query: str | int) -> dict[str, Any]:
        """An object, or a list (with labelSelector=..., fieldSelector=...)."""
        return self.request("GET", where, query=query)

    def create(self, where: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("POST", where, body)

    def replace(self, where: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT: guarded by the body's metadata.resourceVersion when it has one (409 if stale)."""
        return self.request("PUT", where, body)

    def patch(
        self, where: str, body: Mapping[str, Any], kind: Patch = Patch.MERGE, **query: str | int
    ) -> dict[str, Any]:
        """PATCH; a Patch.APPLY needs the query's fieldManager (and force=true to take fields over)."""
        return self.request("PATCH", where, body, query=query, content_type=kind.value)

    def delete(self, where: str) -> dict[str, Any]:
        return self.request("DELETE", where)

    def watch(
        self, where: str, timeout_seconds: int, resource_version: str = "", **query: str | int
    ) -> Iterator[dict[str, Any]]:
        """The events ({"type", "object"}) of a watch on the collection ``where``, until the server
        ends it (after ``timeout_seconds``). An ERROR event (a 410 Gone for a resourceVersion too old)
        raises ApiError with its code. Without a resourceVersion the server first sends every
        existing object as ADDED."""
        params: dict[str, str | int] = {**query, "watch": 1, "timeoutSeconds": timeout_seconds}
        if resource_version:
            params["resourceVersion"] = resource_version
        try:
            response = self._manager().request(
                "GET",
                self._url(where, params),
                headers=self._headers(),
                timeout=urllib3.Timeout(connect=self.timeout, read=timeout_seconds + self.timeout),
                preload_content=False,
            )
        except (HTTPError, OSError) as err:
            raise Unreachable(type(err).__name__) from None
        try:
            if not 200 <= response.status < 300:
                raise ApiError(
                    response.status, response.reason or "", response.data.decode("utf-8", "replace")
                )
            for line in response:
                if not line.strip():
                    continue
                event = _json(line)
                if not isinstance(event, dict):
                    raise Unreachable("InvalidJSONResponse")
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise ApiError(
                        int(status.get("code") or 500), str(status.get("reason") or ""), json.dumps(status)
                    )
                yield event
        except (HTTPError, OSError) as err:
            raise Unreachable(type(err).__name__) from None
        except ValueError:
            raise Unreachable("InvalidJSONResponse") from None
        finally:
            # A watch left early has unread data: its connection cannot go back to the pool.
            response.close()
            response.release_conn()
