"""The bounded HTTP endpoint server for health and metrics routes."""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kvmount.base import numbers

log = logging.getLogger(__name__)

Route = Callable[[], tuple[int, bytes, str]]
# A client has this long to send its request and read the answer (a Prometheus scrape's default timeout).
REQUEST_TIMEOUT = 10.0
# Open connections at most; the oldest is dropped to admit a new one, so idle ones never lock clients out.
MAX_CONNECTIONS = 64
_MAX_REQUEST = 8192
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


@dataclass
class _Connection:
    sock: socket.socket
    deadline: float
    inbox: bytearray = field(default_factory=bytearray)
    outbox: memoryview | None = None
    # Answered: the rest of what the client sends is read and dropped until it closes, since
    # closing with unread input would reset the connection and could lose the answer.
    draining: bool = False


class EndpointServer:
    """Small GET routes (health, metrics) served by one thread and a selector.

    http.server's ThreadingHTTPServer starts a thread per connection and reads without
    a timeout, so idle connections pile up threads until the process cannot stop. Here
    a connection costs a socket only: it has REQUEST_TIMEOUT to send its request and read
    the answer, at most MAX_CONNECTIONS are open, and each answer closes its connection.
    Routes run on the loop thread, one at a time; they are quick or bound their own time
    (the provider's health check has --healthz-timeout).
    """

    def __init__(
        self, host: str, port: int, routes: dict[str, Route], timeout: float = REQUEST_TIMEOUT
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=128)
        self._listener.setblocking(False)
        self.server_address: tuple[str, int] = self._listener.getsockname()[:2]
        self.routes = routes
        self.timeout = timeout
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._open: dict[socket.socket, _Connection] = {}  # oldest first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"http:{self.server_address[1]}")
        self._thread.start()

    def shutdown(self) -> None:
        """Stop serving and close every connection; returns once the loop has ended."""
        self._stop.set()
        self._wake_w.send(b"x")
        self._thread.join()
        for sock in [*self._open, self._listener, self._wake_r, self._wake_w]:
            sock.close()
        self._open.clear()
        self._selector.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            # Wake at least twice a second to drop connections past their deadline.
            for key, events in self._selector.select(timeout=0.5):
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj is not self._wake_r:
                    conn: _Connection = key.data
                    if events & selectors.EVENT_WRITE:
                        self._write(conn)
                    else:
                        self._read(conn)
            now = time.monotonic()
            for conn in [c for c in self._open.values() if c.deadline < now]:
                self._close(conn)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # EMFILE and the like: try again on the next event
                log.warning("endpoint cannot accept", extra={"error": err.strerror})
                return
            sock.setblocking(False)
            if len(self._open) >= MAX_CONNECTIONS:
                self._close(next(iter(self._open.values())))
            conn = _Connection(sock, time.monotonic() + self.timeout)
            self._open[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        if conn.draining:
            return
        conn.inbox += data
        if b"\r\n\r\n" in conn.inbox or len(conn.inbox) > _MAX_REQUEST:
            self._answer(conn)

    def _answer(self, conn: _Connection) -> None:
        head = bytes(conn.inbox).split(b"\r\n", 1)[0].decode("latin-1")
        parts = head.split(" ")
        method = parts[0] if len(parts) == 3 else ""
        ctype = "text/plain"
        if not method or b"\r\n\r\n" not in conn.inbox:
            status, body = 400, b"bad request\n"
        elif method not in ("GET", "HEAD"):
            status, body = 405, b"method not allowed\n"
        elif (route := self.routes.get(parts[1].split("?", 1)[0])) is None:
            status, body = 404, b"not found\n"
        else:
            try:
                status, body, ctype = route()
            except Exception as err:  # a failing route answers 500; the server goes on
                log.warning(
                    "endpoint route failed", extra={"path": parts[1][:100], "error_type": type(err).__name__}
                )
                status, body = 500, b"internal error\n"
        head_lines = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        conn.outbox = memoryview(head_lines.encode() + (b"" if method == "HEAD" else body))
        self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        self._write(conn)

    def _write(self, conn: _Connection) -> None:
        assert conn.outbox is not None
        try:
            sent = conn.sock.send(conn.outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            sent = len(conn.outbox)  # the client went away: nothing left to send
        conn.outbox = conn.outbox[sent:]
        if conn.outbox:
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.draining = True
        self._selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def _close(self, conn: _Connection) -> None:
        self._selector.unregister(conn.sock)
        del self._open[conn.sock]
        conn.sock.close()


def serve_http(address: str, routes: dict[str, Route]) -> EndpointServer:
    """Serve small GET routes on ``host:port`` or ``:port`` (all IPv4 interfaces, as Go's
    ``:port`` flags of upstream) from a thread of its own."""
    host, _, port = address.rpartition(":")
    return EndpointServer(host.strip("[]") or "0.0.0.0", numbers.port(port), routes)


def metrics_route() -> Route:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return lambda: (200, generate_latest(), CONTENT_TYPE_LATEST)


def ok_route() -> Route:
    return lambda: (200, b"ok\n", "text/plain")
