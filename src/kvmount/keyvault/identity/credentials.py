"""The credential of a mount's chosen identity (choice.py), built and reused safely.

Credentials (and the tokens they cache) are reused across mounts, keyed by
the whole identity: the mode, the cloud's authority, the tenant, the client,
and a digest of what proves it (the service account token, the client secret,
or the pod). Two pods therefore share a token only when they would get the
same one anyway.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial
from typing import Any, assert_never

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import AzureError
from azure.core.rest import HttpRequest
from azure.identity import (
    ClientAssertionCredential,
    ClientSecretCredential,
    ManagedIdentityCredential,
)

from kvmount.keyvault.clouds import Cloud
from kvmount.keyvault.errors import Category, KeyVaultError, TokenAnswerTooLarge
from kvmount.keyvault.http.retry import BudgetRetryPolicy
from kvmount.keyvault.http.token_transport import TokenAnswerTimeout, TokenTransport
from kvmount.keyvault.identity.choice import NMI_PORT
from kvmount.keyvault.identity.token_proxy import TokenProxy
from kvmount.keyvault.parameters.limits import DEFAULT_MAX_TOKEN_ANSWER_BYTES, TokenCap
from kvmount.keyvault.types import IdentityMode, MountParams


class PodIdentityCredential:
    """A token from aad-pod-identity's NMI, which knows the pod's identity by its name; asked
    through the token requests' bounded transport (http/token_transport.py)."""

    def __init__(
        self,
        pod_namespace: str,
        pod_name: str,
        port: int = NMI_PORT,
        transport: TokenTransport | None = None,
        user_agent: str = "",
    ) -> None:
        self._namespace = pod_namespace
        self._name = pod_name
        self._url = f"http://localhost:{port}/host/token/"
        self._transport = transport or TokenTransport(TokenCap)
        self._headers = {"podns": pod_namespace, "podname": pod_name}
        if user_agent:
            self._headers["User-Agent"] = user_agent

    def get_token(self, *scopes: str, **_kwargs: Any) -> AccessToken:
        resource = scopes[0].removesuffix("/.default") if scopes else ""
        request = HttpRequest("GET", self._url, params={"resource": resource}, headers=self._headers)
        pod = f"pod {self._namespace}/{self._name}"
        try:
            response = self._transport.send(request)
        except TokenAnswerTooLarge as err:
            raise TokenAnswerTooLarge(f"pod identity (NMI) for {pod}: {err}") from None
        except TokenAnswerTimeout as err:
            raise KeyVaultError(f"pod identity (NMI) for {pod}: {err}", Category.UNAVAILABLE) from None
        except AzureError:
            raise KeyVaultError(
                f"pod identity (NMI) at {self._url} is unreachable for {pod}; is aad-pod-identity running?",
                Category.UNAVAILABLE,
            ) from None
        status = response.status_code
        if status >= 300:
            category = Category.FORBIDDEN if status in (401, 403, 404) else Category.UNAUTHENTICATED
            raise KeyVaultError(f"pod identity (NMI) refused a token for {pod}: HTTP {status}", category)
        try:
            doc = json.loads(response.content)
        except (ValueError, RecursionError):
            raise KeyVaultError(f"pod identity (NMI) answered with invalid JSON for {pod}") from None
        try:
            token = doc["token"]
            return AccessToken(token["access_token"], int(token["expires_on"]))
        except (KeyError, TypeError, ValueError):
            raise KeyVaultError(f"pod identity (NMI) answered without a token for {pod}") from None


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def identity_key(params: MountParams, cloud: Cloud) -> str:
    """Everything that decides which token a mount gets, as one opaque key."""
    match params.identity:
        case IdentityMode.WORKLOAD | IdentityMode.TOKEN_PROXY:
            client, proof = params.client_id, params.service_account_token
        case IdentityMode.SERVICE_PRINCIPAL:
            client, proof = params.sp_client_id, params.sp_client_secret
        case IdentityMode.POD:
            client, proof = "", f"{params.pod_namespace}/{params.pod_name}"
        case IdentityMode.MANAGED:
            client, proof = params.client_id, ""
        case unknown:
            assert_never(unknown)
    return _digest(params.identity.value, cloud.aad_endpoint, params.tenant_id, client, proof)


def _token_subject(token: str) -> str:
    """The ``sub`` claim of a JWT, read without verification: only to group, never to trust."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        subject = claims["sub"]
    except (IndexError, ValueError, KeyError, TypeError, RecursionError):
        return ""
    return subject if isinstance(subject, str) else ""


def principal_key(params: MountParams, cloud: Cloud) -> str:
    """Who reads, for sharing reads across mounts: the identity key, except that
    workload identity mounts of one service account share it although each pod
    has its own token. Each such mount still proves its token (see ``prove``)."""
    if params.identity is IdentityMode.WORKLOAD:
        subject = _token_subject(params.service_account_token)
        if subject:
            return _digest("principal", params.identity.value, cloud.aad_endpoint, params.tenant_id,
                           params.client_id, subject)  # fmt: skip
    return identity_key(params, cloud)


def prove(params: MountParams, cloud: Cloud, credential: TokenCredential) -> None:
    """Make sure a mount's own credential yields a token before it is served a
    shared read, so a pod never gets content its own identity could not get."""
    if principal_key(params, cloud) != identity_key(params, cloud):
        # As the Key Vault SDK asks (CAE, the mount's tenant), so the token is the one it reuses.
        credential.get_token(cloud.scope, tenant_id=params.tenant_id or None, enable_cae=True)


def _authority(cloud: Cloud) -> dict[str, Any]:
    return {"authority": cloud.aad_endpoint, "disable_instance_discovery": cloud.custom}


def _assertion(params: MountParams, options: dict[str, Any]) -> ClientAssertionCredential:
    """A service account token exchanged for an Azure AD token (workload identity, identity binding)."""
    token = params.service_account_token
    return ClientAssertionCredential(params.tenant_id, params.client_id, lambda: token, **options)


@dataclass(frozen=True)
class CredentialOptions:
    """What every credential of a node is built with: the provider's flags."""

    nmi_port: int = NMI_PORT
    # --custom-user-agent; the SDK's UserAgentPolicy puts it in front of its own.
    user_agent: str = ""
    # --token-proxy-url and --sni-name, for identity binding.
    token_proxy: TokenProxy = field(default_factory=TokenProxy)
    # --max-token-answer-bytes: one answer of an identity endpoint, decoded.
    max_token_answer_bytes: int = DEFAULT_MAX_TOKEN_ANSWER_BYTES

    def transport(self) -> TokenTransport:
        """A transport for token requests, each answer bounded (http/token_transport.py)."""
        return TokenTransport(partial(TokenCap, self.max_token_answer_bytes))


def token_options(transport: TokenTransport) -> dict[str, Any]:
    """An azure-identity credential's keywords for bounded token requests: ``transport`` carries
    them, and its token pipeline's RetryPolicy is built from BudgetRetryPolicy (azure-identity's
    own keyword, which its IMDS credential uses too): the same retries, a shared code set, waits
    that end at the fetch's deadline. The provider's credentials and `kvmount kms`'s."""
    return {"transport": transport, "retry_policy_class": BudgetRetryPolicy}


def build_credential(
    params: MountParams,
    cloud: Cloud,
    node: CredentialOptions | None = None,
    transport: TokenTransport | None = None,
) -> TokenCredential:
    """The credential of a mount's identity; ``transport``, when given, carries its token
    requests (one connection pool for many credentials), else one of its own."""
    node = node or CredentialOptions()
    transport = transport or node.transport()
    options: dict[str, Any] = {"transport": transport}
    if node.user_agent:
        options["user_agent"] = node.user_agent
    match params.identity:
        case IdentityMode.WORKLOAD:
            return _assertion(params, {**_authority(cloud), **token_options(transport), **options})
        case IdentityMode.TOKEN_PROXY:
            # Instance discovery cannot pass the proxy; upstream turns it off too.
            cap = partial(TokenCap, node.max_token_answer_bytes)
            proxied = token_options(node.token_proxy.transport(cap))
            return _assertion(
                params, {**_authority(cloud), **options, **proxied, "disable_instance_discovery": True}
            )
        case IdentityMode.SERVICE_PRINCIPAL:
            return ClientSecretCredential(
                params.tenant_id,
                params.sp_client_id,
                params.sp_client_secret,
                **{**_authority(cloud), **token_options(transport), **options},
            )
        case IdentityMode.POD:
            return PodIdentityCredential(
                params.pod_namespace, params.pod_name, node.nmi_port, transport, node.user_agent
            )
        case IdentityMode.MANAGED:
            return ManagedIdentityCredential(client_id=params.client_id or None, **options)
        case unknown:
            assert_never(unknown)


class CredentialCache:
    """Credentials by identity key, least recently used evicted, idle ones expired."""

    def __init__(
        self, max_entries: int = 512, idle_seconds: float = 3600, node: CredentialOptions | None = None
    ) -> None:
        self._entries: OrderedDict[str, tuple[TokenCredential, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries
        self._idle = idle_seconds
        self._node = node or CredentialOptions()
        # Token requests of every credential share one bounded transport (its pools and one
        # TLS context per CA bundle, http/shared_tls.py) instead of one per identity, which
        # grew the provider by ~0.3 MiB per identity.
        self._transport = self._node.transport()

    def get(self, params: MountParams, cloud: Cloud) -> tuple[str, TokenCredential]:
        key = identity_key(params, cloud)
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and now - entry[1] < self._idle:
                self._entries[key] = (entry[0], now)
                self._entries.move_to_end(key)
                return key, entry[0]
            credential = build_credential(params, cloud, self._node, self._transport)
            self._entries[key] = (credential, now)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
            return key, credential

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
