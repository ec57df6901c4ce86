"""Key Vault reads for one vault and one identity: the SDK's pipeline, JSON answers.

Why not the SDK's SecretClient, KeyClient and CertificateClient: profiled
(bench/RESULTS.md), most of a read's CPU went to what a read-only mount does not
need: three pipelines of thirteen policies each (tracing, logging, request ids,
redirects), typed models built and then taken apart again, and requests reading
the environment (proxies, CA bundle, ~/.netrc) again on every request. Here one
azure-core Pipeline per vault and identity holds the parts that matter: the Key
Vault SDK's own challenge policy (the challenge's tenant and resource, CAE, the
token from the azure-identity credential), the retry policy, the user agent, and
one connection pool per vault, shared by every identity that reads it (a request's
identity is its bearer token, not its connection), over keyvault/transport.py (urllib3's
pools, no requests). Answers are Key Vault's REST JSON, read directly.

Token requests of the credentials (azure-identity, msal, NMI) go through the same
bounded transport, with a cap of their own (http/token_transport.py).

The first request of a new client goes alone: it takes the challenge and the
token, so concurrent fetches and mounts of a new identity cost one challenge and
one token request, not one each (single flight).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ResourceNotModifiedError,
    ServiceResponseTimeoutError,
    map_error,
)
from azure.core.pipeline import Pipeline
from azure.core.pipeline.policies import RetryPolicy, UserAgentPolicy
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest
from azure.keyvault.secrets._shared import ChallengeAuthPolicy
from azure.keyvault.secrets._shared.client_base import DEFAULT_VERSION
from azure.keyvault.secrets._version import VERSION

# The REST API version the SDK's clients send.
API_VERSION = str(getattr(DEFAULT_VERSION, "value", DEFAULT_VERSION))
SDK_MONIKER = f"keyvault-secrets/{VERSION}"
# As the SDK's generated operations map them, so callers see the SDK's exception types.
_ERROR_MAP: dict[int, type[HttpResponseError]] = {
    401: ClientAuthenticationError,
    404: ResourceNotFoundError,
    409: ResourceExistsError,
    304: ResourceNotModifiedError,
}
COLLECTIONS = {"secret": "secrets", "key": "keys", "cert": "certificates"}


def version_of(object_id: str) -> str:
    """The version in a Key Vault id (https://<vault>/<collection>/<name>/<version>)."""
    parts = urllib.parse.urlsplit(object_id).path.strip("/").split("/")
    return parts[2] if len(parts) >= 3 else ""


class VaultClient:
    """GETs against one vault for one identity, answered as Key Vault's JSON documents."""

    def __init__(
        self,
        vault_url: str,
        credential: TokenCredential,
        retry_policy: RetryPolicy[Any, Any],
        transport: HttpTransport[Any, Any],
        user_agent: str = "",
    ) -> None:
        self.vault_url = vault_url.rstrip("/")
        policies: list[Any] = [
            UserAgentPolicy(user_agent or None, sdk_moniker=SDK_MONIKER),
            retry_policy,
            ChallengeAuthPolicy(credential),
        ]
        self._pipeline: Pipeline[Any, Any] = Pipeline(transport, policies)
        self._first = threading.Lock()
        self._primed = False

    def get(self, path: str, deadline: float | None = None, **options: Any) -> dict[str, Any]:
        """The JSON document at ``path`` (below the vault URL, or an absolute nextLink)."""
        url = path if path.startswith("https://") else f"{self.vault_url}{path}"
        joiner = "&" if "?" in url else "?"
        if "api-version=" not in url:
            url = f"{url}{joiner}api-version={API_VERSION}"
        request = HttpRequest("GET", url, headers={"Accept": "application/json"})
        response = self._send(request, deadline, options)
        if response.status_code != 200:
            map_error(status_code=response.status_code, response=response, error_map=_ERROR_MAP)
            raise HttpResponseError(response=response)
        doc = json.loads(response.text())
        if not isinstance(doc, dict):
            raise HttpResponseError(message="Key Vault answered with JSON that is not an object")
        return doc

    def _send(self, request: HttpRequest, deadline: float | None, options: dict[str, Any]) -> Any:
        if not self._primed:
            timeout = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._first.acquire(timeout=timeout):
                raise ServiceResponseTimeoutError("the mount's time budget is spent")
            try:
                if not self._primed:
                    response = self._pipeline.run(request, **options).http_response
                    # Any answer from the vault means the challenge and a token were had.
                    self._primed = True
                    return response
            finally:
                self._first.release()
        return self._pipeline.run(request, **options).http_response

    def get_object(
        self, kind: str, name: str, version: str, deadline: float | None = None, **options: Any
    ) -> dict[str, Any]:
        """A secret, key or certificate bundle; ``version`` "" for the current one."""
        path = (
            f"/{COLLECTIONS[kind]}/{urllib.parse.quote(name, safe='')}/{urllib.parse.quote(version, safe='')}"
        )
        return self.get(path, deadline, **options)

    def list_versions(
        self, kind: str, name: str, deadline: float | None = None, **options: Any
    ) -> Iterator[dict[str, Any]]:
        """Every version item of an object, page after page."""
        path = f"/{COLLECTIONS[kind]}/{urllib.parse.quote(name, safe='')}/versions?maxresults=25"
        for page in self._pages(path, deadline, options):
            yield from page

    def list_objects(
        self, kind: str, deadline: float | None = None, **options: Any
    ) -> Iterator[list[dict[str, Any]]]:
        """The object items of a type (each its current version's attributes and tags), a page at a time."""
        return self._pages(f"/{COLLECTIONS[kind]}?maxresults=25", deadline, options)

    def _pages(
        self, path: str, deadline: float | None, options: dict[str, Any]
    ) -> Iterator[list[dict[str, Any]]]:
        own = urllib.parse.urlsplit(self.vault_url)
        next_path: str | None = path
        while next_path:
            page = self.get(next_path, deadline, **options)
            items = page.get("value")
            yield items if isinstance(items, list) else []
            next_path = page.get("nextLink") or None
            # The next page is asked for with the vault's token: never from another host.
            if next_path is not None:
                link = urllib.parse.urlsplit(str(next_path))
                if (link.scheme, link.netloc.lower()) != (own.scheme, own.netloc.lower()):
                    raise HttpResponseError(
                        message="Key Vault's nextLink leads away from the vault; not followed"
                    )
