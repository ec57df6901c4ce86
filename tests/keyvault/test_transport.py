"""The Key Vault transport (keyvault/http/transport.py) against the Key Vault double over real TLS:
the CA bundle and proxies from the environment as requests reads them, azure-core's
exceptions for each kind of failure, and the options it refuses."""

from __future__ import annotations

import dataclasses
import gzip
import http.server
import select
import socket
import socketserver
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import (
    DecodeError,
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.rest import HttpRequest

from kvmount.keyvault.errors import AnswerTooLarge
from kvmount.keyvault.http.connections import read_body
from kvmount.keyvault.http.transport import VaultTransport
from kvmount.keyvault.parameters.limits import ContentBudget, ReadCap
from tests.certs import server_tls
from tests.peers.keyvault_double import Fault, KeyVaultDouble
from tests.support import free_port

VAULT = "kvtest"


class _Tunnel(socketserver.BaseRequestHandler):
    """CONNECT host:port, then bytes both ways; the target is recorded."""

    server: _Proxy

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        method, target = head.split(b" ")[:2]
        self.server.seen.append(f"{method.decode()} {target.decode()}")
        host, port = target.decode().rsplit(":", 1)
        with socket.create_connection(("127.0.0.1" if host.endswith("localhost") else host, int(port))) as up:
            self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            ends = [self.request, up]
            while True:
                ready, _, _ = select.select(ends, [], [], 5)
                if not ready:
                    return
                for end in ready:
                    data = end.recv(65536)
                    if not data:
                        return
                    (up if end is self.request else self.request).sendall(data)


class _Proxy(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Tunnel)
        self.seen: list[str] = []


@pytest.fixture
def proxy() -> Iterator[_Proxy]:
    server = _Proxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def new_transport() -> VaultTransport:
    return VaultTransport(5, 5, default_cap=ReadCap)


def challenge(kv: KeyVaultDouble, path: str = "/secrets/x") -> HttpRequest:
    """A request without a token: the vault answers 401 with its challenge."""
    return HttpRequest(
        "GET", f"{kv.url_for(VAULT)}{path}?api-version=7.5", headers={"Accept": "application/json"}
    )


def test_a_read_trusts_the_ca_bundle_of_the_environment(kv_env: KeyVaultDouble) -> None:
    transport = new_transport()
    response = transport.send(challenge(kv_env))
    assert response.status_code == 401
    # Headers as azure-core's policies read them: case-insensitive.
    assert response.headers["www-authenticate"] == response.headers["WWW-Authenticate"]
    assert response.json()["error"]["code"]
    assert response.is_stream_consumed and response.read() == response.content


def test_without_the_bundle_the_vault_is_not_trusted(
    kv_env: KeyVaultDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    with pytest.raises(ServiceRequestError):
        new_transport().send(challenge(kv_env))


def test_a_missing_bundle_names_the_variable(kv_env: KeyVaultDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    with pytest.raises(ServiceRequestError, match="REQUESTS_CA_BUNDLE"):
        new_transport().send(challenge(kv_env))


def test_https_proxy_tunnels_and_no_proxy_bypasses(
    kv_env: KeyVaultDouble, proxy: _Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert new_transport().send(challenge(kv_env)).status_code == 401
    assert proxy.seen == [f"CONNECT {VAULT}.vault.localhost:{kv_env.port}"]
    monkeypatch.setenv("NO_PROXY", ".vault.localhost")
    assert new_transport().send(challenge(kv_env)).status_code == 401
    assert len(proxy.seen) == 1


def test_an_unreachable_proxy_is_a_request_error(
    kv_env: KeyVaultDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(ServiceRequestError):
        new_transport().send(challenge(kv_env))


def test_a_refused_connection_is_a_request_error(kv_env: KeyVaultDouble) -> None:
    port = free_port()  # nothing listens there
    request = HttpRequest("GET", f"https://{VAULT}.vault.localhost:{port}/secrets/x")
    with pytest.raises(ServiceRequestError):
        new_transport().send(request)


def test_a_stall_mid_body_ends_at_the_read_timeout(kv_env: KeyVaultDouble) -> None:
    name = f"stall-{time.monotonic_ns()}"
    kv_env.set_faults(Fault("stall", count=1, path=name, seconds=10))
    try:
        start = time.monotonic()
        with pytest.raises(ServiceResponseTimeoutError):
            new_transport().send(challenge(kv_env, f"/secrets/{name}"), read_timeout=0.5)
        assert time.monotonic() - start < 5
    finally:
        kv_env.set_faults()


def test_a_reset_is_a_response_error(kv_env: KeyVaultDouble) -> None:
    name = f"reset-{time.monotonic_ns()}"
    kv_env.set_faults(Fault("reset", count=1, path=name))
    try:
        with pytest.raises(ServiceResponseError):
            new_transport().send(challenge(kv_env, f"/secrets/{name}"))
    finally:
        kv_env.set_faults()


def test_streaming_and_unknown_options_are_refused(kv_env: KeyVaultDouble) -> None:
    transport = new_transport()
    with pytest.raises(ValueError, match="stream"):
        transport.send(challenge(kv_env), stream=True)
    with pytest.raises(TypeError, match="connection_verify"):
        transport.send(challenge(kv_env), connection_verify=False)


class _Ok(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_host_name_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server whose certificate (its CA trusted) names 127.0.0.1 but not localhost."""
    tls = server_tls("elsewhere.test", ["elsewhere.test"])
    (tmp_path / "ca.pem").write_bytes(tls.ca_pem)
    (tmp_path / "server.pem").write_bytes(tls.cert_pem + tls.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "ca.pem"))
    port = server.server_address[1]
    try:
        assert new_transport().send(HttpRequest("GET", f"https://127.0.0.1:{port}/")).status_code == 200
        with pytest.raises(ServiceRequestError, match="match"):
            new_transport().send(HttpRequest("GET", f"https://localhost:{port}/"))
    finally:
        server.shutdown()
        server.server_close()


def _reader(data: bytes, step: int = 7) -> Callable[[int], bytes]:
    """read1 over ``data``, a few bytes a call (as a slow network hands them over)."""
    parts = iter([data[i : i + step] for i in range(0, len(data), step)])
    return lambda size: next(parts, b"")


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate", "identity"])
def test_a_compressed_body_is_decoded(encoding: str) -> None:
    body = b'{"value": "v"}'
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    packed = {
        "gzip": gzip.compress(body),
        "deflate": zlib.compress(body),
        "raw-deflate": raw.compress(body) + raw.flush(),
        "identity": body,
    }[encoding]
    cap = ReadCap(len(body))
    assert read_body(_reader(packed), encoding.removeprefix("raw-"), cap) == body


def test_an_encoding_not_asked_for_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        read_body(_reader(b"\x00"), "br", ReadCap(10))
    with pytest.raises(DecodeError):
        read_body(_reader(b"not gzip at all"), "gzip", ReadCap(100))


# ---------------------------------------------------------------- bounded answers
# Each body fault of the double, on the direct route (http.client) and through a
# proxy (urllib3's pool): refused at the cap or the read timeout, never held whole.


@pytest.fixture(params=["direct", "proxied"])
def route(request: pytest.FixtureRequest, kv_env: KeyVaultDouble, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    if request.param == "proxied":
        proxy = request.getfixturevalue("proxy")
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    else:
        monkeypatch.delenv("HTTPS_PROXY", raising=False)
    return str(request.param)


def faulted(kv: KeyVaultDouble, fault: Fault) -> str:
    name = f"{fault.kind}-{time.monotonic_ns()}"
    kv.set_faults(dataclasses.replace(fault, path=name))
    return f"/secrets/{name}"


@pytest.mark.parametrize(
    "fault",
    [Fault("gzip-bomb", size=64 << 20), Fault("huge-body", size=64 << 20)],
    ids=["gzip-bomb", "huge-body"],
)
def test_an_answer_past_the_object_cap_is_refused_as_it_arrives(
    kv_env: KeyVaultDouble, route: str, fault: Fault
) -> None:
    path = faulted(kv_env, fault)
    try:
        with pytest.raises(AnswerTooLarge, match=r"1048576 bytes per object \(--max-object-bytes\)"):
            new_transport().send(challenge(kv_env, path), cap=ReadCap(1 << 20))
    finally:
        kv_env.set_faults()


def test_an_endless_body_is_refused_at_the_mount_budget(kv_env: KeyVaultDouble, route: str) -> None:
    # size: a safety stop for a client without bounds (the test then fails, not the machine).
    path = faulted(kv_env, Fault("endless-chunked", size=256 << 20))
    budget = ContentBudget(2 << 20, object_limit=1 << 30)
    cap = budget.cap()
    try:
        with pytest.raises(AnswerTooLarge, match=r"limit of 2097152 bytes per mount \(--max-mount-bytes\)"):
            new_transport().send(challenge(kv_env, path), cap=cap)
    finally:
        kv_env.set_faults()
    # Once the read has ended (fetch_version resets its cap), the budget is whole again.
    cap.reset()
    budget.cap().add(2 << 20)


def test_a_drip_ends_at_the_read_timeout_not_at_each_byte(kv_env: KeyVaultDouble, route: str) -> None:
    path = faulted(kv_env, Fault("drip", seconds=0.1, size=1000))
    start = time.monotonic()
    try:
        with pytest.raises(ServiceResponseTimeoutError):
            new_transport().send(challenge(kv_env, path), read_timeout=1)
    finally:
        kv_env.set_faults()
    assert time.monotonic() - start < 3  # the drip would last 100 s


def test_a_connection_is_reused_once_its_answer_is_read(kv_env: KeyVaultDouble, route: str) -> None:
    transport = new_transport()
    for _ in range(3):
        assert transport.send(challenge(kv_env)).status_code == 401


def test_a_retry_late_in_the_mount_ends_at_the_mounts_deadline(kv_env: KeyVaultDouble, route: str) -> None:
    # A retry keeps the read timeout the call began with; the mount's deadline still ends it.
    path = faulted(kv_env, Fault("drip", seconds=0.1, size=1000))
    start = time.monotonic()
    try:
        with pytest.raises(ServiceResponseTimeoutError):
            new_transport().send(challenge(kv_env, path), read_timeout=30, mount_deadline=start + 1)
        with pytest.raises(ServiceResponseTimeoutError, match="budget is spent"):
            new_transport().send(challenge(kv_env), mount_deadline=time.monotonic())
    finally:
        kv_env.set_faults()
    assert time.monotonic() - start < 3


def test_an_answer_within_the_caps_arrives_whole(kv_env: KeyVaultDouble, route: str) -> None:
    path = faulted(kv_env, Fault("gzip-bomb", size=100_000))
    try:
        response = new_transport().send(challenge(kv_env, path), cap=ReadCap(1 << 20))
    finally:
        kv_env.set_faults()
    assert response.status_code == 401 and response.json()["error"]["code"]
