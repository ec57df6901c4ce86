"""Each identity mode builds its own credential; none falls through to another's."""

from __future__ import annotations

import json

import pytest
from azure.identity import ClientAssertionCredential, ClientSecretCredential, ManagedIdentityCredential

from kvmount.csi.attributes import POD_NAME, POD_NAMESPACE, SA_TOKENS
from kvmount.keyvault import IDENTITY_BINDING_AUDIENCE, TOKEN_AUDIENCE, IdentityMode, parse_mount
from kvmount.keyvault.clouds import resolve
from kvmount.keyvault.identity.credentials import CredentialOptions, PodIdentityCredential, build_credential
from kvmount.keyvault.identity.token_proxy import TokenProxy

OBJECTS = "array:\n  - |\n    objectName: a\n    objectType: secret\n"


def _tokens(audience: str) -> str:
    return json.dumps({audience: {"token": "sa-jwt", "expirationTimestamp": "x"}})


# Each mode: the class parameters that choose it, and the credential it must get.
MODES: dict[IdentityMode, tuple[dict[str, str], dict[str, str] | None, type]] = {
    IdentityMode.WORKLOAD: (
        {"clientID": "cid", SA_TOKENS: _tokens(TOKEN_AUDIENCE)},
        None,
        ClientAssertionCredential,
    ),
    IdentityMode.TOKEN_PROXY: (
        {"clientID": "cid", "useAzureTokenProxy": "true", SA_TOKENS: _tokens(IDENTITY_BINDING_AUDIENCE)},
        None,
        ClientAssertionCredential,
    ),
    IdentityMode.SERVICE_PRINCIPAL: (
        {},
        {"clientid": "app", "clientsecret": "s3cret"},
        ClientSecretCredential,
    ),
    IdentityMode.POD: (
        {"usePodIdentity": "true", POD_NAME: "p", POD_NAMESPACE: "ns"},
        None,
        PodIdentityCredential,
    ),
    IdentityMode.MANAGED: ({"useVMManagedIdentity": "true"}, None, ManagedIdentityCredential),
}


def test_every_mode_is_covered() -> None:
    assert set(MODES) == set(IdentityMode)


@pytest.mark.parametrize("mode", list(MODES), ids=str)
def test_each_mode_gets_its_credential(mode: IdentityMode) -> None:
    attributes, secrets, expected = MODES[mode]
    params = parse_mount(
        {"keyvaultName": "kvtest", "tenantID": "t", "objects": OBJECTS, **attributes}, secrets
    )
    assert params.identity is mode
    # A fixed TLS name: the token proxy's is otherwise derived from the API server's certificate.
    node = CredentialOptions(token_proxy=TokenProxy(sni_name="a.ests.aks"))
    assert type(build_credential(params, resolve(""), node)) is expected
