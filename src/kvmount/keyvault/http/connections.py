"""Keep-alive HTTPS connections to one origin, on http.client alone.

Profiled (bench/RESULTS.md), a Key Vault GET through urllib3's connection pool cost
about twice the CPU of the same exchange on http.client: urllib3 normalises and
checks every header again, builds three Timeout objects, copies the headers twice
and checks their parsing, for each request. The vault reads of the provider need
none of that: a few headers azure-core set, a small body. So connections straight
to a vault (no proxy) are http.client's, kept here:

* an idle connection is checked before it is reused (a server may have closed it;
  readable with nothing asked means closed), as urllib3 does;
* the connect timeout covers the TCP connect and the TLS handshake, the read
  timeout every read after (a stall mid-body ends there);
* failures are azure-core's exceptions, as RequestsTransport raises them for the
  same failure: connecting (refused, DNS, TLS, timeout) is a request error, a broken
  or timed-out answer a response error, a body cut short an IncompleteReadError;
* a gzip or deflate body (requests' Accept-Encoding) is decoded.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import zlib

from azure.core.exceptions import (
    DecodeError,
    IncompleteReadError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from urllib3 import HTTPHeaderDict
from urllib3.util.wait import wait_for_read


class Connections:
    """Up to ``keep`` idle keep-alive connections to ``host``:``port``, thread-safe."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, keep: int) -> None:
        self._host, self._port, self._context, self._keep = host, port, context, keep
        self._idle: list[http.client.HTTPSConnection] = []
        self._lock = threading.Lock()

    def _reused(self) -> http.client.HTTPSConnection | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if conn.sock is not None and not wait_for_read(conn.sock, timeout=0.0):
                return conn
            conn.close()

    def _connected(self, timeout: float) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._context)
        try:
            conn.connect()
        except TimeoutError as err:
            conn.close()
            raise ServiceRequestTimeoutError(err, error=err) from err
        except OSError as err:  # refused, no such host, TLS (ssl.SSLError)
            conn.close()
            raise ServiceRequestError(err, error=err) from err
        return conn

    def exchange(
        self,
        method: str,
        target: str,
        body: bytes | None,
        headers: dict[str, str],
        connect_timeout: float,
        read_timeout: float,
    ) -> tuple[int, str, HTTPHeaderDict, bytes]:
        """(status, reason, headers, body) of one request."""
        conn = self._reused() or self._connected(connect_timeout)
        try:
            if conn.sock is not None:  # always: a new or a checked idle connection
                conn.sock.settimeout(read_timeout)
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as err:
            conn.close()
            raise _response_error(err) from err
        except BaseException:
            conn.close()
            raise
        if response.will_close:
            conn.close()
        else:
            with self._lock:
                keep = len(self._idle) < self._keep
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()
        answer = HTTPHeaderDict()
        for name, value in response.msg.items():
            answer.add(name, value)
        return response.status, response.reason, answer, decoded(answer.get("Content-Encoding"), data)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _response_error(err: OSError | http.client.HTTPException) -> Exception:
    """The azure-core exception for a failure after connecting."""
    if isinstance(err, TimeoutError):
        return ServiceResponseTimeoutError(err, error=err)
    if isinstance(err, http.client.IncompleteRead):
        return IncompleteReadError(err, error=err)
    if isinstance(err, ssl.SSLError):
        return ServiceRequestError(err, error=err)  # as requests' SSLError, a ConnectionError
    return ServiceResponseError(err, error=err)


def decoded(encoding: str | None, data: bytes) -> bytes:
    """The body without its Content-Encoding (gzip or deflate, the ones asked for)."""
    kind = (encoding or "").strip().lower()
    if not data or kind in ("", "identity"):
        return data
    try:
        if kind == "gzip":
            return zlib.decompress(data, 16 + zlib.MAX_WBITS)
        if kind == "deflate":
            try:
                return zlib.decompress(data)
            except zlib.error:  # raw deflate, without the zlib header
                return zlib.decompress(data, -zlib.MAX_WBITS)
    except zlib.error as err:
        raise DecodeError(f"the {kind} body cannot be decoded: {err}") from None
    raise DecodeError(f"the body's Content-Encoding {encoding!r} was not asked for")
