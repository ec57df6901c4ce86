"""Token requests' HTTPS connections share one TLS context per CA bundle, loaded once, and
verify exactly as before: the bundle requests would choose, refused when it does not trust
the server."""

from __future__ import annotations

import shutil
from pathlib import Path

import certifi
import pytest
from azure.core.exceptions import ServiceRequestError
from azure.core.rest import HttpRequest

from kvmount.keyvault.http.token_transport import TokenTransport
from kvmount.keyvault.parameters.limits import TokenCap
from tests.peers.keyvault_double import KeyVaultDouble


def _metadata(kv: KeyVaultDouble) -> HttpRequest:
    return HttpRequest("GET", f"{kv.authority}/{kv.tenant}/v2.0/.well-known/openid-configuration")


def test_the_bundle_is_loaded_once_for_every_connection(
    keyvault: KeyVaultDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "ca.pem"
    shutil.copy(keyvault.ca_path, bundle)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    transport = TokenTransport(TokenCap)
    assert transport.send(_metadata(keyvault)).status_code == 200
    # Loading the bundle again for the next new connection would fail on this.
    bundle.write_text("not a certificate\n")
    transport.close()  # no connection left: the next request opens one
    assert transport.send(_metadata(keyvault)).status_code == 200


def test_a_bundle_that_does_not_trust_the_server_is_refused(
    keyvault: KeyVaultDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    with pytest.raises(ServiceRequestError):
        TokenTransport(TokenCap).send(_metadata(keyvault))
