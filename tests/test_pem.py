"""base/pem.py: one reading of PEM and PKCS#12 for the provider's content and the sync's TLS split."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization

from kvmount.base.pem import order_chain, pem_block, pem_blocks, pkcs12_parts
from tests.certs import make_chain


def test_incomplete_chain_keeps_stored_order() -> None:
    a, b = make_chain("a.example"), make_chain("b.example")
    certs = [b.root, a.leaf, a.root]  # a's intermediate is missing: no single chain
    assert order_chain(certs) == certs
    assert order_chain([a.root, a.leaf, a.intermediate]) == [a.leaf, a.intermediate, a.root]


def test_blocks_in_stored_order_with_their_text_and_bytes() -> None:
    chain = make_chain()
    der = chain.leaf.public_bytes(serialization.Encoding.DER)
    headers = b"Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n"
    cert = pem_block(b"CERTIFICATE", der)
    with_headers = cert.replace(b"-----\n", b"-----\n" + headers, 1)
    crlf = cert.replace(b"\n", b"\r\n")
    data = b"junk\n" + chain.key_pem() + with_headers + b"between\n" + crlf
    blocks = list(pem_blocks(data))
    assert [b.label for b in blocks] == [b"PRIVATE KEY", b"CERTIFICATE", b"CERTIFICATE"]
    assert blocks[0].text == chain.key_pem().rstrip(b"\n")
    assert blocks[1].der() == der, "RFC 1421 headers are skipped"
    assert blocks[2].der() == der, "CRLF line ends"


def test_a_block_is_closed_by_its_own_label_and_must_be_base64() -> None:
    assert list(pem_blocks(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----\n")) == []
    [block] = pem_blocks(b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
    assert block.der() is None


def test_pem_block_is_64_columns() -> None:
    text = pem_block(b"X", bytes(100))
    lines = text.splitlines()
    assert lines[0] == b"-----BEGIN X-----" and lines[-1] == b"-----END X-----"
    assert [len(line) for line in lines[1:-1]] == [64, 64, 8]
    assert base64.b64decode(b"".join(lines[1:-1])) == bytes(100)


def test_pkcs12_parts_own_certificate_first_and_refuses_a_password() -> None:
    chain = make_chain()
    key, certs = pkcs12_parts(chain.pfx(("root", "intermediate")))
    assert key is not None and certs[0] == chain.leaf
    assert set(certs) == {chain.leaf, chain.intermediate, chain.root}
    with pytest.raises(ValueError):
        pkcs12_parts(chain.pfx(password=b"secret"))
    with pytest.raises(ValueError):
        pkcs12_parts(b"not a bundle")
