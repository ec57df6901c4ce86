"""``kubernetes.io/tls`` data from a mounted file: the private key and the chain, split out of PEM
or password-less PKCS#12 (DER or base64), checked to belong together."""

from __future__ import annotations

import base64
import contextlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from kvmount.base.pem import order_chain, pem_blocks, pem_certs, pkcs12_parts
from kvmount.secretsync.errors import SyncError, SyncReason
from kvmount.secretsync.secret_types import TLS_CERT, TLS_KEY

_PEM_KEYS = {b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY"}


def _tls_parts(content: bytes, where: str) -> tuple[PrivateKeyTypes | None, list[x509.Certificate]]:
    """The private key (if any) and certificates of a PEM or password-less PKCS#12 file."""
    if b"-----BEGIN " in content:
        return _pem_parts(content, where)
    candidates = [content]
    # Base64 text of a PKCS#12, as Key Vault stores a certificate's secret (binascii.Error is a ValueError).
    with contextlib.suppress(ValueError):
        candidates.append(base64.b64decode(b"".join(content.split()), validate=True))
    for der in candidates:
        try:
            return pkcs12_parts(der)
        except ValueError:
            continue
    raise SyncError(
        SyncReason.INVALID_CERTIFICATE,
        f"{where}: neither PEM nor a password-less PKCS#12 (DER or base64); mount the "
        "certificate's secret (objectType: secret), not its public certificate alone",
    )


def _pem_parts(content: bytes, where: str) -> tuple[PrivateKeyTypes | None, list[x509.Certificate]]:
    keys: list[PrivateKeyTypes] = []
    certs: list[x509.Certificate] = []
    for block in pem_blocks(content):
        label = block.label
        if label == b"ENCRYPTED PRIVATE KEY":
            raise SyncError(
                SyncReason.INVALID_CERTIFICATE, f"{where}: the private key is encrypted; mount it unencrypted"
            )
        try:
            if label == b"CERTIFICATE":
                certs.append(x509.load_pem_x509_certificate(block.text))
            elif label in _PEM_KEYS:
                keys.append(serialization.load_pem_private_key(block.text, None))
        except (ValueError, TypeError):
            raise SyncError(
                SyncReason.INVALID_CERTIFICATE, f"{where}: a PEM {label.decode()} block is corrupt"
            ) from None
    if len(keys) > 1:
        raise SyncError(
            SyncReason.INVALID_CERTIFICATE, f"{where}: holds {len(keys)} private keys; a TLS Secret takes one"
        )
    return (keys[0] if keys else None), certs


def tls_key(content: bytes, where: str) -> bytes:
    key, _ = _tls_parts(content, where)
    if key is None:
        raise SyncError(
            SyncReason.INVALID_CERTIFICATE,
            f"{where}: no private key in the file; mount the certificate's secret (objectType: secret)",
        )
    # Upstream's driver writes RSA keys as PKCS#1 and EC keys as SEC1 and refuses other types;
    # ingress controllers and apps read this Secret, so it is matched byte for byte.
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise SyncError(
            SyncReason.INVALID_CERTIFICATE,
            f"{where}: the private key is {type(key).__name__}; {TLS_KEY} takes an RSA or EC key",
        )
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def tls_chain(content: bytes, where: str) -> bytes:
    key, certs = _tls_parts(content, where)
    if not certs:
        raise SyncError(SyncReason.INVALID_CERTIFICATE, f"{where}: no certificate in the file")
    chain = order_chain(certs)
    if key is not None:
        # Whatever the file's order, the certificate of the file's own key is the leaf.
        mine = _spki(key.public_key())
        leaf = next((c for c in chain if _spki(c.public_key()) == mine), None)
        if leaf is not None:
            chain = [leaf, *(c for c in chain if c is not leaf)]
    return pem_certs(chain)


def check_pair(key_pem: bytes, chain_pem: bytes, where: str) -> None:
    # Both were produced above, so they parse; a mismatch would only fail later, in a TLS handshake.
    key = serialization.load_pem_private_key(key_pem, None)
    leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise SyncError(
            SyncReason.INVALID_CERTIFICATE,
            f"{where}: the private key for {TLS_KEY} does not belong to the first certificate of "
            f"{TLS_CERT} ({leaf.subject.rfc4514_string()}); map both keys to the same certificate object",
        )
