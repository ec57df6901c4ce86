"""HTTP and TLS plumbing: the double's listeners (threaded HTTP/1.1 with keep-alive, the TLS
handshake on the connection's own thread), the request handler that hands each request to
the router and acts out injected faults, the CONNECT tunnel, and the throwaway TLS material.

Every accepted socket has TCP_NODELAY: a response's headers and body leave as two writes
(two TLS records), and Nagle's algorithm would hold the second until the client's delayed
ACK, about 40 ms per request."""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import struct
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, cast

from tests.certs import TlsMaterial, server_tls
from tests.peers.keyvault_double.base import DISCOVERY_HOSTS, FIXED_HOSTS, Response
from tests.peers.keyvault_double.faults import BODY_FAULTS, DropConnection, InjectedFault, body_fault


def make_tls(extra_hosts: tuple[str, ...] = ()) -> TlsMaterial:
    """A throwaway CA and a server cert for localhost and the vault names."""
    hosts = (
        "localhost",
        "vault.localhost",
        "*.vault.localhost",
        *FIXED_HOSTS,
        *DISCOVERY_HOSTS,
        *extra_hosts,
    )
    return server_tls("vault.localhost", hosts)


class Router(Protocol):
    """What the listeners ask of the double (server.DoubleServer)."""

    def route(self, role: str, h: Handler, raw: bytes) -> Response: ...

    def tunnel_target(self, role: str, authority: str) -> tuple[str, int] | None: ...


class Listener(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], double: Router, role: str, tls: ssl.SSLContext | None) -> None:
        self.double = double
        self.role = role
        self.tls = tls
        super().__init__(addr, Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # see the module docstring
        return sock, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The handshake runs here, on the connection's own thread, so one slow
        # client cannot stall accept().
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients dropping connections is normal for a test peer; stay quiet.
        pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    server: Listener

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_CONNECT(self) -> None:
        self.close_connection = True
        target = self.server.double.tunnel_target(self.server.role, self.path)
        if target is None:
            self.send_error(403, "The double tunnels only to its AAD instance discovery")
            return
        with socket.create_connection(target, timeout=30) as upstream:
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.send_response(200, "Connection Established")
            self.end_headers()
            _pipe(self.connection, upstream)

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            status, headers, payload = self.server.double.route(self.server.role, self, raw)
        except InjectedFault as injected:
            self._act_out(injected)
            return
        except DropConnection:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        data = b"" if payload is None else payload
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _act_out(self, injected: InjectedFault) -> None:
        self.close_connection = True
        if injected.fault.kind in BODY_FAULTS:
            body_fault(self, injected.fault, injected.response)
            return
        if injected.fault.kind in ("stall", "cut"):
            status, headers, payload = injected.response
            data = payload or b""
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            if injected.fault.kind == "stall":
                time.sleep(injected.fault.seconds)
            return
        # SO_LINGER 0: close() sends RST, as a load balancer dropping the connection does.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _pipe(one: socket.socket, other: socket.socket, idle: float = 60) -> None:
    """Copy bytes both ways until either side closes or both stay idle for ``idle`` s."""
    peer = {one: other, other: one}
    with selectors.DefaultSelector() as selector:
        for sock in peer:
            selector.register(sock, selectors.EVENT_READ)
        while events := selector.select(timeout=idle):
            for key, _ in events:
                source = cast(socket.socket, key.fileobj)
                try:
                    data = source.recv(65536)
                    if not data:
                        return
                    peer[source].sendall(data)
                except OSError:
                    return
