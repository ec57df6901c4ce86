"""The metrics and health endpoint server: bounded under idle connections, timeouts, clean shutdown."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from kvmount.base.endpoints import MAX_CONNECTIONS, EndpointServer, ok_route, serve_http
from tests.support import eventually


def boom() -> tuple[int, bytes, str]:
    raise RuntimeError("route failed")


@pytest.fixture
def server() -> Iterator[EndpointServer]:
    started = serve_http("127.0.0.1:0", {"/healthz": ok_route(), "/boom": boom})
    yield started
    started.shutdown()


def url(server: EndpointServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def raw(server: EndpointServer, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_answers(server: EndpointServer) -> None:
    with urllib.request.urlopen(url(server, "/healthz?verbose"), timeout=5) as response:
        assert (response.status, response.read()) == (200, b"ok\n")
    for path, status in (("/nope", 404), ("/boom", 500)):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url(server, path), timeout=5)
        assert info.value.code == status
    assert raw(server, b"POST /healthz HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    head = raw(server, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
    assert raw(server, b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw(server, b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 20000).startswith(b"HTTP/1.1 400 ")


def test_idle_connections_cost_no_thread_and_lock_no_one_out(server: EndpointServer) -> None:
    threads = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) for _ in range(1000)]
    try:
        for sock in idle:
            sock.setblocking(False)
        with urllib.request.urlopen(url(server, "/healthz"), timeout=5) as response:
            assert response.status == 200
        assert threading.active_count() == threads, "no thread per connection"
        # All but the newest MAX_CONNECTIONS were dropped to admit newer ones.
        eventually(
            lambda: sum(closed_by_server(s) for s in idle) >= len(idle) - MAX_CONNECTIONS,
            timeout=10,
            what="old idle connections dropped",
        )
        start = time.monotonic()
        server.shutdown()
        assert time.monotonic() - start < 2, "shutdown waits for no idle connection"
        server.shutdown = lambda: None  # type: ignore[method-assign]  # done; the fixture's call is a no-op
    finally:
        for sock in idle:
            sock.close()


def test_a_silent_connection_is_closed_after_the_timeout() -> None:
    quick = EndpointServer("127.0.0.1", 0, {"/healthz": ok_route()}, timeout=0.5)
    try:
        with socket.create_connection(("127.0.0.1", quick.server_address[1]), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # and never the rest
            sock.setblocking(False)
            eventually(lambda: closed_by_server(sock), timeout=5, what="a silent connection closed")
    finally:
        quick.shutdown()
