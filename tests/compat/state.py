"""The Key Vault state every differential case reads: seeded once per module in the double.

Object names get a random suffix (the double is shared by the session); cases
name objects by placeholder (``{plain}``), which ``State.names`` fills in.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.certs import _cert, make_chain
from tests.peers.keyvault_double import KeyVaultDouble
from tests.support import eventually

VAULT = "kvtest"
PEM_FILE = "application/x-pem-file"
PKCS12 = "application/x-pkcs12"
HISTORY = 5  # versions of {hist}; the fourth is disabled


@dataclass(frozen=True)
class State:
    names: dict[str, str]  # placeholder -> value (object names, version ids)


def _version(created: dict[str, object]) -> str:
    return str(created["id"]).rsplit("/", 1)[1]


def _next_second() -> None:
    """Wait until the clock's second changes: Key Vault's creation times have one-second
    resolution, and upstream's order of versions created in one second is arbitrary."""
    start = int(time.time())
    eventually(lambda: int(time.time()) != start, timeout=3, what="the clock's next second")


def _ec_certificate_pfx() -> bytes:
    """A certificate whose key is EC (P-256): its secret's key is written as PKCS#8 too."""
    root_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = _cert("EC Root", root_key, "EC Root", root_key, ca=True)
    leaf = _cert("ec.example", leaf_key, "EC Root", root_key, ca=False)
    return pkcs12.serialize_key_and_certificates(b"ec", leaf_key, leaf, [root], serialization.NoEncryption())


def _tied_versions(kv: KeyVaultDouble, suffix: str) -> str:
    """A secret with two versions created in the same second (a fresh name until they are)."""
    for attempt in range(5):
        name = f"cmp-tied-{attempt}-{suffix}"
        first = kv.put_secret(VAULT, name, "tied value 0")["attributes"]["created"]
        if kv.put_secret(VAULT, name, "tied value 1")["attributes"]["created"] == first:
            return name
    raise AssertionError("could not create two versions within one second")


def seed(kv: KeyVaultDouble) -> State:
    suffix = uuid.uuid4().hex[:6]
    names = {
        key: f"cmp-{key}-{suffix}"
        for key in (
            "plain", "hex", "b64", "pemsecret", "pfxsecret", "rsa", "ec", "certpfx", "certpem",
            "certleaf", "certshuffled", "certgap", "certec", "hist", "changing", "changing2",
            "rsahsm", "echsm", "oct", "empty", "unicode", "disabledlatest",
        )
    }  # fmt: skip
    kv.put_secret(VAULT, names["plain"], "plain value")
    kv.put_secret(VAULT, names["hex"], "cafe00ff")
    kv.put_secret(VAULT, names["b64"], base64.b64encode(b"\x00binary\xff").decode())
    chain = make_chain(f"{suffix}.example")
    # Plain secrets (no certificate behind them) whose content types say PEM and PKCS#12.
    kv.put_secret(VAULT, names["pemsecret"], (chain.key_pem() + chain.pem("leaf")).decode(), PEM_FILE)
    kv.put_secret(VAULT, names["pfxsecret"], chain.pfx_b64(), PKCS12)
    kv.put_secret(VAULT, names["empty"], "")
    kv.put_secret(VAULT, names["unicode"], "grüße ✓\r\nzweite Zeile\n")
    kv.put_secret(VAULT, names["disabledlatest"], "enabled value")
    kv.put_secret(VAULT, names["disabledlatest"], "disabled value", enabled=False)
    key_version = kv.create_key(VAULT, names["rsa"], kty="RSA", size=2048)["key"]["kid"].rsplit("/", 1)[1]
    kv.create_key(VAULT, names["ec"], kty="EC", curve="P-384")
    kv.create_key(VAULT, names["rsahsm"], kty="RSA-HSM", size=3072)
    kv.create_key(VAULT, names["echsm"], kty="EC-HSM", curve="P-521")
    kv.create_key(VAULT, names["oct"], kty="oct", size=256)
    cert_version = _version(kv.import_certificate(VAULT, names["certpfx"], chain.pfx()))
    kv.import_certificate(
        VAULT, names["certpem"], chain.key_pem() + chain.pem("leaf", "intermediate", "root"), PEM_FILE
    )
    kv.import_certificate(VAULT, names["certleaf"], chain.pfx(()))
    kv.import_certificate(VAULT, names["certshuffled"], chain.pfx(("root", "intermediate")))
    kv.import_certificate(VAULT, names["certgap"], chain.pfx(("root",)))  # no intermediate: no full chain
    kv.import_certificate(VAULT, names["certec"], _ec_certificate_pfx())
    # Changed by one case each (two versions made in one second would tie).
    kv.put_secret(VAULT, names["changing"], "first value")
    kv.put_secret(VAULT, names["changing2"], "first value")
    versions = []
    for i in range(HISTORY):
        _next_second()
        versions.append(_version(kv.put_secret(VAULT, names["hist"], f"history value {i}")))
    kv.update(VAULT, "secrets", names["hist"], versions[3], {"attributes": {"enabled": False}})
    names.update(vkey=key_version, vcert=cert_version, tied=_tied_versions(kv, suffix))
    names.update(v1=versions[1], v2=versions[2], vdisabled=versions[3], vlatest=versions[4])
    return State(names)
