"""The Key Vault double, exercised only through the real Azure SDK clients."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import statistics
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.identity import (
    CertificateCredential,
    ClientAssertionCredential,
    ClientSecretCredential,
    ManagedIdentityCredential,
)
from azure.keyvault.certificates import (
    CertificateClient,
    CertificateContentType,
    CertificatePolicy,
    CertificateProperties,
    KeyVaultCertificate,
)
from azure.keyvault.keys import KeyClient, KeyType, KeyVaultKey
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.certs import Chain, make_chain
from tests.peers.keyvault_double import KeyVaultDouble

VAULT = "kvtest"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _b64u_int(data: bytes | None) -> int:
    return int.from_bytes(data or b"", "big")


def _jwk(key: KeyVaultKey, name: str) -> Any:
    """JsonWebKey sets its fields dynamically; read them untyped."""
    return getattr(key.key, name, None)


def _cert_props(cert: KeyVaultCertificate) -> CertificateProperties:
    assert cert.properties is not None
    return cert.properties


@pytest.fixture(scope="module")
def chain() -> Chain:
    return make_chain("leaf.kvtest")


@pytest.fixture
def credential(kv_env: KeyVaultDouble) -> ClientSecretCredential:
    return ClientSecretCredential(
        kv_env.tenant, "test-app", "s3cret", authority=kv_env.authority, disable_instance_discovery=True
    )


@pytest.fixture
def secrets(kv_env: KeyVaultDouble, credential: ClientSecretCredential) -> Iterator[SecretClient]:
    with SecretClient(kv_env.url_for(VAULT), credential, connection_verify=str(kv_env.ca_path)) as client:
        yield client


@pytest.fixture
def keys(kv_env: KeyVaultDouble, credential: ClientSecretCredential) -> Iterator[KeyClient]:
    with KeyClient(kv_env.url_for(VAULT), credential) as client:
        yield client


@pytest.fixture
def certs(kv_env: KeyVaultDouble, credential: ClientSecretCredential) -> Iterator[CertificateClient]:
    with CertificateClient(kv_env.url_for(VAULT), credential) as client:
        yield client


def _raw(url: str, ca: Path | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    import ssl

    ctx = ssl.create_default_context(cafile=str(ca)) if ca else None
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


# ---------------------------------------------------------------- secrets


def test_set_get_versions(secrets: SecretClient, kv_env: KeyVaultDouble) -> None:
    name = _name("s")
    first = secrets.set_secret(name, "one", content_type="text/plain", tags={"a": "b"})
    second = secrets.set_secret(name, "two")
    assert first.properties.version != second.properties.version
    assert len(first.properties.version or "") == 32
    assert first.id == f"{kv_env.url_for(VAULT)}/secrets/{name}/{first.properties.version}"
    latest = secrets.get_secret(name)
    assert latest.value == "two"
    assert latest.properties.version == second.properties.version
    old = secrets.get_secret(name, first.properties.version)
    assert old.value == "one"
    assert old.properties.content_type == "text/plain"
    assert old.properties.tags == {"a": "b"}
    assert old.properties.enabled is True
    assert old.properties.recovery_level == "Recoverable+Purgeable"
    assert old.properties.created_on is not None
    # Names are case-insensitive in Key Vault.
    assert secrets.get_secret(name.upper()).value == "two"
    names = {p.name for p in secrets.list_properties_of_secrets()}
    assert name in names


def test_bad_name_and_missing(secrets: SecretClient) -> None:
    with pytest.raises(HttpResponseError) as bad:
        secrets.set_secret("bad_name!", "x")
    assert bad.value.status_code == 400
    assert bad.value.error is not None and bad.value.error.code == "BadParameter"
    with pytest.raises(ResourceNotFoundError) as missing:
        secrets.get_secret(_name("nope"))
    assert missing.value.error is not None and missing.value.error.code == "SecretNotFound"


def test_paging_over_many_versions(secrets: SecretClient, kv_env: KeyVaultDouble) -> None:
    name = _name("paged")
    made = [secrets.set_secret(name, f"v{i}").properties.version for i in range(30)]
    kv_env.reset_log()
    listed = [p.version for p in secrets.list_properties_of_secret_versions(name)]
    assert listed == made
    pages = [r for r in kv_env.requests() if r["path"] == f"/secrets/{name}/versions" and r["status"] == 200]
    assert len(pages) == 2  # 25 + 5: the nextLink was followed
    assert "$skiptoken" in pages[1]["query"]
    kv_env.reset_log()
    small = list(secrets.list_properties_of_secret_versions(name, max_page_size=7))
    assert [p.version for p in small] == made
    pages = [r for r in kv_env.requests() if r["path"] == f"/secrets/{name}/versions" and r["status"] == 200]
    assert len(pages) == 5
    assert all(r["query"]["maxresults"] == "7" for r in pages)


def test_disable_version(secrets: SecretClient) -> None:
    name = _name("dis")
    old = secrets.set_secret(name, "old")
    secrets.set_secret(name, "new")
    props = secrets.update_secret_properties(name, old.properties.version, enabled=False)
    assert props.enabled is False
    with pytest.raises(HttpResponseError) as err:
        secrets.get_secret(name, old.properties.version)
    assert err.value.status_code == 403
    assert err.value.error is not None
    assert err.value.error.code == "Forbidden"
    assert err.value.error.message == "Operation get is not allowed on a disabled secret."
    assert secrets.get_secret(name).value == "new"
    versions = {p.version: p.enabled for p in secrets.list_properties_of_secret_versions(name)}
    assert versions[old.properties.version] is False


def test_delete_recover_purge(secrets: SecretClient) -> None:
    name = _name("del")
    secrets.set_secret(name, "keep me")
    deleted = secrets.begin_delete_secret(name).result()
    assert deleted.recovery_id and deleted.recovery_id.endswith(f"/deletedsecrets/{name}")
    assert deleted.deleted_date is not None and deleted.scheduled_purge_date is not None
    assert deleted.scheduled_purge_date > deleted.deleted_date
    with pytest.raises(ResourceNotFoundError) as err:
        secrets.get_secret(name)
    assert err.value.error is not None and err.value.error.code == "SecretNotFound"
    with pytest.raises(ResourceExistsError):
        secrets.set_secret(name, "reuse while deleted")
    assert secrets.get_deleted_secret(name).name == name
    assert name in {d.name for d in secrets.list_deleted_secrets()}
    secrets.begin_recover_deleted_secret(name).wait()
    assert secrets.get_secret(name).value == "keep me"
    secrets.begin_delete_secret(name).wait()
    secrets.purge_deleted_secret(name)
    with pytest.raises(ResourceNotFoundError):
        secrets.get_deleted_secret(name)
    assert secrets.set_secret(name, "fresh").value == "fresh"


def test_challenge_shape(kv_env: KeyVaultDouble) -> None:
    status, headers, body = _raw(f"{kv_env.url_for(VAULT)}/secrets/x?api-version=7.4", kv_env.ca_path)
    assert status == 401
    assert headers["WWW-Authenticate"] == (
        f'Bearer authorization="https://login.localhost:{kv_env.port}/{kv_env.tenant}", '
        f'resource="https://vault.localhost:{kv_env.port}"'
    )
    assert json.loads(body)["error"]["code"] == "Unauthorized"


# ---------------------------------------------------------------- keys


def test_rsa_and_ec_keys(keys: KeyClient) -> None:
    rsa_name, ec_name = _name("rsa"), _name("ec")
    made = keys.create_rsa_key(rsa_name, size=3072)
    assert made.key_type == KeyType.rsa
    assert _jwk(made, "n") is not None and len(_jwk(made, "n")) == 384
    assert _jwk(made, "e") is not None and _b64u_int(_jwk(made, "e")) == 65537
    assert set(made.key_operations) == {"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}
    got = keys.get_key(rsa_name)
    assert _jwk(got, "n") == _jwk(made, "n") and got.properties.version == made.properties.version
    rsa.RSAPublicNumbers(_b64u_int(_jwk(got, "e") or b""), _b64u_int(_jwk(got, "n") or b"")).public_key()

    made_ec = keys.create_ec_key(ec_name, curve="P-384", hardware_protected=True)
    assert made_ec.key_type == KeyType.ec_hsm
    assert _jwk(made_ec, "crv") == "P-384"
    assert _jwk(made_ec, "x") is not None and _jwk(made_ec, "y") is not None
    assert len(_jwk(made_ec, "x")) == 48 and len(_jwk(made_ec, "y")) == 48
    # A real point on the curve, or this raises.
    ec.EllipticCurvePublicNumbers(
        _b64u_int(_jwk(made_ec, "x")), _b64u_int(_jwk(made_ec, "y")), ec.SECP384R1()
    ).public_key()

    second = keys.create_rsa_key(rsa_name)
    versions = [p.version for p in keys.list_properties_of_key_versions(rsa_name)]
    assert versions == [made.properties.version, second.properties.version]
    keys.update_key_properties(rsa_name, made.properties.version, enabled=False)
    with pytest.raises(HttpResponseError) as err:
        keys.get_key(rsa_name, made.properties.version)
    assert err.value.status_code == 403
    keys.begin_delete_key(rsa_name).wait()
    with pytest.raises(ResourceNotFoundError) as gone:
        keys.get_key(rsa_name)
    assert gone.value.error is not None and gone.value.error.code == "KeyNotFound"


def test_import_key(keys: KeyClient) -> None:
    from azure.keyvault.keys import JsonWebKey

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    nums = private.private_numbers()

    def raw(v: int) -> bytes:
        return v.to_bytes((v.bit_length() + 7) // 8, "big")

    jwk = JsonWebKey(
        kty="RSA",
        n=raw(nums.public_numbers.n),
        e=raw(nums.public_numbers.e),
        d=raw(nums.d),
        p=raw(nums.p),
        q=raw(nums.q),
        dp=raw(nums.dmp1),
        dq=raw(nums.dmq1),
        qi=raw(nums.iqmp),
        key_ops=["sign", "verify"],
    )
    imported = keys.import_key(_name("imp"), jwk)
    assert _b64u_int(_jwk(imported, "n") or b"") == nums.public_numbers.n
    assert _jwk(imported, "d") is None  # private material never comes back
    assert imported.key_operations == ["sign", "verify"]


# ---------------------------------------------------------------- certificates


def _pfx_parts(value: str) -> tuple[Any, x509.Certificate | None, list[x509.Certificate]]:
    return pkcs12.load_key_and_certificates(base64.b64decode(value), None)


# DER-encoded OIDs: pbeWithSHAAnd3-KeyTripleDES-CBC, SHA-1, PBES2 (the AES profile).
PBE_SHA1_3DES = bytes.fromhex("060a2a864886f70d010c0103")
SHA1 = bytes.fromhex("06052b0e03021a")
PBES2 = bytes.fromhex("06092a864886f70d01050d")


def test_import_pfx_with_chain(
    certs: CertificateClient, secrets: SecretClient, keys: KeyClient, chain: Chain
) -> None:
    name = _name("pfx")
    cert = certs.import_certificate(name, chain.pfx(password=b"pw"), password="pw")
    leaf_der = chain.leaf.public_bytes(serialization.Encoding.DER)
    assert bytes(cert.cer or b"") == leaf_der
    assert _cert_props(cert).x509_thumbprint == chain.leaf.fingerprint(hashes.SHA1())
    assert cert.policy is not None and cert.policy.content_type == CertificateContentType.pkcs12
    assert cert.secret_id == f"{certs.vault_url}/secrets/{name}/{_cert_props(cert).version}"
    assert cert.key_id == f"{certs.vault_url}/keys/{name}/{_cert_props(cert).version}"
    assert bytes(certs.get_certificate(name).cer or b"") == leaf_der

    backing = secrets.get_secret(name)
    assert backing.properties.content_type == "application/x-pkcs12"
    assert backing.properties.managed is True
    assert backing.properties.version == _cert_props(cert).version
    key, leaf, extra = _pfx_parts(backing.value or "")  # no password: Key Vault re-exports without one
    # Key Vault's export profile, the only one Go's pkcs12 (upstream's provider) reads.
    exported = base64.b64decode(backing.value or "")
    assert PBE_SHA1_3DES in exported and SHA1 in exported and PBES2 not in exported
    assert leaf == chain.leaf
    assert [c.subject for c in extra] == [chain.intermediate.subject, chain.root.subject]
    assert key is not None and key.private_numbers() == chain.leaf_key.private_numbers()

    backing_key = keys.get_key(name)
    assert backing_key.properties.managed is True
    assert _b64u_int(_jwk(backing_key, "n") or b"") == chain.leaf_key.public_key().public_numbers().n

    certs.update_certificate_properties(name, _cert_props(cert).version, enabled=False)
    with pytest.raises(HttpResponseError) as err:
        secrets.get_secret(name)
    assert err.value.status_code == 403
    with pytest.raises(HttpResponseError):
        keys.get_key(name)
    assert _cert_props(certs.get_certificate(name)).enabled is False


def test_import_pem_and_versions(certs: CertificateClient, secrets: SecretClient, chain: Chain) -> None:
    name = _name("pem")
    pem = chain.key_pem() + chain.pem("leaf", "intermediate", "root")
    policy = CertificatePolicy.get_default()
    policy._content_type = CertificateContentType.pem
    first = certs.import_certificate(name, pem, policy=policy)
    assert first.policy is not None and first.policy.content_type == CertificateContentType.pem
    value = secrets.get_secret(name).value or ""
    assert value.startswith("-----BEGIN PRIVATE KEY-----")
    blocks = x509.load_pem_x509_certificates(value.encode())
    assert blocks == [chain.leaf, chain.intermediate, chain.root]
    second = certs.import_certificate(name, pem, policy=policy)
    versions = [p.version for p in certs.list_properties_of_certificate_versions(name)]
    assert versions == [_cert_props(first).version, _cert_props(second).version]
    old = secrets.get_secret(name, _cert_props(first).version)
    assert old.value == value

    certs.begin_delete_certificate(name).wait()
    with pytest.raises(ResourceNotFoundError):
        secrets.get_secret(name)
    assert certs.get_deleted_certificate(name).recovery_id is not None
    certs.begin_recover_deleted_certificate(name).wait()
    assert secrets.get_secret(name).value == value


def test_import_pem_without_key_is_rejected(certs: CertificateClient, chain: Chain) -> None:
    policy = CertificatePolicy.get_default()
    policy._content_type = CertificateContentType.pem
    with pytest.raises(HttpResponseError) as err:
        certs.import_certificate(_name("nokey"), chain.pem("leaf"), policy=policy)
    assert err.value.status_code == 400


# ---------------------------------------------------------------- identity endpoints


def test_managed_identity_via_imds(kv_env: KeyVaultDouble) -> None:
    kv_env.reset_log()
    credential = ManagedIdentityCredential(client_id="mi-client-1")
    with SecretClient(kv_env.url_for("kvother"), credential) as client:
        client.set_secret(_name("mi"), "from imds")
    log = kv_env.requests()
    imds = [r for r in log if r["service"] == "imds"]
    assert len(imds) == 1
    assert imds[0]["metadata_header"] == "true"
    assert imds[0]["query"]["resource"] == kv_env.resource
    assert imds[0]["query"]["client_id"] == "mi-client-1"
    vault_calls = [r for r in log if r["service"] == "keyvault" and r["status"] == 200]
    assert vault_calls and vault_calls[-1]["identity"] == "mi-client-1"
    assert vault_calls[-1]["vault"] == "kvother"
    status, _, body = _raw(
        f"{kv_env.imds_url}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x"
    )
    assert status == 400 and json.loads(body)["error"] == "invalid_request"


def test_client_secret_checked(kv_env: KeyVaultDouble) -> None:
    kv_env.register_aad_client("registered-app", secret="right")
    good = ClientSecretCredential(
        kv_env.tenant, "registered-app", "right", authority=kv_env.authority, disable_instance_discovery=True
    )
    assert good.get_token(kv_env.scope).token
    bad = ClientSecretCredential(
        kv_env.tenant, "registered-app", "wrong", authority=kv_env.authority, disable_instance_discovery=True
    )
    with pytest.raises(ClientAuthenticationError) as err:
        bad.get_token(kv_env.scope)
    assert "AADSTS7000215" in str(err.value)
    last = [r for r in kv_env.requests() if r["service"] == "aad" and "form" in r][-1]
    assert last["status"] == 401
    form = last["form"]
    assert form["client_id"] == "registered-app"
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == kv_env.scope
    assert "client_secret" not in form  # secrets are not recorded


def test_client_assertion_recorded(kv_env: KeyVaultDouble) -> None:
    assertion = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDp3b3JrbG9hZCJ9.c2ln"
    credential = ClientAssertionCredential(
        kv_env.tenant, "wi-client", lambda: assertion, authority=kv_env.authority
    )
    kv_env.reset_log()
    with SecretClient(kv_env.url_for(VAULT), credential) as client:
        client.set_secret(_name("wi"), "workload")
    form = next(r["form"] for r in kv_env.requests() if r["service"] == "aad" and "form" in r)
    assert form["client_assertion"] == assertion
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert form["client_id"] == "wi-client"


def test_certificate_credential(kv_env: KeyVaultDouble, chain: Chain, tmp_path: Path) -> None:
    pem = chain.key_pem() + chain.pem("leaf")
    kv_env.register_aad_client("cert-app", cert_pem=chain.pem("leaf"))
    good = CertificateCredential(
        kv_env.tenant,
        "cert-app",
        certificate_data=pem,
        authority=kv_env.authority,
        disable_instance_discovery=True,
    )
    assert good.get_token(kv_env.scope).token
    other = make_chain("impostor")
    bad = CertificateCredential(
        kv_env.tenant,
        "cert-app",
        certificate_data=other.key_pem() + other.pem("leaf"),
        authority=kv_env.authority,
        disable_instance_discovery=True,
    )
    with pytest.raises(ClientAuthenticationError) as err:
        bad.get_token(kv_env.scope)
    assert "AADSTS700027" in str(err.value)
    assertion = next(
        r["form"]["client_assertion"]
        for r in reversed(kv_env.requests())
        if r["service"] == "aad" and r.get("form", {}).get("client_id") == "cert-app"
    )
    header = json.loads(base64.urlsafe_b64decode(assertion.split(".")[0] + "=="))
    assert "x5t#S256" in header or "x5t" in header
    good_assertion = next(
        r["form"]["client_assertion"]
        for r in kv_env.requests()
        if r["service"] == "aad" and r["status"] == 200 and r.get("form", {}).get("client_id") == "cert-app"
    )
    # Same header, altered claims: only the signature check can catch this.
    h64, p64, s64 = good_assertion.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p64 + "=="))
    claims["sub"] = "someone-else"
    forged = ".".join([h64, base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("="), s64])
    status, body = _post_token(kv_env, "cert-app", forged)
    assert status == 400 and "signature" in body["error_description"]
    status, _ = _post_token(kv_env, "cert-app", good_assertion)
    assert status == 200


def _post_token(kv: KeyVaultDouble, client_id: str, assertion: str) -> tuple[int, Any]:
    import ssl
    import urllib.parse

    form = urllib.parse.urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "scope": kv.scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        }
    ).encode()
    req = urllib.request.Request(f"{kv.authority}/{kv.tenant}/oauth2/v2.0/token", data=form, method="POST")
    ctx = ssl.create_default_context(cafile=str(kv.ca_path))
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_nmi(kv_env: KeyVaultDouble) -> None:
    url = f"{kv_env.nmi_url}/host/token/?resource=https%3A%2F%2Fvault.azure.net"
    status, _, _ = _raw(url)
    assert status == 400
    status, _, body = _raw(url, headers={"podns": "default", "podname": "web"})
    assert status == 200
    payload = json.loads(body)
    assert payload["token"]["resource"] == "https://vault.azure.net"
    assert payload["token"]["token_type"] == "Bearer"
    assert payload["clientid"]
    kv_env.deny_pod("default", "blocked")
    status, _, _ = _raw(url, headers={"podns": "default", "podname": "blocked"})
    assert status == 403
    kv_env.allow_pod("default", "blocked")
    status, _, _ = _raw(url, headers={"podns": "default", "podname": "blocked"})
    assert status == 200


# ---------------------------------------------------------------- control API


def test_outage_and_latency(kv_env: KeyVaultDouble, credential: ClientSecretCredential) -> None:
    name = _name("out")
    kv_env.put_secret(VAULT, name, "seeded", content_type="text/plain")
    client = SecretClient(kv_env.url_for(VAULT), credential, retry_total=0)
    assert client.get_secret(name).value == "seeded"
    kv_env.set_outage(503)
    try:
        with pytest.raises(HttpResponseError) as err:
            client.get_secret(name)
        assert err.value.status_code == 503
    finally:
        kv_env.set_outage(0)
    kv_env.set_latency(300)
    try:
        start = time.monotonic()
        client.get_secret(name)
        assert time.monotonic() - start >= 0.3
    finally:
        kv_env.set_latency(0)
    client.close()


def test_responses_are_not_held_by_nagle(kv_env: KeyVaultDouble) -> None:
    """Headers and body leave as two writes; without TCP_NODELAY each response waits ~40 ms."""
    context = ssl.create_default_context(cafile=str(kv_env.ca_path))
    conn = http.client.HTTPSConnection("kvtest.vault.localhost", kv_env.port, context=context, timeout=10)
    took = []
    for _ in range(10):
        start = time.monotonic()
        conn.request("GET", "/secrets/nagle?api-version=7.4")
        assert conn.getresponse().read()  # 401 with a challenge body
        took.append(time.monotonic() - start)
    conn.close()
    assert statistics.median(took) < 0.025, took


def _through_proxy(kv: KeyVaultDouble, url: str) -> tuple[int, Any]:
    """GET url via the double's CONNECT proxy, as Go's HTTPS_PROXY does."""
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"https": kv.proxy_url}),
        urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(kv.ca_path))),
    )
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def test_aad_instance_discovery_through_the_proxy(kv_env: KeyVaultDouble) -> None:
    """MSAL Go asks login.microsoftonline.com whether it may trust an authority host."""
    authorize = f"{kv_env.authority}/{kv_env.tenant}/oauth2/v2.0/authorize"
    query = urllib.parse.urlencode({"api-version": "1.1", "authorization_endpoint": authorize})
    status, body = _through_proxy(
        kv_env, f"https://login.microsoftonline.com/common/discovery/instance?{query}"
    )
    assert status == 200
    host = kv_env.authority.removeprefix("https://")
    assert body["tenant_discovery_endpoint"] == (
        f"{kv_env.authority}/{kv_env.tenant}/v2.0/.well-known/openid-configuration"
    )
    assert body["metadata"][0]["aliases"] == [host]

    # An authority the double does not serve is refused as AAD refuses it.
    query = urllib.parse.urlencode(
        {"api-version": "1.1", "authorization_endpoint": "https://evil.example/t/oauth2/v2.0/authorize"}
    )
    status, body = _through_proxy(
        kv_env, f"https://login.microsoftonline.com/common/discovery/instance?{query}"
    )
    assert (status, body["error"]) == (400, "invalid_instance")

    # The proxy opens no tunnel anywhere else.
    with pytest.raises(urllib.error.URLError, match="403"):
        _through_proxy(kv_env, f"https://kvtest.vault.localhost:{kv_env.port}/secrets/x")


@pytest.mark.peer
def test_subprocess_double(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc = KeyVaultDouble.spawn(tmp_path / "state", tenant="sub-tenant")
    try:
        ready = json.loads((tmp_path / "state" / "ready.json").read_text())
        assert ready["port"] == proc.port and ready["imds_port"] == proc.imds_port
        assert ready["proxy_port"] == proc.proxy_port
        assert Path(ready["ca"]) == tmp_path / "state" / "ca.pem"
        for key, value in proc.env().items():
            monkeypatch.setenv(key, value)
        credential = ClientSecretCredential(
            "sub-tenant", "app", "pw", authority=proc.authority, disable_instance_discovery=True
        )
        with SecretClient(proc.url_for("kvbench"), credential) as client:
            client.set_secret("hello", "world")
            assert client.get_secret("hello").value == "world"
        assert any(r["path"] == "/secrets/hello" and r["status"] == 200 for r in proc.requests())
    finally:
        proc.stop()
    assert proc.process.returncode is not None


def test_listing_each_type_with_tags_pages_and_the_list_permission(
    secrets: SecretClient, keys: KeyClient, certs: CertificateClient, chain: Chain, kv_env: KeyVaultDouble
) -> None:
    prefix = _name("listed")
    for i in range(30):
        secrets.set_secret(f"{prefix}-s{i}", "v", tags={"n": str(i), "team": "web" if i % 2 else "db"})
    keys.create_rsa_key(f"{prefix}-k", tags={"team": "web"})
    certs.import_certificate(f"{prefix}-c", chain.pfx(), tags={"team": "web"})
    # A listing shows the current version's attributes and tags.
    secrets.update_secret_properties(f"{prefix}-s0", enabled=False, tags={"team": "ops"})
    kv_env.reset_log()
    listed = {
        p.name: p
        for p in secrets.list_properties_of_secrets(max_page_size=7)
        if (p.name or "").startswith(prefix)
    }
    # The certificate's backing secret is listed too (managed), as Key Vault lists it.
    assert set(listed) == {f"{prefix}-s{i}" for i in range(30)} | {f"{prefix}-c"}
    assert listed[f"{prefix}-s3"].tags == {"n": "3", "team": "web"}
    assert (listed[f"{prefix}-s0"].enabled, listed[f"{prefix}-s0"].tags) == (False, {"team": "ops"})
    assert listed[f"{prefix}-c"].managed is True
    pages = [r for r in kv_env.requests() if r["path"] == "/secrets" and r["status"] == 200]
    assert len(pages) >= 5 and all(r["query"]["maxresults"] == "7" for r in pages)
    assert all("$skiptoken" in r["query"] for r in pages[1:])
    listed_keys = {k.name: k.tags for k in keys.list_properties_of_keys() if k.name.startswith(prefix)}
    assert set(listed_keys) == {f"{prefix}-k", f"{prefix}-c"}  # the certificate's backing key too
    assert listed_keys[f"{prefix}-k"] == {"team": "web"}
    assert {
        c.name: c.tags for c in certs.list_properties_of_certificates() if (c.name or "").startswith(prefix)
    } == {f"{prefix}-c": {"team": "web"}}
    kv_env.deny_list(VAULT, "secrets")
    try:
        with pytest.raises(HttpResponseError) as err:
            list(secrets.list_properties_of_secrets())
        assert err.value.status_code == 403 and "list permission" in str(err.value)
        assert secrets.get_secret(f"{prefix}-s1").value == "v"  # get is still allowed
    finally:
        kv_env.deny_list(VAULT, "secrets", deny=False)
