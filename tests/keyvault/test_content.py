"""Conversion of Key Vault objects to file bytes."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kvmount.keyvault import ContentOptions, Encoding, Format, KeyVaultError, ObjectSpec, ObjectType
from kvmount.keyvault.content import (
    PEM_FILE,
    PKCS12,
    JsonWebKey,
    certificate_pem,
    public_key_pem,
    secret_files,
)
from tests.certs import make_chain

SECRET = ObjectSpec("s", ObjectType.SECRET)


def spec(**kw: object) -> ObjectSpec:
    return ObjectSpec("s", ObjectType.SECRET, **kw)  # type: ignore[arg-type]


def subjects(pem: bytes) -> list[str]:
    return [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(pem)]


KID = "https://kv.vault.azure.net/keys/tls/0123"  # a certificate's secret carries its key's id
SPLIT = ContentOptions(separate_cert_and_key=True)


@pytest.mark.parametrize(
    ("encoding", "stored", "written"),
    [
        (Encoding.UTF8, "héllo", "héllo".encode()),
        (Encoding.HEX, "00ff10", b"\x00\xff\x10"),
        (Encoding.BASE64, base64.b64encode(b"\x00bin").decode(), b"\x00bin"),
    ],
)
def test_secret_encodings(encoding: Encoding, stored: str, written: bytes) -> None:
    assert secret_files(spec(encoding=encoding), "f", stored, None, None, ContentOptions()) == [
        ("f", written)
    ]


def test_bad_encoding_names_the_object_not_the_value() -> None:
    with pytest.raises(KeyVaultError) as info:
        secret_files(spec(encoding=Encoding.HEX), "f", "zz-top-secret", None, None, ContentOptions())
    assert "secret 's'" in str(info.value) and "zz-top-secret" not in str(info.value)


@pytest.mark.parametrize(
    "stored_order", [("intermediate", "root"), ("root", "intermediate")], ids=["ordered", "shuffled"]
)
def test_pfx_secret_becomes_key_then_chain_leaf_to_root(stored_order: tuple[str, ...]) -> None:
    chain = make_chain()
    [(path, data)] = secret_files(SECRET, "tls", chain.pfx_b64(stored_order), PKCS12, KID, ContentOptions())
    assert path == "tls"
    assert data.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(data, None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.public_key().public_numbers() == chain.leaf_key.public_key().public_numbers()
    assert subjects(data) == ["CN=leaf.example", "CN=Test Intermediate", "CN=Test Root"]


def test_chain_construction_can_be_turned_off() -> None:
    chain = make_chain()
    pfx = chain.pfx_b64(("root", "intermediate"))
    [(_, data)] = secret_files(SECRET, "tls", pfx, PKCS12, KID, ContentOptions(construct_pem_chain=False))
    assert subjects(data) == ["CN=leaf.example", "CN=Test Root", "CN=Test Intermediate"]


def test_pfx_format_keeps_the_pfx() -> None:
    b64 = make_chain().pfx_b64()
    assert secret_files(spec(format=Format.PFX), "p", b64, PKCS12, KID, ContentOptions()) == [
        ("p", b64.encode())
    ]
    [(_, raw)] = secret_files(
        spec(format=Format.PFX, encoding=Encoding.BASE64), "p", b64, PKCS12, KID, ContentOptions()
    )
    assert raw == base64.b64decode(b64)
    # As upstream: the split finds no PEM in a PFX, so its .crt and .key are empty.
    assert secret_files(spec(format=Format.PFX), "p", b64, PKCS12, KID, SPLIT) == [
        ("p.crt", b""),
        ("p.key", b""),
        ("p", b64.encode()),
    ]


def test_separate_cert_and_key_files() -> None:
    chain = make_chain()
    files = secret_files(SECRET, "tls", chain.pfx_b64(), PKCS12, KID, SPLIT)
    assert [path for path, _ in files] == ["tls.crt", "tls.key", "tls"]
    got = dict(files)
    assert got["tls"] == got["tls.key"] + got["tls.crt"]
    assert subjects(got["tls.crt"])[0] == "CN=leaf.example"
    assert b"CERTIFICATE" not in got["tls.key"]


def test_pem_certificate_secret_passes_through_and_splits_in_either_format() -> None:
    chain = make_chain()
    pem = (chain.key_pem() + chain.pem("leaf", "intermediate")).decode()
    assert secret_files(SECRET, "t", pem, PEM_FILE, KID, ContentOptions()) == [("t", pem.encode())]
    for fmt in Format:
        files = dict(secret_files(spec(format=fmt), "t", pem, PEM_FILE, KID, SPLIT))
        assert files == {
            "t": pem.encode(),
            "t.key": chain.key_pem(),
            "t.crt": chain.pem("leaf", "intermediate"),
        }


def test_split_re_encodes_pem_blocks_as_upstream() -> None:
    chain = make_chain()
    der = chain.leaf.public_bytes(serialization.Encoding.DER)
    wide = base64.b64encode(der).decode()  # one long line, as some tools write PEM
    pem = f"junk\n-----BEGIN CERTIFICATE-----\n{wide}\n-----END CERTIFICATE-----\n"
    assert dict(secret_files(SECRET, "t", pem, PEM_FILE, KID, SPLIT))["t.crt"] == chain.pem("leaf")


@pytest.mark.parametrize("content_type", [PKCS12, PEM_FILE])
def test_plain_secrets_are_never_converted_or_split(content_type: str) -> None:
    chain = make_chain()
    value = chain.pfx_b64() if content_type == PKCS12 else (chain.key_pem() + chain.pem("leaf")).decode()
    assert secret_files(SECRET, "p", value, content_type, None, SPLIT) == [("p", value.encode())]


def test_certificate_secret_of_unknown_content_type_is_an_error() -> None:
    with pytest.raises(KeyVaultError, match="unknown content type 'text/plain'"):
        secret_files(SECRET, "p", "x", "text/plain", KID, ContentOptions())


def _jwk_rsa(key: rsa.RSAPrivateKey, kty: str = "RSA") -> JsonWebKey:
    n = key.public_key().public_numbers()
    return JsonWebKey(kty, n=n.n.to_bytes(256, "big"), e=n.e.to_bytes(3, "big"))


@pytest.mark.parametrize("kty", ["RSA", "RSA-HSM"])
def test_rsa_key_becomes_pkix_pem(kty: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = public_key_pem(ObjectSpec("k", ObjectType.KEY), _jwk_rsa(key, kty))
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert serialization.load_pem_public_key(pem).public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("crv", "curve", "size"),
    [("P-256", ec.SECP256R1(), 32), ("P-384", ec.SECP384R1(), 48), ("P-521", ec.SECP521R1(), 66)],
)
def test_ec_key_becomes_pkix_pem(crv: str, curve: ec.EllipticCurve, size: int) -> None:
    key = ec.generate_private_key(curve)
    nums = key.public_key().public_numbers()
    jwk = JsonWebKey("EC-HSM", crv=crv, x=nums.x.to_bytes(size, "big"), y=nums.y.to_bytes(size, "big"))
    loaded = serialization.load_pem_public_key(public_key_pem(ObjectSpec("k", ObjectType.KEY), jwk))
    assert isinstance(loaded, ec.EllipticCurvePublicKey) and loaded.public_numbers() == nums


@pytest.mark.parametrize(
    ("jwk", "words"),
    [(JsonWebKey("oct"), "'oct'"), (JsonWebKey("EC", crv="P-256K", x=b"1", y=b"2"), "P-256K")],
)
def test_unsupported_keys_are_clear_errors(jwk: JsonWebKey, words: str) -> None:
    with pytest.raises(KeyVaultError, match=words):
        public_key_pem(ObjectSpec("k", ObjectType.KEY), jwk)


def test_certificate_becomes_leaf_pem() -> None:
    chain = make_chain()
    der = chain.leaf.public_bytes(serialization.Encoding.DER)
    assert certificate_pem(ObjectSpec("c", ObjectType.CERT), der) == chain.pem("leaf")
