"""The azure-core transport of Key Vault reads: http.client straight to a vault, no requests.

Profiled (bench/RESULTS.md), a read through azure-core's RequestsTransport spent
more of its CPU in requests (preparing the request, merging settings, the adapter,
the Response and azure-core's wrapper around it) than in the HTTP exchange itself,
and urllib3's pool below it as much again as http.client's exchange. This transport
hands azure-core's request to http.client connections kept per vault
(keyvault/connections.py) and answers with a response that is already read. Through
a proxy, urllib3's pool carries it (CONNECT tunnels, https proxies, credentials in
the proxy URL, as requests did). It keeps what requests gave these reads:

* proxies from the environment (HTTPS_PROXY, NO_PROXY, ...: requests' own rules,
  its ``get_environ_proxies`` and ``select_proxy``), read once per origin: the
  provider's environment does not change while it runs;
* the CA bundle as requests finds it: REQUESTS_CA_BUNDLE, else CURL_CA_BUNDLE, else
  certifi's (a file or a directory), loaded once into one TLS context for every
  vault (requests loaded a bundle named by the environment again for every new
  connection); host names checked;
* requests' default headers (Accept-Encoding, Connection: keep-alive), and no
  redirects or retries below azure-core's own policies;
* azure-core's exceptions, as RequestsTransport raises them, so the retry policy
  and the provider's classification (keyvault/fetch.py) see the same failures.

Bodies are always read whole (``stream=True`` is refused): Key Vault's answers are
small JSON documents. So each answer, on either route, is bounded while it arrives:
its decoded bytes by the request's ``cap`` (keyvault/parameters/limits.py ReadCap: the object's
cap and the mount's budget; --max-object-bytes alone when none is given), and its
time by ``read_timeout``, the time the whole answer has to arrive (a drip of one
byte a second does not restart it), and the mount's deadline. Through a proxy,
urllib3 reads the headers, each recv waiting up to the read timeout: they are
bounded in size by http.client, the body in time as on the direct route. Request
bodies, when any, are bytes, text or a form (http/token_transport.py's token requests).
"""

from __future__ import annotations

import codecs
import contextlib
import http.client
import json
import os
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import certifi
import urllib3
from azure.core.configuration import ConnectionConfiguration
from azure.core.exceptions import (
    DecodeError,
    HttpResponseError,
    IncompleteReadError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest, HttpResponse
from requests.utils import get_auth_from_url, get_environ_proxies, prepend_scheme_if_needed, select_proxy
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.exceptions import DecodeError as Urllib3DecodeError
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from kvmount.keyvault.http.connections import ByteCap, Connections, read_body
from kvmount.keyvault.http.shared_tls import loaded_context

# The pools a transport keeps (one per origin and proxy; a vault's transport has one).
MAX_POOLS = 16
# Connections kept per pool: the provider's default --max-concurrent-fetches, so
# concurrent mounts reuse connections instead of opening (TLS) and dropping them.
POOL_SIZE = 32
# requests' defaults (the encodings are the ones keyvault/connections.py decodes).
_DEFAULT_HEADERS = {"Accept-Encoding": "gzip, deflate", "Connection": "keep-alive"}


def _tls_context(direct: bool) -> ssl.SSLContext:
    """A context with only the CA bundle requests would use for these reads (not the
    system's, not SSL_CERT_FILE's), shared by every vault (a bundle of certifi's size is
    about 1 MiB in each context): the standard library's for http.client (it checks the
    host name itself), urllib3's for its pools."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
    try:
        return loaded_context(bundle, stdlib=direct)
    except (OSError, ssl.SSLError) as err:
        raise ServiceRequestError(
            f"cannot load the CA bundle {bundle}: {err.strerror or err}; check REQUESTS_CA_BUNDLE"
        ) from None


class ReadResponse(HttpResponse):
    """An azure-core response whose body is already read (the connection is back in its pool)."""

    __slots__ = ("_body", "_encoding", "_headers", "_reason", "_request", "_status")

    def __init__(
        self, request: HttpRequest, status: int, reason: str, headers: MutableMapping[str, str], body: bytes
    ) -> None:
        self._request = request
        self._status = status
        self._reason = reason
        self._headers = headers
        self._body = body
        self._encoding: str | None = None

    @property
    def request(self) -> HttpRequest:
        return self._request

    @property
    def url(self) -> str:
        return self._request.url

    @property
    def status_code(self) -> int:
        return self._status

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def headers(self) -> MutableMapping[str, str]:
        return self._headers

    @property
    def content_type(self) -> str | None:
        return self._headers.get("Content-Type")

    @property
    def content(self) -> bytes:
        return self._body

    @property
    def is_closed(self) -> bool:
        return True

    @property
    def is_stream_consumed(self) -> bool:
        return True

    @property
    def encoding(self) -> str | None:
        """As set, else the Content-Type's charset if Python knows it (as azure-core's responses)."""
        if self._encoding is None and self.content_type and "charset=" in self.content_type.lower():
            for param in self.content_type.split(";")[1:]:
                name, _, value = param.strip().partition("=")
                if name.lower() == "charset":
                    with contextlib.suppress(LookupError):
                        self._encoding = codecs.lookup(value.strip("\"' ")).name
        return self._encoding

    @encoding.setter
    def encoding(self, value: str | None) -> None:
        self._encoding = value

    def text(self, encoding: str | None = None) -> str:
        """The body decoded: utf-8 (a byte order mark dropped) unless a charset says otherwise."""
        encoding = encoding or self.encoding
        if encoding in (None, "utf-8"):
            return self.content.decode("utf-8-sig", errors="strict" if encoding else "replace")
        return self.content.decode(encoding)

    def json(self) -> Any:
        return json.loads(self.text())

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise HttpResponseError(response=self)

    def __enter__(self) -> ReadResponse:
        return self

    def __exit__(self, *args: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def read(self) -> bytes:
        return self.content

    def iter_raw(self, **kwargs: Any) -> Iterator[bytes]:
        yield self.content

    def iter_bytes(self, **kwargs: Any) -> Iterator[bytes]:
        yield self.content


class VaultTransport(HttpTransport[HttpRequest, ReadResponse]):
    """A thread-safe transport for many pipelines: the connections of each origin."""

    def __init__(
        self,
        connection_timeout: float = 300,
        read_timeout: float = 300,
        *,
        default_cap: Callable[[], ByteCap],
    ) -> None:
        """``default_cap`` bounds an answer whose request brought no cap of its own."""
        self._default_cap = default_cap
        # Every https route's TLS context and server name, when set (identity binding's token
        # proxy: its CA and name); else the CA bundle as requests finds it and the host's name.
        self.tls: tuple[ssl.SSLContext, str] | None = None
        # Read by azure-core's retry policy (it caps the connection timeout at the call's).
        self.connection_config = ConnectionConfiguration(
            connection_timeout=connection_timeout, read_timeout=read_timeout
        )
        self._lock = threading.Lock()
        # An https origin's route: http.client connections straight to it, or, through a
        # proxy, urllib3's pool (CONNECT tunnels, https proxies, proxy credentials).
        self._routes: dict[str, Connections | HTTPConnectionPool] = {}
        # A pool manager per proxy URL (None: plain HTTP without one).
        self._managers: dict[str | None, urllib3.PoolManager] = {}

    def open(self) -> None:
        """Connections open as origins are first asked for."""

    def close(self) -> None:
        with self._lock:
            self._close_routes()
            for manager in self._managers.values():
                manager.clear()
            self._managers.clear()

    def __enter__(self) -> VaultTransport:
        return self

    def __exit__(self, *args: Any) -> None:
        self.close()

    def _manager(self, proxy: str | None) -> urllib3.PoolManager:
        """The pool manager for ``proxy`` (None: none); the lock is held."""
        manager = self._managers.get(proxy)
        if manager is not None:
            return manager
        options: dict[str, Any] = {
            "num_pools": MAX_POOLS,
            "maxsize": POOL_SIZE,
            "ssl_context": _tls_context(False),
        }
        if proxy is None:
            manager = urllib3.PoolManager(**options)
        else:
            url = prepend_scheme_if_needed(proxy, "http")
            if not urllib3.util.parse_url(url).host or not url.lower().startswith(("http:", "https:")):
                raise ServiceRequestError(f"the proxy URL {url!r} is not an http(s) URL; check HTTPS_PROXY")
            username, password = get_auth_from_url(url)
            auth = urllib3.util.make_headers(proxy_basic_auth=f"{username}:{password}") if username else None
            manager = urllib3.ProxyManager(url, proxy_headers=auth, **options)
        self._managers[proxy] = manager
        return manager

    def _route(self, origin: str) -> Connections | HTTPConnectionPool:
        with self._lock:
            route = self._routes.get(origin)
            if route is None:
                if len(self._routes) >= MAX_POOLS:
                    self._close_routes()  # more origins than a vault has
                proxy = select_proxy(origin, get_environ_proxies(origin))
                if proxy is None:
                    parts = urllib3.util.parse_url(origin)
                    host, port = str(parts.host), parts.port or 443
                    context, name = self.tls or (_tls_context(True), None)
                    route = Connections(host, port, context, POOL_SIZE, name)
                else:
                    tls = {"ssl_context": self.tls[0], "server_hostname": self.tls[1]} if self.tls else None
                    route = self._manager(proxy).connection_from_url(origin, pool_kwargs=tls)
                self._routes[origin] = route
            return route

    def _close_routes(self) -> None:
        """The lock is held."""
        for route in self._routes.values():
            if isinstance(route, Connections):
                route.close()
        self._routes.clear()

    def send(
        self,
        request: HttpRequest,
        *,
        stream: bool = False,
        connection_timeout: float | None = None,
        read_timeout: float | None = None,
        cap: ByteCap | None = None,
        mount_deadline: float | None = None,
        **unknown: Any,
    ) -> ReadResponse:
        """``mount_deadline`` (time.monotonic()): by which any answer must have
        arrived too; azure-core's retries shrink the connect timeout to the call's
        ``timeout``, but not the read timeout."""
        if unknown:
            raise TypeError(f"VaultTransport.send got unexpected options {sorted(unknown)}")
        if stream:
            raise ValueError("VaultTransport reads whole bodies; stream=True is not supported")
        headers = dict(request.headers)
        for name, value in _DEFAULT_HEADERS.items():
            if name not in request.headers:  # case-insensitive
                headers[name] = value
        body = request.content
        if isinstance(body, dict):  # a form (the token requests'), encoded as requests does
            body = urllib.parse.urlencode(body, doseq=True)
        if isinstance(body, str):
            body = body.encode("utf-8")
        elif body is not None and not isinstance(body, bytes):
            raise ValueError("VaultTransport sends bodies of bytes, text or a form only")
        connect = connection_timeout or self.connection_config.timeout
        read = read_timeout or self.connection_config.read_timeout
        if mount_deadline is not None:
            read = min(read, mount_deadline - time.monotonic())
            if read <= 0:
                raise ServiceResponseTimeoutError("the mount's time budget is spent")
        cap = cap or self._default_cap()
        cap.reset()  # a retry's answer is counted afresh
        url = request.url
        if url.startswith("https://"):
            netloc, _, path = url[8:].partition("/")
            origin = f"https://{netloc}"
            route = self._routes.get(origin) or self._route(origin)
            target = "/" + path.partition("#")[0]
            if isinstance(route, Connections):  # the hot path: straight to the vault
                answer = route.exchange(request.method, target, body, headers, connect, read, cap)
                return ReadResponse(request, *answer)
            opener: Any = route
        else:
            # Plain HTTP (a forwarding proxy takes the whole URL): the pool manager decides.
            with self._lock:
                opener = self._manager(select_proxy(url, get_environ_proxies(url)))
            target = url
        arrive_by = time.monotonic() + read
        try:
            response = opener.urlopen(
                request.method,
                target,
                body=body,
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=urllib3.Timeout(connect=connect, read=read),
                preload_content=False,
                decode_content=False,
            )
        except (Urllib3HTTPError, OSError) as err:
            raise _azure_error(err) from err
        try:
            data = read_body(
                lambda n: _read1(response, arrive_by, n), response.headers.get("Content-Encoding"), cap
            )
        except (Urllib3HTTPError, OSError) as err:
            response.close()
            raise _azure_error(err) from err
        except BaseException:
            response.close()
            raise
        finally:
            response.release_conn()
        return ReadResponse(request, response.status, response.reason or "", response.headers, data)


def _read1(response: urllib3.BaseHTTPResponse, deadline: float, size: int) -> bytes:
    """At most ``size`` bytes of the raw body in one recv, which waits only until ``deadline``."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the answer did not arrive whole within the read timeout")
    sock = getattr(response.connection, "sock", None)
    if sock is not None:
        sock.settimeout(left)
    return response.read1(size, decode_content=False)


def _azure_error(err: Exception) -> Exception:
    """The azure-core exception RequestsTransport raises for the same failure."""
    if isinstance(err, NewConnectionError | ProxyError | SSLError):
        return ServiceRequestError(err, error=err)
    if isinstance(err, ConnectTimeoutError):
        return ServiceRequestTimeoutError(err, error=err)
    if isinstance(err, ReadTimeoutError | TimeoutError):
        return ServiceResponseTimeoutError(err, error=err)
    if isinstance(err, ProtocolError) and isinstance(err.args[-1], http.client.IncompleteRead):
        return IncompleteReadError(err, error=err)  # the connection closed mid-body
    if isinstance(err, Urllib3DecodeError):
        return DecodeError(err, error=err)
    return ServiceResponseError(err, error=err)
