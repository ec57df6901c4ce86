"""Mount over the provider's unix socket, through the real Azure SDK, against the Key Vault double."""

from __future__ import annotations

import base64
import json
import os

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kvmount.csi.attributes import SA_TOKENS
from kvmount.proto import v1alpha1_pb2 as pb
from tests.certs import make_chain
from tests.peers.keyvault_double import KeyVaultDouble
from tests.provider.conftest import VAULT, Provider


def uid(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def files(response: pb.MountResponse) -> dict[str, bytes]:
    return {f.path: f.contents for f in response.files}


def modes(response: pb.MountResponse) -> dict[str, int]:
    return {f.path: f.mode for f in response.files}


def versions(response: pb.MountResponse) -> dict[str, str]:
    return {v.id: v.version for v in response.object_version}


def subjects(pem: bytes) -> list[str]:
    return [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(pem)]


def test_version(provider: Provider) -> None:
    reply = provider.stub.Version(pb.VersionRequest(version="v1alpha1"), timeout=10)
    assert (reply.version, reply.runtime_name) == ("v1alpha1", "kvmount-azure-provider")


def test_secret_encodings_modes_and_versions(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]
) -> None:
    plain, hexed, b64 = uid("plain"), uid("hex"), uid("b64")
    v_plain = keyvault.put_secret(VAULT, plain, "hello wörld")["id"].rsplit("/", 1)[1]
    keyvault.put_secret(VAULT, hexed, "cafe00")
    keyvault.put_secret(VAULT, b64, base64.b64encode(b"\x00\x01bin").decode())
    response = provider.mount(
        provider.attributes(
            [
                {"objectName": plain, "objectType": "secret", "objectAlias": "plain.txt"},
                {
                    "objectName": hexed,
                    "objectType": "secret",
                    "objectEncoding": "hex",
                    "filePermission": "0600",
                },
                {"objectName": b64, "objectType": "secret", "objectEncoding": "base64"},
            ]
        ),
        sp,
    )
    assert files(response) == {
        "plain.txt": "hello wörld".encode(),
        hexed: b"\xca\xfe\x00",
        b64: b"\x00\x01bin",
    }
    assert modes(response) == {"plain.txt": 0o644, hexed: 0o600, b64: 0o644}
    assert versions(response)[f"secret/{plain}"] == v_plain
    assert set(versions(response)) == {f"secret/{plain}", f"secret/{hexed}", f"secret/{b64}"}


def test_pinned_version_and_history(provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]) -> None:
    name = uid("hist")
    ids = [keyvault.put_secret(VAULT, name, f"v{i}")["id"].rsplit("/", 1)[1] for i in range(5)]
    keyvault.update(VAULT, "secrets", name, ids[3], {"attributes": {"enabled": False}})
    response = provider.mount(
        provider.attributes(
            [
                {"objectName": name, "objectType": "secret", "objectVersionHistory": 3, "objectAlias": "h"},
                {
                    "objectName": name,
                    "objectType": "secret",
                    "objectVersion": ids[1],
                    "objectAlias": "pinned",
                },
            ]
        ),
        sp,
    )
    # Newest first, the disabled v3 skipped, exactly three.
    assert files(response) == {"h/0": b"v4", "h/1": b"v2", "h/2": b"v1", "pinned": b"v1"}
    assert versions(response) == {
        f"secret/{name}/0": ids[4],
        f"secret/{name}/1": ids[2],
        f"secret/{name}/2": ids[1],
        f"secret/{name}": ids[1],
    }


def test_latest_with_history_is_the_newest_versions(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]
) -> None:
    name = uid("latest")
    ids = [keyvault.put_secret(VAULT, name, f"v{i}")["id"].rsplit("/", 1)[1] for i in range(3)]
    response = provider.mount(
        provider.attributes(
            [
                {
                    "objectName": name,
                    "objectType": "secret",
                    "objectVersion": "latest",
                    "objectVersionHistory": 2,
                }
            ]
        ),
        sp,
    )
    assert files(response) == {f"{name}/0": b"v2", f"{name}/1": b"v1"}
    assert versions(response) == {f"secret/{name}/0": ids[2], f"secret/{name}/1": ids[1]}


def test_rsa_and_ec_keys(provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]) -> None:
    names = {kty: uid(kty.lower()) for kty in ("RSA", "EC")}
    jwks = {
        "RSA": keyvault.create_key(VAULT, names["RSA"], kty="RSA", size=2048)["key"],
        "EC": keyvault.create_key(VAULT, names["EC"], kty="EC", curve="P-384")["key"],
    }
    response = provider.mount(
        provider.attributes([{"objectName": n, "objectType": "key"} for n in names.values()]), sp
    )
    got = files(response)
    rsa_key = serialization.load_pem_public_key(got[names["RSA"]])
    assert isinstance(rsa_key, rsa.RSAPublicKey)
    n = int.from_bytes(base64.urlsafe_b64decode(jwks["RSA"]["n"] + "=="), "big")
    assert rsa_key.public_numbers().n == n
    ec_key = serialization.load_pem_public_key(got[names["EC"]])
    assert isinstance(ec_key, ec.EllipticCurvePublicKey) and ec_key.curve.name == "secp384r1"
    x = int.from_bytes(base64.urlsafe_b64decode(jwks["EC"]["x"] + "=="), "big")
    assert ec_key.public_numbers().x == x


@pytest.mark.parametrize("imported_as", ["pfx", "pem"])
def test_certificates_with_a_three_level_chain(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], imported_as: str
) -> None:
    chain = make_chain(f"{imported_as}.example")
    name = uid(f"cert-{imported_as}")
    if imported_as == "pfx":
        # Stored out of order: the provider orders the chain leaf -> root itself.
        keyvault.import_certificate(VAULT, name, chain.pfx(("root", "intermediate")))
    else:
        pem = chain.key_pem() + chain.pem("leaf", "intermediate", "root")
        keyvault.import_certificate(VAULT, name, pem, content_type="application/x-pem-file")
    response = provider.mount(
        provider.attributes(
            [
                {"objectName": name, "objectType": "cert", "objectAlias": "cert.pem"},
                {"objectName": name, "objectType": "secret", "objectAlias": "bundle.pem"},
            ]
        ),
        sp,
    )
    got = files(response)
    assert got["cert.pem"] == chain.pem("leaf")
    bundle = got["bundle.pem"]
    key = serialization.load_pem_private_key(bundle, None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.public_key().public_numbers() == chain.leaf_key.public_key().public_numbers()
    assert subjects(bundle) == [f"CN={imported_as}.example", "CN=Test Intermediate", "CN=Test Root"]


@pytest.mark.peer
def test_pfx_format_and_separate_files(
    keyvault: KeyVaultDouble, sp: dict[str, str], tmp_path: os.PathLike[str]
) -> None:
    from tests.provider.conftest import start_provider, stop_provider

    chain = make_chain()
    name = uid("pfx")
    keyvault.import_certificate(VAULT, name, chain.pfx())
    separate = start_provider(tmp_path, keyvault, "--write-cert-and-key-in-separate-files=true")  # type: ignore[arg-type]
    try:
        response = separate.mount(
            separate.attributes(
                [
                    {"objectName": name, "objectType": "secret", "objectAlias": "tls"},
                    {
                        "objectName": name,
                        "objectType": "secret",
                        "objectFormat": "pfx",
                        "objectEncoding": "base64",
                        "objectAlias": "tls.pfx",
                    },
                ]
            ),
            sp,
        )
    finally:
        stop_provider(separate)
    got = files(response)
    # As upstream: the .crt and .key of a pfx-format secret are empty (no PEM to split).
    assert [f.path for f in response.files] == [
        "tls.crt",
        "tls.key",
        "tls",
        "tls.pfx.crt",
        "tls.pfx.key",
        "tls.pfx",
    ]
    assert got["tls.pfx.crt"] == got["tls.pfx.key"] == b""
    assert versions(response) == {f"secret/{name}": response.object_version[0].version}
    assert len(response.object_version) == 6, "one object version per file, as upstream"
    assert got["tls"] == got["tls.key"] + got["tls.crt"]
    from cryptography.hazmat.primitives.serialization import pkcs12

    bundle = pkcs12.load_pkcs12(got["tls.pfx"], None)
    assert bundle.cert is not None and bundle.cert.certificate == chain.leaf


def aad_token_requests(keyvault: KeyVaultDouble) -> list[dict[str, object]]:
    return [r for r in keyvault.requests() if "/oauth2/v2.0/token" in str(r.get("path"))]


def test_service_principal_token_request_and_reuse(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]
) -> None:
    name = uid("sp")
    keyvault.put_secret(VAULT, name, "x")
    keyvault.reset_log()
    attributes = provider.attributes([{"objectName": name, "objectType": "secret"}])
    provider.mount(attributes, sp)
    provider.mount(attributes, sp)
    token_requests = aad_token_requests(keyvault)
    assert len(token_requests) == 1, "the second mount reuses the credential's token"
    form = token_requests[0]["form"]
    assert isinstance(form, dict)
    assert form["grant_type"] == "client_credentials" and form["client_id"] == sp["clientid"]
    # A different secret for the same client is a different identity: no reuse.
    other = {"clientid": sp["clientid"], "clientsecret": "wrong-secret"}
    with pytest.raises(grpc.RpcError) as info:
        provider.mount(attributes, other)
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "wrong-secret" not in (info.value.details() or "")
    assert len(aad_token_requests(keyvault)) == 2


def test_workload_identity_sends_the_service_account_token(
    provider: Provider, keyvault: KeyVaultDouble
) -> None:
    name = uid("wi")
    keyvault.put_secret(VAULT, name, "wi-value")
    keyvault.reset_log()
    sa_token = f"sa.{os.urandom(8).hex()}.jwt"
    tokens = json.dumps(
        {"api://AzureADTokenExchange": {"token": sa_token, "expirationTimestamp": "2030-01-01T00:00:00Z"}}
    )
    attributes = provider.attributes(
        [{"objectName": name, "objectType": "secret"}],
        clientID="wi-client",
        **{SA_TOKENS: tokens},
    )
    assert files(provider.mount(attributes)) == {name: b"wi-value"}
    (request,) = aad_token_requests(keyvault)
    form = request["form"]
    assert isinstance(form, dict)
    assert form["client_id"] == "wi-client"
    assert form["client_assertion"] == sa_token
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def test_managed_identity_through_imds(provider: Provider, keyvault: KeyVaultDouble) -> None:
    name = uid("mi")
    keyvault.put_secret(VAULT, name, "mi-value")
    keyvault.reset_log()
    attributes = provider.attributes(
        [{"objectName": name, "objectType": "secret"}],
        useVMManagedIdentity="true",
        userAssignedIdentityID="uami-1",
    )
    assert files(provider.mount(attributes)) == {name: b"mi-value"}
    imds = [r for r in keyvault.requests() if "/metadata/identity/oauth2/token" in str(r.get("path"))]
    assert imds and all(r["query"].get("client_id") == "uami-1" for r in imds)


def test_pod_identity_through_nmi(provider: Provider, keyvault: KeyVaultDouble) -> None:
    name = uid("pi")
    keyvault.put_secret(VAULT, name, "pi-value")
    keyvault.reset_log()
    pod = {"csi.storage.k8s.io/pod.name": "web-0", "csi.storage.k8s.io/pod.namespace": "shop"}
    attributes = provider.attributes(
        [{"objectName": name, "objectType": "secret"}], usePodIdentity="true", **pod
    )
    assert files(provider.mount(attributes)) == {name: b"pi-value"}
    nmi = [r for r in keyvault.requests() if "/host/token" in str(r.get("path"))]
    assert [(r["podns"], r["podname"]) for r in nmi] == [("shop", "web-0")]
    keyvault.deny_pod("shop", "web-1")
    denied = {**attributes, "csi.storage.k8s.io/pod.name": "web-1"}
    with pytest.raises(grpc.RpcError) as info:
        provider.mount(denied)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "shop/web-1" in (info.value.details() or "")
