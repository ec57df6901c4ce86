"""Identity binding (useAzureTokenProxy): its parameters and the proxy's TLS server name."""

from __future__ import annotations

import json
import re

import pytest

from kvmount.csi.attributes import SA_TOKENS
from kvmount.keyvault import (
    IDENTITY_BINDING_AUDIENCE,
    TOKEN_AUDIENCE,
    IdentityMode,
    InvalidSpec,
    KeyVaultError,
    parse_mount,
)
from kvmount.keyvault.identity.token_proxy import TokenProxy, server_name
from kvmount.keyvault.parameters.limits import TokenCap

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
