"""tls.key in upstream's formats: PKCS#1 for RSA, SEC1 for EC (tests/compat/test_crossings.py
compares the whole Secret with upstream's driver)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from kvmount.secretsync.errors import SyncError
from kvmount.secretsync.tls import tls_key
from tests.certs import make_chain

TRADITIONAL = (
    serialization.Encoding.PEM,
    serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption(),
)
PKCS8 = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def test_rsa_key_is_pkcs1() -> None:
    chain = make_chain()
    key = tls_key(chain.key_pem() + chain.pem("leaf"), "where")
    assert key.startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")
    assert key == chain.leaf_key.private_bytes(*TRADITIONAL)


def test_ec_key_is_sec1() -> None:
    private = ec.generate_private_key(ec.SECP384R1())
    key = tls_key(private.private_bytes(*PKCS8), "where")
    assert key.startswith(b"-----BEGIN EC PRIVATE KEY-----\n")
    assert key == private.private_bytes(*TRADITIONAL)


def test_other_key_types_are_refused_as_upstream_refuses_them() -> None:
    with pytest.raises(SyncError, match=r"where: the private key is .*; tls\.key takes an RSA or EC key"):
        tls_key(ed25519.Ed25519PrivateKey.generate().private_bytes(*PKCS8), "where")
