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
from cryptography.hazmat.primitives.serialization import pkcs12

from kvmount.keyvault.errors import Category, KeyVaultError
from kvmount.keyvault.objects import Encoding, Format, ObjectSpec

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


def _key_id(cert: x509.Certificate, ext: type[x509.ExtensionType]) -> bytes | None:
    try:
        value = cert.extensions.get_extension_for_class(ext).value
    except x509.ExtensionNotFound:
        return None
    if isinstance(value, x509.SubjectKeyIdentifier):
        return value.digest
    if isinstance(value, x509.AuthorityKeyIdentifier):
        return value.key_identifier
    return None


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    aki = _key_id(child, x509.AuthorityKeyIdentifier)
    ski = _key_id(parent, x509.SubjectKeyIdentifier)
    if aki is not None and ski is not None:
        return aki == ski
    return child.issuer == parent.subject


def order_chain(certs: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """Leaf -> intermediates -> root when the certificates form one complete
    chain; otherwise the stored order, since a guess would be worse."""
    if len(certs) < 2:
        return list(certs)
    parent: dict[int, int] = {}
    for i, child in enumerate(certs):
        for j, candidate in enumerate(certs):
            if i != j and _issued_by(child, candidate):
                parent[i] = j
                break
    leaves = [i for i in range(len(certs)) if i not in parent.values()]
    if len(leaves) != 1:
        return list(certs)
    order = [leaves[0]]
    while order[-1] in parent and parent[order[-1]] not in order:
        order.append(parent[order[-1]])
    if len(order) != len(certs):
        return list(certs)
    return [certs[i] for i in order]


def pem_certs(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _split_pem(data: bytes) -> tuple[bytes, bytes]:
    """(key blocks, certificate blocks) of a PEM bundle, each in stored order."""
    keys: list[bytes] = []
    certs: list[bytes] = []
    block: list[bytes] = []
    for line in data.splitlines(keepends=True):
        if line.startswith(b"-----BEGIN "):
            block = [line]
        elif block:
            block.append(line)
            if line.startswith(b"-----END "):
                text = b"".join(block)
                (certs if b"CERTIFICATE" in block[0] else keys).append(
                    text if text.endswith(b"\n") else text + b"\n"
                )
                block = []
    return b"".join(keys), b"".join(certs)


def _pfx_to_pem(spec: ObjectSpec, value: str, options: ContentOptions) -> tuple[bytes, bytes]:
    """(private key PEM, certificate chain PEM) from a base64 PFX without password."""
    try:
        bundle = pkcs12.load_pkcs12(base64.b64decode(value, validate=True), None)
    except (ValueError, binascii.Error):
        raise _bad(spec, "Key Vault returned a PKCS#12 bundle that cannot be read") from None
    certs = ([bundle.cert.certificate] if bundle.cert else []) + [
        c.certificate for c in bundle.additional_certs
    ]
    if options.construct_pem_chain:
        certs = order_chain(certs)
    key = b""
    if bundle.key is not None:
        key = bundle.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    return key, pem_certs(certs)


def secret_files(
    spec: ObjectSpec, path: str, value: str, content_type: str | None, options: ContentOptions
) -> list[tuple[str, bytes]]:
    """The files of one secret version: (relative path, bytes)."""
    if content_type == PKCS12:
        if spec.format is Format.PFX:
            if spec.encoding is Encoding.BASE64:
                return [(path, decode_secret(spec, value))]
            return [(path, value.encode("ascii"))]
        key, chain = _pfx_to_pem(spec, value, options)
    elif content_type == PEM_FILE and spec.format is Format.PEM:
        data = value.encode("utf-8")
        if not options.separate_cert_and_key:
            return [(path, data)]
        key, chain = _split_pem(data)
        return [(path, data), (f"{path}.crt", chain), (f"{path}.key", key)]
    else:
        return [(path, decode_secret(spec, value))]
    files = [(path, key + chain)]
    if options.separate_cert_and_key:
        files += [(f"{path}.crt", chain), (f"{path}.key", key)]
    return files


def public_key_pem(spec: ObjectSpec, jwk: JsonWebKey) -> bytes:
    """A Key Vault key's public part as PKIX (SubjectPublicKeyInfo) PEM."""
    public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    if jwk.kty in ("RSA", "RSA-HSM") and jwk.n and jwk.e:
        public = rsa.RSAPublicNumbers(int.from_bytes(jwk.e, "big"), int.from_bytes(jwk.n, "big")).public_key()
    elif jwk.kty in ("EC", "EC-HSM") and jwk.crv in _CURVES and jwk.x and jwk.y:
        curve = _CURVES[jwk.crv]
        public = ec.EllipticCurvePublicNumbers(
            int.from_bytes(jwk.x, "big"), int.from_bytes(jwk.y, "big"), curve
        ).public_key()
    elif jwk.kty in ("EC", "EC-HSM"):
        raise _bad(spec, f"curve {jwk.crv!r} is not supported; use P-256, P-384 or P-521")
    else:
        raise _bad(spec, f"key type {jwk.kty!r} is not supported; use RSA, RSA-HSM, EC or EC-HSM")
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def certificate_pem(spec: ObjectSpec, der: bytes) -> bytes:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        raise _bad(spec, "Key Vault returned a certificate that cannot be read") from None
    return cert.public_bytes(serialization.Encoding.PEM)
