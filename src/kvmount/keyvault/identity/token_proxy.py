"""Identity binding (``useAzureTokenProxy``): token requests through the AKS token proxy.

What upstream's provider v1.8.2 does (--token-proxy-url, --sni-name, through
azidentity's proxy transport), done here with azure-identity's own URL and CA
handling for it over the bounded token transport (http/token_transport.py, each
answer bounded in bytes and time): each request of the credential goes to the proxy URL (default
``https://kubernetes.default.svc.cluster.local``) with the original path and
query appended, over TLS with the server name ``--sni-name``. The proxy's
certificate is checked against the service account CA when that file exists,
else against the system's roots. Without ``--sni-name``, the name is derived
from the API server's serving certificate: the cluster id in its SAN
``hcp-kubernetes.<id>.svc.cluster.local``, salted and hashed. A problem (a bad
URL, no CA, no such SAN) never stops the provider: it fails the mounts that use
identity binding, naming the flag to set, as upstream.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from azure.core.rest import HttpRequest
from azure.identity._internal.token_binding_transport_mixin import TokenBindingTransportMixin

from kvmount.base import numbers
from kvmount.keyvault.errors import Category, KeyVaultError
from kvmount.keyvault.http.connections import ByteCap
from kvmount.keyvault.http.token_transport import TokenTransport
from kvmount.keyvault.http.transport import ReadResponse

DEFAULT_URL = "https://kubernetes.default.svc.cluster.local"
SERVICE_ACCOUNT_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
_API_SERVER = "kubernetes.default.svc.cluster.local"
_SAN_PREFIX, _SAN_SUFFIX = "hcp-kubernetes.", ".svc.cluster.local"


def server_name(cluster_id: str) -> str:
    """The proxy's TLS server name for a cluster, as AKS derives it."""
    digest = hashlib.sha256(f"identity-binding{cluster_id}".encode()).digest()
    return f"a{base64.b32hexencode(digest).decode().rstrip('=')}.ests.aks".lower()


class ProxiedTokenTransport(TokenBindingTransportMixin, TokenTransport):
    """The token transport, each request sent to the proxy with its TLS name and CA (azure-identity's
    mixin rewrites the URL and notices a replaced CA file, as its requests transport does)."""

    def __init__(self, cap: Callable[[], ByteCap], **options: Any) -> None:
        super().__init__(cap=cap, **options)  # the mixin takes proxy_endpoint, sni and ca_file
        self.tls = (self._context(), self._sni)

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self._ca_data)

    def send(self, request: HttpRequest, **kwargs: Any) -> ReadResponse:
        self._update_request_url(request)
        if self._ca_file and self._has_ca_file_changed():
            self._load_ca_file_to_data()
            self.tls = (self._context(), self._sni)
            self.close()  # new connections trust the new CA
        return super().send(request, **kwargs)


class TokenProxy:
    """The provider's token proxy settings; a transport for each identity-binding credential."""

    def __init__(self, url: str = "", sni_name: str = "", ca_file: str = SERVICE_ACCOUNT_CA) -> None:
        self.url = url or DEFAULT_URL
        self._sni_name = sni_name
        self._ca_file = ca_file
        self._lock = threading.Lock()

    def transport(self, cap: Callable[[], ByteCap]) -> ProxiedTokenTransport:
        """An identity-binding credential's transport, each answer bounded by ``cap``."""
        ca_file = self._ca_file if os.path.exists(self._ca_file) else None
        name = self._server_name(ca_file)
        try:
            return ProxiedTokenTransport(cap, proxy_endpoint=self.url, sni=name, ca_file=ca_file)
        except (ValueError, ssl.SSLError) as err:  # a bad URL, a CA file that holds no certificate
            raise KeyVaultError(
                f"identity binding: token proxy {self.url!r}: {err}", Category.INVALID
            ) from None

    def _server_name(self, ca_file: str | None) -> str:
        with self._lock:
            if not self._sni_name:
                # Found once; a failure is tried again by the next mount (the API server may be back).
                self._sni_name = server_name(self._cluster_id(ca_file))
            return self._sni_name

    @staticmethod
    def _cluster_id(ca_file: str | None) -> str:
        unknown = "identity binding: cannot derive the token proxy's TLS name ({}); set --sni-name"
        if ca_file is None:
            raise KeyVaultError(unknown.format(f"no {SERVICE_ACCOUNT_CA}"), Category.UNAVAILABLE)
        try:
            port = numbers.port(os.environ.get("KUBERNETES_SERVICE_PORT") or "443", zero=False)
        except numbers.NumberError as err:
            raise KeyVaultError(
                unknown.format(f"KUBERNETES_SERVICE_PORT {err}"), Category.UNAVAILABLE
            ) from None
        try:
            context = ssl.create_default_context(cafile=ca_file)
            with (
                socket.create_connection((_API_SERVER, port), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname=_API_SERVER) as tls,
            ):
                sans = (tls.getpeercert() or {}).get("subjectAltName", ())
        except (OSError, ValueError) as err:
            raise KeyVaultError(unknown.format(f"API server: {err}"), Category.UNAVAILABLE) from None
        for entry in sans if isinstance(sans, tuple) else ():
            name = entry[1] if entry[0] == "DNS" else ""
            if (
                name.startswith(_SAN_PREFIX)
                and name.endswith(_SAN_SUFFIX)
                and len(name) > len(_SAN_PREFIX + _SAN_SUFFIX)
            ):
                return name[len(_SAN_PREFIX) : -len(_SAN_SUFFIX)]
        raise KeyVaultError(
            unknown.format("no cluster id in the API server's certificate"), Category.UNAVAILABLE
        )
