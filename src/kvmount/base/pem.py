"""PEM blocks and password-less PKCS#12 bundles read, certificate chains ordered.

One reading for both users: the provider's content conversion (keyvault/content.py)
and the sync's ``kubernetes.io/tls`` split (secretsync/tls.py).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

# A block ends with the END line of its own label; any label (a key's, a certificate's, ...).
_PEM_BLOCK = re.compile(rb"-----BEGIN ([^\r\n]*?)-----\r?\n(.*?)-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class PemBlock:
    label: bytes  # b"CERTIFICATE", b"PRIVATE KEY", ...
    text: bytes  # the block as written, BEGIN and END lines included
    body: bytes  # what lies between them

    def der(self) -> bytes | None:
        """The block's bytes (RFC 1421 headers skipped), or None when its body is not base64."""
        body = self.body
        if b":" in body.split(b"\n\n", 1)[0] and b"\n\n" in body:
            body = body.split(b"\n\n", 1)[1]
        try:
            return base64.b64decode(b"".join(body.split()), validate=True)
        except binascii.Error:
            return None


def pem_blocks(data: bytes) -> Iterator[PemBlock]:
    """The PEM blocks of a bundle, in stored order; text outside them is skipped."""
    for match in _PEM_BLOCK.finditer(data):
        yield PemBlock(match.group(1), match.group(0), match.group(2))


def pem_block(label: bytes, der: bytes) -> bytes:
    """One block as OpenSSL writes it: 64-column base64, no headers."""
    body = base64.b64encode(der)
    lines = b"".join(body[i : i + 64] + b"\n" for i in range(0, len(body), 64))
    return b"-----BEGIN " + label + b"-----\n" + lines + b"-----END " + label + b"-----\n"


def pkcs12_parts(der: bytes) -> tuple[PrivateKeyTypes | None, list[x509.Certificate]]:
    """The private key (if any) and the certificates, its own first, of a password-less
    PKCS#12 bundle; ValueError when it is not one."""
    key, cert, extra = pkcs12.load_key_and_certificates(der, None)
    return key, ([cert] if cert is not None else []) + list(extra)


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
    # By key identifiers only, as upstream links a chain: without them the stored order stays.
    aki = _key_id(child, x509.AuthorityKeyIdentifier)
    ski = _key_id(parent, x509.SubjectKeyIdentifier)
    return aki is not None and aki == ski


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
