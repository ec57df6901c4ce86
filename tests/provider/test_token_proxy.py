"""Identity binding through a token proxy: --token-proxy-url and --sni-name, end to end.

The proxy here stands for the one AKS runs: it speaks TLS only under its server
name (the handshake fails for any other), records what arrives and passes each
request on to the AAD double. The provider is the real process, started with
upstream's flags; the credential is azure-identity's, with its proxy transport.
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import grpc
import pytest

from kvmount.csi.attributes import SA_TOKENS
from kvmount.keyvault import IDENTITY_BINDING_AUDIENCE
from kvmount.proto import v1alpha1_pb2 as pb
from tests.certs import server_tls
from tests.peers.keyvault_double import KeyVaultDouble
from tests.provider.conftest import VAULT, Provider, start_provider, stop_provider

pytestmark = pytest.mark.peer  # each test runs kvmount as a process

PROXY_NAME = "token-proxy.test"
PREFIX = "/identity-binding"


class _Forward(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, str]]]
    upstream: ClassVar[str]
    upstream_context: ClassVar[ssl.SSLContext]

    def _forward(self) -> None:
        name = getattr(self.connection, "server_name_seen", "")
        self.seen.append((name, self.command, self.path))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        path = self.path.removeprefix(PREFIX)
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
        request = urllib.request.Request(self.upstream + path, body, headers, method=self.command)
        try:
            with urllib.request.urlopen(request, context=self.upstream_context, timeout=30) as response:
                status, payload, ctype = response.status, response.read(), response.headers["Content-Type"]
        except urllib.error.HTTPError as err:
            status, payload, ctype = err.code, err.read(), err.headers["Content-Type"]
        self.send_response(status)
        self.send_header("Content-Type", ctype or "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def token_proxy(
    keyvault: KeyVaultDouble, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, list[tuple[str, str, str]]]]:
    """(URL, a CA bundle trusting it and the double, what it saw)."""
    tmp = tmp_path_factory.mktemp("token-proxy")
    tls = server_tls(PROXY_NAME, [PROXY_NAME])
    (tmp / "cert.pem").write_bytes(tls.cert_pem)
    (tmp / "key.pem").write_bytes(tls.key_pem)
    bundle = tmp / "bundle.pem"
    bundle.write_bytes(Path(keyvault.ca_path).read_bytes() + tls.ca_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")

    def only_its_name(sock: ssl.SSLObject, name: str, _: ssl.SSLContext) -> int | None:
        if name != PROXY_NAME:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sock.server_name_seen = name  # type: ignore[attr-defined]
        return None

    context.sni_callback = only_its_name
    seen: list[tuple[str, str, str]] = []
    upstream_context = ssl.create_default_context(cafile=str(keyvault.ca_path))
    handler = type(
        "Forward",
        (_Forward,),
        {"seen": seen, "upstream": keyvault.authority, "upstream_context": upstream_context},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}{PREFIX}", bundle, seen
    server.shutdown()


def binding_attributes(provider: Provider, name: str) -> dict[str, str]:
    token = {IDENTITY_BINDING_AUDIENCE: {"token": f"sa.{uuid.uuid4().hex}.jwt"}}
    return provider.attributes(
        [{"objectName": name, "objectType": "secret"}],
        useAzureTokenProxy="true",
        clientID=f"bound-{uuid.uuid4().hex[:8]}",
        **{SA_TOKENS: json.dumps(token)},
    )


def test_token_requests_go_through_the_proxy_under_its_server_name(
    keyvault: KeyVaultDouble,
    token_proxy: tuple[str, Path, list[tuple[str, str, str]]],
    tmp_path: Path,
) -> None:
    url, bundle, seen = token_proxy
    trust = {"REQUESTS_CA_BUNDLE": str(bundle), "SSL_CERT_FILE": str(bundle)}
    provider = start_provider(
        tmp_path, keyvault, f"--token-proxy-url={url}", f"--sni-name={PROXY_NAME}", extra_env=trust
    )
    try:
        name = f"bound-{uuid.uuid4().hex[:8]}"
        keyvault.put_secret(VAULT, name, "bound value")
        seen.clear()
        response = provider.mount(binding_attributes(provider, name))
        assert [f.contents for f in response.files] == [b"bound value"]
    finally:
        stop_provider(provider)
    token_post = ("POST", f"{PREFIX}/{keyvault.tenant}/oauth2/v2.0/token")
    assert token_post in {(method, path.split("?")[0]) for _, method, path in seen}
    assert {sni for sni, _, _ in seen} == {PROXY_NAME}


def test_without_a_server_name_a_binding_mount_says_what_to_set(
    keyvault: KeyVaultDouble, token_proxy: tuple[str, Path, list[tuple[str, str, str]]], tmp_path: Path
) -> None:
    # No --sni-name and no service account CA to derive it with: the provider starts all the
    # same (as upstream) and each identity-binding mount names the flag.
    url, _, _ = token_proxy
    provider = start_provider(tmp_path, keyvault, f"--token-proxy-url={url}")
    try:
        with pytest.raises(grpc.RpcError) as info:
            provider.mount(binding_attributes(provider, "any"))
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "--sni-name" in str(info.value.details())
        version = provider.stub.Version(pb.VersionRequest(version="v1alpha1"), timeout=10)
        assert version.version == "v1alpha1"
    finally:
        stop_provider(provider)
