"""Keep-alive HTTPS connections to one origin, on http.client alone.

Profiled (bench/RESULTS.md), a Key Vault GET through urllib3's connection pool cost
about twice the CPU of the same exchange on http.client: urllib3 normalises and
checks every header again, builds three Timeout objects, copies the headers twice
and checks their parsing, for each request. The vault reads of the provider need
none of that: a few headers azure-core set, a small body. So connections straight
to a vault (no proxy) are http.client's, kept here:

* an idle connection is checked before it is reused (a server may have closed it;
  readable with nothing asked means closed), as urllib3 does;
* the connect timeout covers the TCP connect and the TLS handshake; the read
  timeout is the time the whole answer (headers and body) has to arrive: every
  recv waits only for what is left of it, so a server sending a byte a second
  cannot keep a read (and its fetch worker) forever;
* failures are azure-core's exceptions, as RequestsTransport raises them for the
  same failure: connecting (refused, DNS, TLS, timeout) is a request error, a broken
  or timed-out answer a response error, a body cut short an IncompleteReadError;
* a gzip or deflate body (requests' Accept-Encoding) is decoded as it arrives, and
  what it decodes to is counted against the read's ``ReadCap`` (keyvault/parameters/limits.py)
  chunk by chunk: a 2 MB gzip bomb or an endless chunked body is refused at the cap,
  never held whole.
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any, Protocol

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

# Bytes asked of the socket, and decoded at most, per step of a body's read.
CHUNK = 64 * 1024


class ByteCap(Protocol):
    """What one answer's decoded bytes are counted against as they arrive; ``add`` raises
    past the limit, ``reset`` forgets the answer so far (keyvault/parameters/limits.py ReadCap:
    http/ imports nothing else of kvmount)."""

    def add(self, size: int) -> None: ...

    def reset(self) -> None: ...


class _Timed(io.RawIOBase):
    """A socket's reads, each waiting only for what is left until ``deadline``. They go
    through the socket's own reader (makefile), which keeps its descriptor open until
    the response is closed: http.client closes the connection first when the server
    closes it after the answer (HTTP/1.0, ``Connection: close``)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock, self._deadline = sock, deadline
        self._raw = sock.makefile("rb", buffering=0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the answer did not arrive whole within the read timeout")
        self._sock.settimeout(left)
        got = self._raw.readinto(buffer)
        if got is None:  # nothing to read, which a socket with a timeout does not answer
            raise TimeoutError("the answer did not arrive whole within the read timeout")
        return got

    def close(self) -> None:
        self._raw.close()
        super().close()


class _Socket:
    """What http.client's response takes of its socket (``makefile``), over ``_Timed``."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock, self._deadline = sock, deadline

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_Timed(self._sock, self._deadline))


class _Connection(http.client.HTTPSConnection):
    """An HTTPS connection whose answers must arrive whole by ``deadline``; its TLS server
    name (sent and checked) is ``server_name`` when set, else the host's."""

    deadline = 0.0
    server_name: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # http.client builds its response from response_class(sock, method=...).
        self.response_class = self._response  # type: ignore[assignment]

    def connect(self) -> None:
        if self.server_name is None:
            return super().connect()
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.server_name)  # type: ignore[attr-defined]

    def _response(self, sock: socket.socket, *args: Any, **kwargs: Any) -> http.client.HTTPResponse:
        return http.client.HTTPResponse(_Socket(sock, self.deadline), *args, **kwargs)  # type: ignore[arg-type]


class Connections:
    """Up to ``keep`` idle keep-alive connections to ``host``:``port``, thread-safe; TLS with
    ``server_name`` instead of the host's name when given."""

    def __init__(
        self, host: str, port: int, context: ssl.SSLContext, keep: int, server_name: str | None = None
    ) -> None:
        self._host, self._port, self._context, self._keep = host, port, context, keep
        self._server_name = server_name
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def _reused(self) -> _Connection | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if conn.sock is not None and not wait_for_read(conn.sock, timeout=0.0):
                return conn
            conn.close()

    def _connected(self, timeout: float) -> _Connection:
        conn = _Connection(self._host, self._port, timeout=timeout, context=self._context)
        conn.server_name = self._server_name
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
        cap: ByteCap,
    ) -> tuple[int, str, HTTPHeaderDict, bytes]:
        """(status, reason, headers, body) of one request; the answer must arrive within
        ``read_timeout`` of the request and its decoded body stay within ``cap``."""
        conn = self._reused() or self._connected(connect_timeout)
        try:
            conn.deadline = time.monotonic() + read_timeout
            if conn.sock is not None:  # always: a new or a checked idle connection
                conn.sock.settimeout(read_timeout)
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            data = read_body(response.read1, response.getheader("Content-Encoding"), cap)
            if response.length:  # read1 ends quietly where the server closed early
                raise http.client.IncompleteRead(b"", response.length)
            # read1 leaves a body read to its Content-Length open, and http.client sends
            # nothing more on a connection whose last response is open.
            response.close()
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
        return response.status, response.reason, answer, data

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


class _Decoder:
    """A gzip or deflate body decoded piece by piece, each piece at most CHUNK bytes."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS if kind == "gzip" else zlib.MAX_WBITS)
        self._first = True

    def pieces(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        try:
            try:
                out.append(self._zlib.decompress(data, CHUNK))
            except zlib.error:
                if not (self._first and self._kind == "deflate"):
                    raise
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, without the zlib header
                out.append(self._zlib.decompress(data, CHUNK))
            self._first = False
            while self._zlib.unconsumed_tail:
                out.append(self._zlib.decompress(self._zlib.unconsumed_tail, CHUNK))
        except zlib.error as err:
            raise DecodeError(f"the {self._kind} body cannot be decoded: {err}") from None
        return out

    def rest(self) -> bytes:
        """What the decoder still holds once the body has ended (at most its window)."""
        try:
            return self._zlib.flush()
        except zlib.error as err:
            raise DecodeError(f"the {self._kind} body cannot be decoded: {err}") from None


def read_body(read1: Callable[[int], bytes], encoding: str | None, cap: ByteCap) -> bytes:
    """A body read with ``read1`` (at most one recv each) and decoded per its Content-Encoding
    (gzip or deflate, the ones asked for), its decoded bytes counted by ``cap`` as they come."""
    kind = (encoding or "").strip().lower()
    if kind not in ("", "identity", "gzip", "deflate"):
        raise DecodeError(f"the body's Content-Encoding {encoding!r} was not asked for")
    decoder = _Decoder(kind) if kind in ("gzip", "deflate") else None
    parts: list[bytes] = []
    while raw := read1(CHUNK):
        for piece in decoder.pieces(raw) if decoder else [raw]:
            cap.add(len(piece))
            parts.append(piece)
    if decoder:
        parts.append(decoder.rest())
        cap.add(len(parts[-1]))
    return b"".join(parts)
