"""Identity binding (useAzureTokenProxy): its parameters and the proxy's TLS server name."""

from __future__ import annotations

import json
import re
import ssl
import threading
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from azure.core.rest import HttpRequest

from kvmount.csi.attributes import SA_TOKENS
from kvmount.keyvault import (
    IDENTITY_BINDING_AUDIENCE,
    TOKEN_AUDIENCE,
    IdentityMode,
    InvalidSpec,
    KeyVaultError,
    parse_mount,
)
from kvmount.keyvault.errors import TokenAnswerTooLarge
from kvmount.keyvault.identity.token_proxy import TokenProxy, server_name
from kvmount.keyvault.parameters.limits import TokenCap
from tests.certs import server_tls

PROXY_NAME = "token-proxy.test"

OBJECTS = "array:\n  - |\n    objectName: a\n    objectType: secret\n"


def attrs(**extra: str) -> dict[str, str]:
    base = {"keyvaultName": "kv1", "tenantID": "t", "objects": OBJECTS}
    return {**base, **extra}


def tokens(audience: str) -> str:
    return json.dumps({audience: {"token": "sa.token.jwt", "expirationTimestamp": "2030-01-01T00:00:00Z"}})


def test_binding_takes_the_token_of_its_own_audience() -> None:
    params = parse_mount(
        attrs(
            useAzureTokenProxy="true",
            clientID="c",
            **{SA_TOKENS: tokens(IDENTITY_BINDING_AUDIENCE)},
        ),
        None,
    )
    assert (params.identity, params.client_id, params.service_account_token) == (
        IdentityMode.TOKEN_PROXY,
        "c",
        "sa.token.jwt",
    )


@pytest.mark.parametrize(
    ("extra", "field", "says"),
    [
        ({"useAzureTokenProxy": "true"}, "clientID", "required for useAzureTokenProxy"),
        (
            {"useAzureTokenProxy": "true", "clientID": "c", SA_TOKENS: tokens(TOKEN_AUDIENCE)},
            SA_TOKENS,
            IDENTITY_BINDING_AUDIENCE,
        ),
        ({"useAzureTokenProxy": "true", "clientID": "c"}, SA_TOKENS, IDENTITY_BINDING_AUDIENCE),
        ({"useAzureTokenProxy": "1", "useVMManagedIdentity": "1"}, "useAzureTokenProxy", "one identity"),
        ({"useAzureTokenProxy": "yes"}, "useAzureTokenProxy", "not a boolean"),
        (
            {"useAzureTokenProxy": "true", "clientID": "c", "tenantID": "",
             SA_TOKENS: tokens(IDENTITY_BINDING_AUDIENCE)},
            "tenantID",
            "required",
        ),
    ],
)  # fmt: skip
def test_binding_refused_naming_the_field(extra: dict[str, str], field: str, says: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_mount(attrs(**extra), None)
    assert field in str(info.value) and says in str(info.value)


def test_server_name_is_a_hash_of_the_cluster() -> None:
    name = server_name("cluster-1")
    assert re.fullmatch(r"a[0-9a-v]{52}\.ests\.aks", name)
    assert name == server_name("cluster-1") != server_name("cluster-2")


def test_without_sni_name_or_service_account_ca_a_mount_is_told_what_to_set() -> None:
    proxy = TokenProxy("https://127.0.0.1:1/", "", ca_file="/nonexistent/ca.crt")
    with pytest.raises(KeyVaultError, match="set --sni-name"):
        proxy.transport(TokenCap)


def test_proxy_url_must_be_https() -> None:
    with pytest.raises(KeyVaultError, match="https"):
        TokenProxy("http://proxy.example", "proxy.example").transport(TokenCap)


class _HugeAnswer(BaseHTTPRequestHandler):
    """A token proxy whose answer is the token behind megabytes of whitespace (HTTP/1.0: it
    closes the connection after the answer)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b" " * (4 << 20) + b'{"access_token": "t", "expires_in": 3600}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def huge_proxy(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(URL, CA file) of a proxy that speaks TLS only under PROXY_NAME."""
    tls = server_tls(PROXY_NAME, [PROXY_NAME])
    for name, pem in (("cert.pem", tls.cert_pem), ("key.pem", tls.key_pem), ("ca.pem", tls.ca_pem)):
        (tmp_path / name).write_bytes(pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    context.sni_callback = lambda _, name, __: (
        None if name == PROXY_NAME else ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HugeAnswer)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}/binding", tmp_path / "ca.pem"
    server.shutdown()
    server.server_close()


def test_the_proxys_answers_are_bounded_like_every_token_answer(huge_proxy: tuple[str, Path]) -> None:
    url, ca_file = huge_proxy
    request = HttpRequest("POST", "https://login.example/t/oauth2/v2.0/token", data={"grant_type": "x"})
    transport = TokenProxy(url, PROXY_NAME, ca_file=str(ca_file)).transport(partial(TokenCap, 64 << 10))
    with pytest.raises(TokenAnswerTooLarge, match="--max-token-answer-bytes"):
        transport.send(request)
    # The same answer under a cap above it arrives whole: the name and CA were the proxy's.
    roomy = TokenProxy(url, PROXY_NAME, ca_file=str(ca_file)).transport(partial(TokenCap, 8 << 20))
    assert json.loads(roomy.send(request).content)["access_token"] == "t"
