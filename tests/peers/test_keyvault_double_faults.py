"""The Key Vault double's injected faults, as a raw HTTPS client sees them."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import uuid
import zlib
from collections.abc import Iterator

import pytest

from tests.peers.keyvault_double import Fault, KeyVaultDouble


@pytest.fixture
def name(keyvault: KeyVaultDouble) -> Iterator[str]:
    secret = f"faulty-{uuid.uuid4().hex[:8]}"
    keyvault.put_secret("kvtest", secret, "value")
    yield secret
    keyvault.set_faults()


def get(keyvault: KeyVaultDouble, path: str, timeout: float = 10) -> http.client.HTTPResponse:
    context = ssl.create_default_context(cafile=str(keyvault.ca_path))
    conn = http.client.HTTPSConnection(
        "kvtest.vault.localhost", keyvault.port, context=context, timeout=timeout
    )
    conn.request("GET", f"{path}?api-version=7.4")
    return conn.getresponse()


def test_status_faults_answer_with_retry_after_then_run_out(keyvault: KeyVaultDouble, name: str) -> None:
    keyvault.set_faults(Fault("status", count=2, path=name, status=429, retry_after="7"))
    for _ in range(2):
        response = get(keyvault, f"/secrets/{name}")
        assert (response.status, response.getheader("Retry-After")) == (429, "7")
    # Then the data plane answers again (401: this raw client sends no token).
    assert get(keyvault, f"/secrets/{name}").status == 401
    # Other paths were never affected.
    keyvault.set_faults(Fault("status", count=1, path=name, status=503))
    assert get(keyvault, "/secrets/other").status == 401


def test_a_reset_fault_resets_the_connection(keyvault: KeyVaultDouble, name: str) -> None:
    keyvault.set_faults(Fault("reset", count=1, path=name))
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected, ssl.SSLError)):
        get(keyvault, f"/secrets/{name}").read()


def test_a_stall_fault_sends_half_the_body_then_nothing(keyvault: KeyVaultDouble, name: str) -> None:
    keyvault.set_faults(Fault("stall", count=1, path=name, seconds=30))
    response = get(keyvault, f"/secrets/{name}", timeout=1)
    assert response.status == 200
    length = int(response.getheader("Content-Length") or 0)
    with pytest.raises((TimeoutError, socket.timeout)):
        response.read(length)
    entries = [r for r in keyvault.requests() if r.get("path") == f"/secrets/{name}"]
    assert entries[-1]["fault"] == "stall"


def test_body_faults_send_the_real_answer_behind_whitespace(keyvault: KeyVaultDouble, name: str) -> None:
    keyvault.set_faults(Fault("gzip-bomb", count=1, path=name, size=8 << 20))
    bomb = get(keyvault, f"/secrets/{name}")
    packed = bomb.read()
    assert bomb.getheader("Content-Encoding") == "gzip" and len(packed) < 64 << 10
    unpacked = zlib.decompress(packed, 16 + zlib.MAX_WBITS)
    assert len(unpacked) > 8 << 20 and json.loads(unpacked)["error"]["code"]  # 401: no token sent
    keyvault.set_faults(Fault("huge-body", count=1, path=name, size=1 << 20))
    huge = get(keyvault, f"/secrets/{name}")
    assert int(huge.getheader("Content-Length") or 0) > 1 << 20 and json.loads(huge.read())["error"]


def test_an_endless_chunked_body_has_no_last_chunk(keyvault: KeyVaultDouble, name: str) -> None:
    keyvault.set_faults(Fault("endless-chunked", count=1, path=name, size=1 << 20))
    response = get(keyvault, f"/secrets/{name}")
    assert response.getheader("Transfer-Encoding") == "chunked"
    with pytest.raises(http.client.IncompleteRead):  # the safety stop, never a last chunk
        response.read()


def test_a_drip_sends_one_byte_per_interval(keyvault: KeyVaultDouble, name: str) -> None:
    keyvault.set_faults(Fault("drip", count=1, path=name, seconds=0.2))
    response = get(keyvault, f"/secrets/{name}")
    start = time.monotonic()
    assert len(response.read(5)) == 5
    assert time.monotonic() - start >= 0.6  # five bytes, four intervals at least


def test_token_route_faults_take_only_their_service_and_client(keyvault: KeyVaultDouble) -> None:
    def imds(client: str) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", keyvault.imds_port, timeout=10)
        query = f"api-version=2018-02-01&resource=https://vault.localhost&client_id={client}"
        conn.request("GET", f"/metadata/identity/oauth2/token?{query}", headers={"Metadata": "true"})
        return conn.getresponse()

    keyvault.set_faults(Fault("gzip-bomb", count=5, size=8 << 20, service="imds", client="uami-bombed"))
    try:
        # Another client, and Key Vault's data plane, are answered as always.
        assert json.loads(imds("uami-other").read())["access_token"]
        assert get(keyvault, "/secrets/any").status == 401
        bomb = imds("uami-bombed")
        unpacked = zlib.decompress(bomb.read(), 16 + zlib.MAX_WBITS)
        assert bomb.getheader("Content-Encoding") == "gzip" and len(unpacked) > 8 << 20
        assert json.loads(unpacked)["access_token"]  # the real token answer behind the whitespace
    finally:
        keyvault.set_faults()
    entries = [r for r in keyvault.requests() if r.get("service") == "imds"]
    assert entries[-1]["fault"] == "gzip-bomb" and "fault" not in entries[-2]
