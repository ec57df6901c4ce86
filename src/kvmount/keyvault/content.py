"""Key Vault objects turned into file bytes: encodings, PEM, PFX, chain order.

Conversions follow the upstream Azure provider's documented output: a
certificate-backed secret becomes the private key (PKCS#8) followed by the
chain leaf -> intermediates -> root; a key becomes its public key as PKIX PEM;
a certificate becomes its leaf as PEM.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kvmount.base.pem import order_chain, pem_block, pem_blocks, pem_certs, pkcs12_parts
from kvmount.keyvault.errors import Category, KeyVaultError
from kvmount.keyvault.parameters.filenames import check_owned_paths
from kvmount.keyvault.parameters.objects import output_paths
from kvmount.keyvault.types import Encoding, Format, ObjectSpec, ObjectType

PKCS12 = "application/x-pkcs12"
PEM_FILE = "application/x-pem-file"
_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}


@dataclass(frozen=True)
class ContentOptions:
    construct_pem_chain: bool = True
    separate_cert_and_key: bool = False


@dataclass(frozen=True)
class JsonWebKey:
    """The public parts of a Key Vault key that we convert (bytes as the SDK decodes them)."""

    kty: str
    n: bytes | None = None
    e: bytes | None = None
    crv: str | None = None
    x: bytes | None = None
    y: bytes | None = None


def _bad(spec: ObjectSpec, problem: str) -> KeyVaultError:
    return KeyVaultError(f"{spec.describe()}: {problem}", Category.INTERNAL)


def decode_secret(spec: ObjectSpec, value: str) -> bytes:
    """A secret's value decoded per objectEncoding."""
    if spec.encoding is Encoding.UTF8:
        return value.encode("utf-8")
    try:
        if spec.encoding is Encoding.HEX:
            return bytes.fromhex(value.strip())
        return base64.b64decode(value.strip(), validate=True)
    except (ValueError, binascii.Error):
        raise KeyVaultError(
            f"{spec.describe()}: the value is not {spec.encoding.value}; fix objectEncoding",
            Category.INVALID,
        ) from None


def split_pem(data: bytes) -> tuple[bytes, bytes]:
    """(certificate blocks, other blocks) of a PEM bundle, each in stored order and
    re-encoded (64-column base64, no headers) as upstream's split writes them."""
    certs: list[bytes] = []
    others: list[bytes] = []
    for block in pem_blocks(data):
        der = block.der()
        if der is None:
            continue  # not a PEM block after all
        (certs if block.label == b"CERTIFICATE" else others).append(pem_block(block.label, der))
    return b"".join(certs), b"".join(others)


def _pfx_to_pem(spec: ObjectSpec, value: str, options: ContentOptions) -> str:
    """A base64 PFX without password as PEM: the private key (PKCS#8), then the chain."""
    try:
        key, certs = pkcs12_parts(base64.b64decode(value, validate=True))
    except ValueError:  # binascii.Error is one
        raise _bad(spec, "Key Vault returned a PKCS#12 bundle that cannot be read") from None
    if options.construct_pem_chain:
        certs = order_chain(certs)
    key_pem = b""
    if key is not None:
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    return (key_pem + pem_certs(certs)).decode("ascii")


def secret_files(
    spec: ObjectSpec,
    path: str,
    value: str,
    content_type: str | None,
    key_id: str | None,
    options: ContentOptions,
) -> list[tuple[str, bytes]]:
    """The files of one secret version, (relative path, bytes), in upstream's order.

    Only a certificate's secret (one with a key id) is converted: PKCS#12 to PEM
    unless objectFormat is pfx, and with --write-cert-and-key-in-separate-files
    split into <file>.crt and <file>.key as well. A plain secret is written as
    stored, whatever its content type. objectEncoding applies to every piece.
    """
    content = value
    pieces: list[tuple[str, str]] = []
    if key_id:
        if content_type == PKCS12:
            if spec.format is not Format.PFX:
                content = _pfx_to_pem(spec, value, options)
        elif content_type != PEM_FILE:
            raise _bad(spec, f"a certificate's secret has the unknown content type {content_type!r}")
        if options.separate_cert_and_key:
            certs, key = split_pem(content.encode("utf-8"))
            pieces += [(".crt", certs.decode("ascii")), (".key", key.decode("ascii"))]
    pieces.append(("", content))
    return [(path + suffix, decode_secret(spec, text)) for suffix, text in pieces]


def check_split_paths(objects: Sequence[ObjectSpec]) -> None:
    """With --write-cert-and-key-in-separate-files any secret may turn out to be a
    certificate's and also write <file>.crt and <file>.key: refused up front when
    those could meet another object's file (a `tls` and an alias `tls.key`)."""

    def owned(spec: ObjectSpec) -> list[tuple[str, str]]:
        owner = f"object {spec.name!r}"
        suffixes = ("", ".crt", ".key") if spec.type is ObjectType.SECRET else ("",)
        return [(path + suffix, owner) for path in output_paths(spec) for suffix in suffixes]

    check_owned_paths(pair for spec in objects for pair in owned(spec))


def public_key_pem(spec: ObjectSpec, jwk: JsonWebKey) -> bytes:
    """A Key Vault key's public part as PKIX (SubjectPublicKeyInfo) PEM."""
    public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    try:
        if jwk.kty in ("RSA", "RSA-HSM") and jwk.n and jwk.e:
            numbers = rsa.RSAPublicNumbers(int.from_bytes(jwk.e, "big"), int.from_bytes(jwk.n, "big"))
            public = numbers.public_key()
        elif jwk.kty in ("EC", "EC-HSM") and jwk.crv in _CURVES and jwk.x and jwk.y:
            curve = _CURVES[jwk.crv]
            public = ec.EllipticCurvePublicNumbers(
                int.from_bytes(jwk.x, "big"), int.from_bytes(jwk.y, "big"), curve
            ).public_key()
        elif jwk.kty in ("EC", "EC-HSM"):
            raise _bad(spec, f"curve {jwk.crv!r} is not supported; use P-256, P-384 or P-521")
        else:
            raise _bad(spec, f"key type {jwk.kty!r} is not supported; use RSA, RSA-HSM, EC or EC-HSM")
    except ValueError:  # numbers no key has: n below 3, a point off the curve
        raise _bad(spec, "Key Vault returned a public key that cannot be read") from None
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def certificate_pem(spec: ObjectSpec, der: bytes) -> bytes:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise _bad(spec, "Key Vault returned a certificate that cannot be read") from None
    return cert.public_bytes(serialization.Encoding.PEM)
