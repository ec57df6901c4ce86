"""An Azure Key Vault + Azure AD + IMDS + pod-identity NMI double for tests.

Why: the tests need a real REST peer for the azure-keyvault-* and azure-identity
SDKs, and no genuine emulator can be installed here, so this is one faithful
double in one place (stdlib ``http.server`` + ``ssl`` + ``cryptography``).

Listeners (all on 127.0.0.1):

* TLS port (``port``): Key Vault data plane, selected by the Host header's first
  label (``https://<vault>.vault.localhost:<port>/...``, vaults made lazily),
  the Azure AD double on host ``login.localhost`` and the control API under
  ``/_double/`` (any host, no auth).
* plain-HTTP IMDS port (``imds_port``): ``GET /metadata/identity/oauth2/token``.
  azure-identity/MSAL read ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` for the IMDS
  host; real IMDS is plain HTTP, so point that variable at ``imds_url``.
* plain-HTTP NMI port (``nmi_port``): ``GET /host/token/?resource=...`` with
  ``podns``/``podname`` headers, like aad-pod-identity's NMI (upstream port 2579).
* plain-HTTP proxy port (``proxy_port``): ``CONNECT login.microsoftonline.com:443``
  only, tunnelled to the TLS port. MSAL Go asks that host's
  ``/common/discovery/instance`` before it trusts any other authority host (such
  as ``login.localhost:<port>``); Go programs reach it with ``go_env()``
  (``HTTPS_PROXY`` = ``proxy_url``, ``NO_PROXY`` for everything else).

Every accepted socket has TCP_NODELAY: a response's headers and body leave as two
writes (two TLS records), and Nagle's algorithm would hold the second until the
client's delayed ACK, about 40 ms per request.

Names need ``scripts/peers/hosts.sh`` (adds kvtest/kvother/kvbench.vault.localhost
and login.localhost to /etc/hosts). Clients trust ``ca_path`` (``REQUESTS_CA_BUNDLE``
or ``connection_verify=``).

Stable API used by other tests::

    from tests.peers.keyvault_double import KeyVaultDouble
    kv = KeyVaultDouble(tenant="tenant").start()   # in-process, server threads
    kv.port, kv.imds_port, kv.nmi_port, kv.ca_path, kv.tenant
    kv.url_for("kvtest")        # https://kvtest.vault.localhost:<port>
    kv.authority                # https://login.localhost:<port>  (disable_instance_discovery=True)
    kv.imds_url, kv.nmi_url     # http://127.0.0.1:<imds_port>, http://127.0.0.1:<nmi_port>
    kv.proxy_url                # http://127.0.0.1:<proxy_port> (AAD instance discovery)
    kv.scope                    # https://vault.localhost:<port>/.default
    kv.env()                    # REQUESTS_CA_BUNDLE, SSL_CERT_FILE, AZURE_POD_IDENTITY_AUTHORITY_HOST
    kv.go_env()                 # env() plus HTTPS_PROXY/NO_PROXY, for Go's MSAL (upstream's provider)
    kv.write_cloud_env(path)    # AzureStackCloud env file for cloudEnvFileName
    kv.requests() / kv.reset_log() / kv.set_latency(ms) / kv.set_outage(status)
    kv.set_faults(Fault("status", count=2, status=429, retry_after="1"), ...)  # see Fault
    kv.register_aad_client(client_id, secret=None, cert_pem=None, federated=None)
    kv.deny_pod(namespace, name) / kv.allow_pod(namespace, name) / kv.set_pod_client_id(client_id)
    kv.deny_object(vault, kind, name, deny=True)  # 403 AccessDenied on reads of that object
    kv.put_secret(vault, name, value, content_type=None, enabled=True, tags=None) -> SecretBundle dict
    kv.create_key(vault, name, kty="RSA", size=None, curve=None) -> KeyBundle dict
    kv.import_certificate(vault, name, data, content_type="application/x-pkcs12", password=None)
    kv.update(vault, kind, name, version, body) -> bundle dict (e.g. {"attributes": {"enabled": False}})
    kv.stop()

    proc = KeyVaultDouble.spawn(state_dir)   # same API, server in a subprocess
    proc.stop()

CLI: ``python tests/peers/keyvault_double.py --port 0 --state-dir DIR [--imds-port N]
[--nmi-port N] [--tenant T]`` writes ``DIR/ca.pem`` and, once listening,
``DIR/ready.json`` = ``{"port", "imds_port", "nmi_port", "proxy_port", "ca", "tenant", "pid"}``.

Control API (JSON): ``GET /_double/requests``, ``POST /_double/reset-log``,
``POST /_double/latency {"ms"}``, ``POST /_double/outage {"status"}`` (0 clears;
-1 drops the connection without a response), ``POST /_double/faults {"faults": [Fault
fields]}`` (replaces the injected faults; see ``Fault``), ``POST /_double/aad-clients
{"client_id", "secret"?, "cert_pem"?, "federated"?}``, ``POST /_double/nmi {"deny"|"allow":
[ns, name]}`` or ``{"client_id"}``, ``POST /_double/deny {"vault", "kind", "name",
"deny"}``, and ``ANY /_double/vault/<vault>/<data-plane
path>`` (the data plane without auth, latency, outage or logging, for seeding).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import secrets as pysecrets
import selectors
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives._serialization import _KeySerializationEncryption
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import pkcs12

Json = dict[str, Any]

FIXED_HOSTS = (
    "kvtest.vault.localhost",
    "kvother.vault.localhost",
    "kvbench.vault.localhost",
    "login.localhost",
)
# Public AAD hosts the double answers through its CONNECT proxy (instance discovery).
DISCOVERY_HOSTS = ("login.microsoftonline.com",)
API_VERSIONS = frozenset(
    {"7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2016-10-01", "2025-07-01", "2026-04-01"}
)
RECOVERY_LEVEL = "Recoverable+Purgeable"
RECOVERABLE_DAYS = 90
PAGE_MAX = 25  # Key Vault's own cap on maxresults
PKCS12 = "application/x-pkcs12"
PEM = "application/x-pem-file"
NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
DEFAULT_MI_CLIENT_ID = "00000000-0000-0000-0000-00000000a11d"
DEFAULT_POD_CLIENT_ID = "00000000-0000-0000-0000-000000000b0d"

if TYPE_CHECKING:
    from tests.certs import TlsMaterial


class KvError(Exception):
    """A Key Vault style error: {"error": {"code", "message"}} with a status."""

    def __init__(self, status: int, code: str, message: str, inner: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.inner = inner

    def body(self) -> Json:
        err: Json = {"code": self.code, "message": self.message}
        if self.inner:
            err["innererror"] = {"code": self.inner}
        return {"error": err}


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_bytes(value: int, length: int | None = None) -> bytes:
    return value.to_bytes(length or max(1, (value.bit_length() + 7) // 8), "big")


def _now() -> int:
    return int(time.time())


# ---------------------------------------------------------------- TLS material


def make_tls(extra_hosts: tuple[str, ...] = ()) -> TlsMaterial:
    """A throwaway CA and a server cert for localhost and the vault names."""
    from tests.certs import server_tls  # late: main() makes the repo importable when run as a script

    hosts = (
        "localhost",
        "vault.localhost",
        "*.vault.localhost",
        *FIXED_HOSTS,
        *DISCOVERY_HOSTS,
        *extra_hosts,
    )
    return server_tls("vault.localhost", hosts)


# ---------------------------------------------------------------- vault state

KINDS = ("secrets", "keys", "certificates")
NOT_FOUND = {"secrets": "SecretNotFound", "keys": "KeyNotFound", "certificates": "CertificateNotFound"}
SINGULAR = {"secrets": "secret", "keys": "key", "certificates": "certificate"}


@dataclass
class Version:
    version: str
    created: int
    updated: int
    enabled: bool = True
    nbf: int | None = None
    exp: int | None = None
    tags: dict[str, str] | None = None
    managed: bool = False
    content_type: str | None = None
    value: str | None = None  # secrets
    jwk: Json | None = None  # keys: public JWK without kid
    key_ops: list[str] | None = None
    exportable: bool = False
    der: bytes | None = None  # certificates: leaf DER
    policy: Json | None = None


@dataclass
class Entry:
    name: str  # as first written; Key Vault names are case-insensitive
    versions: list[Version] = field(default_factory=list)
    deleted_date: int | None = None

    def latest(self) -> Version:
        return self.versions[-1]

    def find(self, version: str) -> Version | None:
        if not version:
            return self.versions[-1] if self.versions else None
        for v in self.versions:
            if v.version == version.lower():
                return v
        return None


@dataclass
class Vault:
    name: str
    base: str  # https://<name>.vault.localhost:<port>
    live: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    deleted: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    # (kind, lower-case name) the caller may not read: an access policy without get.
    denied: set[tuple[str, str]] = field(default_factory=set)


def _attributes(v: Version, kind: str) -> Json:
    attrs: Json = {"enabled": v.enabled}
    if v.nbf is not None:
        attrs["nbf"] = v.nbf
    if v.exp is not None:
        attrs["exp"] = v.exp
    attrs.update(
        created=v.created, updated=v.updated, recoveryLevel=RECOVERY_LEVEL, recoverableDays=RECOVERABLE_DAYS
    )
    if kind == "keys":
        attrs["exportable"] = v.exportable
    return attrs


def _apply_attributes(v: Version, attrs: Json | None) -> None:
    if not attrs:
        return
    if attrs.get("enabled") is not None:
        v.enabled = bool(attrs["enabled"])
    for key in ("nbf", "exp"):
        if key in attrs:
            setattr(v, key, None if attrs[key] is None else int(attrs[key]))
    if attrs.get("exportable") is not None:
        v.exportable = bool(attrs["exportable"])


class VaultStore:
    """All vaults of one double. One lock: the operations are tiny."""

    def __init__(self, port_ref: Callable[[], int]) -> None:
        self._port = port_ref
        self.lock = threading.RLock()
        self.vaults: dict[str, Vault] = {}
        # Set (set_next_link_base): nextLinks lead there instead of the vault, as a hostile answer's would.
        self.next_link_base = ""

    def vault(self, name: str) -> Vault:
        with self.lock:
            key = name.lower()
            if key not in self.vaults:
                self.vaults[key] = Vault(key, f"https://{key}.vault.localhost:{self._port()}")
            return self.vaults[key]

    # -- rendering

    @staticmethod
    def object_id(vault: Vault, kind: str, name: str, version: str | None = None) -> str:
        return f"{vault.base}/{kind}/{name}" + (f"/{version}" if version else "")

    def render(self, vault: Vault, kind: str, e: Entry, v: Version, with_value: bool = True) -> Json:
        oid = self.object_id(vault, kind, e.name, v.version)
        if kind == "secrets":
            out: Json = {}
            if with_value:
                out["value"] = v.value
            if v.content_type is not None:
                out["contentType"] = v.content_type
            out["id"] = oid
            if v.managed:
                out["managed"] = True
                out["kid"] = self.object_id(vault, "keys", e.name, v.version)
            out["attributes"] = _attributes(v, kind)
            out["tags"] = v.tags or {}
            return out
        if kind == "keys":
            jwk: Json = {"kid": oid, **(v.jwk or {})}
            jwk["key_ops"] = list(v.key_ops or [])
            out = {"key": jwk, "attributes": _attributes(v, kind), "tags": v.tags or {}}
            if v.managed:
                out["managed"] = True
            return out
        der = v.der or b""
        policy = dict(v.policy or {})
        policy["id"] = f"{vault.base}/certificates/{e.name}/policy"
        return {
            "id": oid,
            "kid": self.object_id(vault, "keys", e.name, v.version),
            "sid": self.object_id(vault, "secrets", e.name, v.version),
            "x5t": _b64u(hashlib.sha1(der).digest()),
            "cer": base64.b64encode(der).decode(),
            "attributes": _attributes(v, kind),
            "tags": v.tags or {},
            "policy": policy,
        }

    def render_item(self, vault: Vault, kind: str, e: Entry, v: Version, versioned: bool) -> Json:
        oid = self.object_id(vault, kind, e.name, v.version if versioned else None)
        out: Json
        if kind == "keys":
            out = {"kid": oid, "attributes": _attributes(v, kind), "tags": v.tags or {}}
        elif kind == "secrets":
            out = {"id": oid, "attributes": _attributes(v, kind), "tags": v.tags or {}}
            if v.content_type is not None:
                out["contentType"] = v.content_type
        else:
            out = {
                "id": oid,
                "x5t": _b64u(hashlib.sha1(v.der or b"").digest()),
                "attributes": _attributes(v, kind),
                "tags": v.tags or {},
            }
        if v.managed:
            out["managed"] = True
        return out

    def deleted_fields(self, vault: Vault, kind: str, e: Entry) -> Json:
        deleted = e.deleted_date or _now()
        return {
            "recoveryId": f"{vault.base}/deleted{kind}/{e.name}",
            "deletedDate": deleted,
            "scheduledPurgeDate": deleted + RECOVERABLE_DAYS * 86400,
        }

    # -- lookups

    def _not_found(self, kind: str, name: str, version: str = "") -> KvError:
        ident = f"{name}/{version}" if version else name
        word = SINGULAR[kind]
        return KvError(
            404,
            NOT_FOUND[kind],
            f"A {word} with (name/id) {ident} was not found in this key vault. If you recently deleted "
            f"this {word} you may be able to recover it using the correct recovery command. For help "
            "resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
        )

    def entry(self, vault: Vault, kind: str, name: str) -> Entry:
        e = vault.live[kind].get(name.lower())
        if e is None or not e.versions:
            raise self._not_found(kind, name)
        return e

    def version(self, vault: Vault, kind: str, name: str, version: str) -> tuple[Entry, Version]:
        e = self.entry(vault, kind, name)
        v = e.find(version)
        if v is None:
            raise self._not_found(kind, name, version)
        return e, v

    def new_version(
        self, vault: Vault, kind: str, name: str, version: str | None = None
    ) -> tuple[Entry, Version]:
        if not NAME_RE.match(name):
            raise KvError(
                400,
                "BadParameter",
                f"The request URI contains an invalid name: {name}. Follow this link for more information "
                "on naming: https://aka.ms/keyvault-naming",
            )
        if name.lower() in vault.deleted[kind]:
            word = SINGULAR[kind].capitalize()
            raise KvError(
                409,
                "Conflict",
                f"{word} {name} is currently in a deleted but recoverable state, and its name cannot be "
                f"reused; in this state, the {SINGULAR[kind]} can only be recovered or purged.",
                inner="ObjectIsDeletedButRecoverable",
            )
        e = vault.live[kind].setdefault(name.lower(), Entry(name))
        now = _now()
        v = Version(version or uuid.uuid4().hex, now, now)
        e.versions.append(v)
        return e, v

    # -- paging

    def page(self, vault: Vault, path: str, query: dict[str, str], items: list[Json]) -> Json:
        try:
            size = int(query.get("maxresults") or PAGE_MAX)
        except ValueError as exc:
            raise KvError(400, "BadParameter", "maxresults must be an integer") from exc
        if not 1 <= size <= PAGE_MAX:
            raise KvError(400, "BadParameter", f"maxresults must be between 1 and {PAGE_MAX}")
        token = query.get("$skiptoken")
        start = 0
        if token:
            try:
                start = int(json.loads(_unb64u(token))["NextMarker"])
            except (ValueError, KeyError, TypeError) as exc:
                raise KvError(400, "BadParameter", "Invalid $skiptoken") from exc
        end = start + size
        page: Json = {"value": items[start:end], "nextLink": None}
        if end < len(items):
            # Real nextLinks carry an opaque base64 marker plus the original maxresults.
            marker = _b64u(json.dumps({"NextMarker": str(end)}).encode())
            params = {"api-version": query.get("api-version", "7.4"), "$skiptoken": marker}
            if "maxresults" in query:
                params["maxresults"] = str(size)
            page["nextLink"] = f"{self.next_link_base or vault.base}{path}?{urllib.parse.urlencode(params)}"
        return page


# ---------------------------------------------------------------- keys


def _public_jwk(public: Any, hsm: bool) -> Json:
    if isinstance(public, rsa.RSAPublicKey):
        nums = public.public_numbers()
        return {
            "kty": "RSA-HSM" if hsm else "RSA",
            "n": _b64u(_int_bytes(nums.n)),
            "e": _b64u(_int_bytes(nums.e)),
        }
    if isinstance(public, ec.EllipticCurvePublicKey):
        point = public.public_numbers()
        size = (public.curve.key_size + 7) // 8
        return {
            "kty": "EC-HSM" if hsm else "EC",
            "crv": CURVE_NAMES[public.curve.name],
            "x": _b64u(_int_bytes(point.x, size)),
            "y": _b64u(_int_bytes(point.y, size)),
        }
    raise KvError(400, "BadParameter", "Unsupported key type")


CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
    "P-256K": ec.SECP256K1(),
}
CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521", "secp256k1": "P-256K"}
RSA_OPS = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
EC_OPS = ["sign", "verify"]
OCT_OPS = ["encrypt", "decrypt", "wrapKey", "unwrapKey"]


def _generate_key(body: Json) -> tuple[Json, list[str]]:
    kty = str(body.get("kty", ""))
    ops = body.get("key_ops")
    if kty in ("RSA", "RSA-HSM"):
        size = int(body.get("key_size") or 2048)
        if size not in (2048, 3072, 4096):
            raise KvError(400, "BadParameter", f"Invalid key size {size} for RSA key")
        exponent = int(body.get("public_exponent") or 65537)
        key = rsa.generate_private_key(public_exponent=exponent, key_size=size)
        return _public_jwk(key.public_key(), kty.endswith("-HSM")), list(ops or RSA_OPS)
    if kty in ("EC", "EC-HSM"):
        crv = str(body.get("crv") or "P-256")
        if crv not in CURVES:
            raise KvError(400, "BadParameter", f"Invalid curve name {crv}")
        eckey = ec.generate_private_key(CURVES[crv])
        return _public_jwk(eckey.public_key(), kty.endswith("-HSM")), list(ops or EC_OPS)
    if kty in ("oct", "oct-HSM"):
        size = int(body.get("key_size") or 256)
        if size not in (128, 192, 256):
            raise KvError(400, "BadParameter", f"Invalid key size {size} for oct key")
        # Symmetric material never leaves Key Vault, so there is nothing to show.
        return {"kty": kty}, list(ops or OCT_OPS)
    raise KvError(400, "BadParameter", f"Invalid key type: {kty or '(missing)'}")


def _import_jwk(jwk: Json, hsm: bool) -> tuple[Json, list[str]]:
    kty = str(jwk.get("kty", ""))
    ops = jwk.get("key_ops")
    try:
        if kty.startswith("RSA"):
            n = int.from_bytes(_unb64u(jwk["n"]), "big")
            e = int.from_bytes(_unb64u(jwk["e"]), "big")
            public: Any = rsa.RSAPublicNumbers(e, n).public_key()
            return _public_jwk(public, hsm or kty.endswith("-HSM")), list(ops or RSA_OPS)
        if kty.startswith("EC"):
            curve = CURVES[jwk["crv"]]
            x = int.from_bytes(_unb64u(jwk["x"]), "big")
            y = int.from_bytes(_unb64u(jwk["y"]), "big")
            public = ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
            return _public_jwk(public, hsm or kty.endswith("-HSM")), list(ops or EC_OPS)
        if kty.startswith("oct"):
            return {"kty": "oct-HSM" if hsm else kty}, list(ops or OCT_OPS)
    except (KeyError, ValueError, TypeError) as exc:
        raise KvError(400, "BadParameter", f"Invalid JWK: {exc}") from exc
    raise KvError(400, "BadParameter", f"Invalid key type: {kty or '(missing)'}")


# ---------------------------------------------------------------- certificates


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _same_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt))


def _parse_certificate(
    value: str, password: str | None
) -> tuple[PrivateKey, x509.Certificate, list[x509.Certificate]]:
    raw: bytes
    text = value.strip()
    if text.startswith("-----BEGIN"):
        raw = text.encode()
    else:
        try:
            raw = base64.b64decode(text, validate=False)
        except ValueError as exc:
            raise KvError(400, "BadParameter", "The certificate value is not valid base64") from exc
    pwd = password.encode() if password else None
    key: Any
    certs: list[x509.Certificate]
    if raw.lstrip().startswith(b"-----BEGIN"):
        blocks = re.findall(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", raw, re.S)
        pem_keys = [
            m.group(0)
            for m in re.finditer(rb"-----BEGIN ([A-Z ]*PRIVATE KEY)-----.+?-----END \1-----", raw, re.S)
        ]
        if not pem_keys:
            raise KvError(
                400,
                "BadParameter",
                "Private key is not specified in the specified X.509 PEM certificate content. Please "
                "specify private key in the X.509 PEM certificate content.",
            )
        try:
            key = serialization.load_pem_private_key(pem_keys[0], pwd)
            certs = x509.load_pem_x509_certificates(raw) if blocks else []
        except (ValueError, TypeError) as exc:
            raise KvError(
                400, "BadParameter", f"The specified PEM X.509 certificate content is invalid: {exc}"
            ) from exc
    else:
        try:
            key, leaf0, extra = pkcs12.load_key_and_certificates(raw, pwd)
        except (ValueError, TypeError) as exc:
            raise KvError(
                400,
                "BadParameter",
                "The specified PKCS#12 X.509 certificate content can not be read. Please check if "
                "certificate is in valid PKCS#12 format.",
            ) from exc
        certs = ([leaf0] if leaf0 else []) + list(extra)
        if key is None:
            raise KvError(
                400, "BadParameter", "Private key is not specified in the specified X.509 PKCS#12 content."
            )
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KvError(400, "BadParameter", "Only RSA and EC certificate keys are supported")
    leafs = [c for c in certs if _same_key(c, key)]
    if not leafs:
        raise KvError(400, "BadParameter", "No certificate in the content matches the private key")
    leaf = leafs[0]
    chain = [c for c in certs if c is not leaf]
    return key, leaf, chain


def _secret_value(key: PrivateKey, leaf: x509.Certificate, chain: list[x509.Certificate], ctype: str) -> str:
    if ctype == PEM:
        out = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        for c in [leaf, *chain]:
            out += c.public_bytes(serialization.Encoding.PEM)
        return out.decode()
    # Key Vault re-exports the PFX with an empty password, key and whole chain
    # included, encrypted with 3DES under a SHA-1 MAC: the one profile every
    # reader knows (Go's x/crypto/pkcs12, which upstream uses, reads no other).
    # cryptography's public builder refuses an empty password; its encryption
    # object takes one and writes the standard empty (BMPString "") password.
    empty_password = _KeySerializationEncryption(
        serialization.PrivateFormat.PKCS12,
        b"",
        kdf_rounds=None,
        hmac_hash=hashes.SHA1(),
        key_cert_algorithm=pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC,
    )
    pfx = pkcs12.serialize_key_and_certificates(None, key, leaf, chain or None, empty_password)
    return base64.b64encode(pfx).decode()


def _policy_for(given: Json | None, key: PrivateKey, leaf: x509.Certificate, ctype: str, now: int) -> Json:
    given = given or {}
    key_props: Json = dict(given.get("key_props") or {})
    if isinstance(key, rsa.RSAPrivateKey):
        key_props.update(kty="RSA", key_size=key.key_size)
    else:
        key_props.update(kty="EC", crv=CURVE_NAMES.get(key.curve.name, key.curve.name))
    key_props.setdefault("exportable", True)
    key_props.setdefault("reuse_key", False)
    x509_props: Json = dict(given.get("x509_props") or {})
    x509_props.setdefault("subject", leaf.subject.rfc4514_string())
    try:
        ekus = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        x509_props.setdefault("ekus", [o.dotted_string for o in ekus])
    except x509.ExtensionNotFound:
        pass
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
        if dns:
            x509_props.setdefault("sans", {"dns_names": dns})
    except x509.ExtensionNotFound:
        pass
    days = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days
    x509_props.setdefault("validity_months", max(1, round(days / 30.44)))
    return {
        "key_props": key_props,
        "secret_props": {"contentType": ctype},
        "x509_props": x509_props,
        "lifetime_actions": given.get("lifetime_actions")
        or [{"trigger": {"lifetime_percentage": 80}, "action": {"action_type": "EmailContacts"}}],
        "issuer": given.get("issuer") or {"name": "Unknown"},
        "attributes": {"enabled": True, "created": now, "updated": now},
    }


# ---------------------------------------------------------------- Key Vault router


class KeyVaultApi:
    """Data-plane routes; callers hold no locks, this takes the store lock."""

    def __init__(self, store: VaultStore) -> None:
        self.store = store

    def handle(
        self, vault_name: str, method: str, path: str, query: dict[str, str], body: Json
    ) -> tuple[int, Json | None]:
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        if not parts or not parts[0]:
            raise KvError(404, "NotFound", "The requested resource was not found")
        with self.store.lock:
            vault = self.store.vault(vault_name)
            head = parts[0].lower()
            if head in KINDS:
                return self._live(vault, head, method, parts[1:], path, query, body)
            if head.startswith("deleted") and head[7:] in KINDS:
                return self._deleted(vault, head[7:], method, parts[1:], path, query)
        raise KvError(404, "NotFound", f"Unknown path {path}")

    # -- live objects

    def _live(
        self,
        vault: Vault,
        kind: str,
        method: str,
        rest: list[str],
        path: str,
        query: dict[str, str],
        body: Json,
    ) -> tuple[int, Json | None]:
        st = self.store
        if not rest:
            if method != "GET":
                raise KvError(405, "MethodNotAllowed", f"{method} not allowed")
            if (kind, "") in vault.denied:  # deny_list: an access policy without list
                raise KvError(
                    403,
                    "Forbidden",
                    f"The user, group or application does not have {kind} list permission on key vault "
                    f"'{vault.name}'.",
                    inner="AccessDenied",
                )
            items = [
                st.render_item(vault, kind, e, e.latest(), versioned=False)
                for e in vault.live[kind].values()
                if e.versions
            ]
            return 200, st.page(vault, path, query, items)
        name = rest[0]
        tail = rest[1] if len(rest) > 1 else ""
        if len(rest) > 2:
            raise KvError(404, "NotFound", f"Unknown path {path}")
        if method == "GET" and (kind, name.lower()) in vault.denied:
            verb = "list" if tail.lower() == "versions" else "get"
            raise KvError(
                403,
                "Forbidden",
                f"The user, group or application does not have {kind} {verb} permission on key vault "
                f"'{vault.name}'.",
                inner="AccessDenied",
            )
        if method == "GET" and tail.lower() == "versions":
            e = st.entry(vault, kind, name)
            items = [st.render_item(vault, kind, e, v, versioned=True) for v in e.versions]
            return 200, st.page(vault, path, query, items)
        if method == "GET" and kind == "certificates" and tail.lower() == "policy":
            e = st.entry(vault, kind, name)
            return 200, st.render(vault, kind, e, e.latest())["policy"]
        if method == "GET":
            e, v = st.version(vault, kind, name, tail)
            if not v.enabled and kind != "certificates":
                word = SINGULAR[kind]
                raise KvError(
                    403,
                    "Forbidden",
                    f"Operation get is not allowed on a disabled {word}.",
                    inner=f"{word.capitalize()}Disabled",
                )
            return 200, st.render(vault, kind, e, v)
        if method == "PATCH":
            return 200, self._update(vault, kind, name, tail, body)
        if method == "DELETE" and not tail:
            return 200, self._delete(vault, kind, name)
        if kind == "secrets" and method == "PUT" and not tail:
            if not isinstance(body.get("value"), str):
                raise KvError(400, "BadParameter", "Property value is required")
            e, v = st.new_version(vault, kind, name)
            v.value = body["value"]
            v.content_type = body.get("contentType")
            v.tags = body.get("tags")
            _apply_attributes(v, body.get("attributes"))
            return 200, st.render(vault, kind, e, v)
        if kind == "keys" and (
            (method == "POST" and tail.lower() == "create") or (method == "PUT" and not tail)
        ):
            if method == "POST":
                jwk, ops = _generate_key(body)
            else:
                if not isinstance(body.get("key"), dict):
                    raise KvError(400, "BadParameter", "Property key is required")
                jwk, ops = _import_jwk(body["key"], bool(body.get("Hsm")))
            e, v = st.new_version(vault, kind, name)
            v.jwk, v.key_ops, v.tags = jwk, ops, body.get("tags")
            _apply_attributes(v, body.get("attributes"))
            return 200, st.render(vault, kind, e, v)
        if kind == "certificates" and method == "POST" and tail.lower() == "import":
            return 200, self._import_certificate(vault, name, body)
        raise KvError(405, "MethodNotAllowed", f"{method} {path} is not supported by the double")

    def _update(self, vault: Vault, kind: str, name: str, version: str, body: Json) -> Json:
        st = self.store
        e, v = st.version(vault, kind, name, version)
        _apply_attributes(v, body.get("attributes"))
        if "tags" in body:
            v.tags = body["tags"]
        if kind == "secrets" and "contentType" in body:
            v.content_type = body["contentType"]
        if kind == "keys" and body.get("key_ops"):
            v.key_ops = list(body["key_ops"])
        v.updated = _now()
        if kind == "certificates":
            # The certificate's enabled state governs its backing secret and key version.
            for other in ("secrets", "keys"):
                be = vault.live[other].get(name.lower())
                bv = be.find(v.version) if be else None
                if bv is not None:
                    bv.enabled, bv.updated = v.enabled, v.updated
        return st.render(vault, kind, e, v)

    def _delete(self, vault: Vault, kind: str, name: str) -> Json:
        st = self.store
        e = st.entry(vault, kind, name)
        if kind != "certificates" and e.latest().managed:
            raise KvError(
                403,
                "Forbidden",
                f"{SINGULAR[kind].capitalize()} {name} is managed by a certificate; delete the certificate.",
            )
        kinds = KINDS if kind == "certificates" else (kind,)
        now = _now()
        for k in kinds:
            item = vault.live[k].pop(name.lower(), None)
            if item is not None:
                item.deleted_date = now
                vault.deleted[k][name.lower()] = item
        return {
            **st.deleted_fields(vault, kind, e),
            **st.render(vault, kind, e, e.latest(), with_value=False),
        }

    # -- deleted objects

    def _deleted(
        self, vault: Vault, kind: str, method: str, rest: list[str], path: str, query: dict[str, str]
    ) -> tuple[int, Json | None]:
        st = self.store
        if not rest:
            items = [
                {**st.deleted_fields(vault, kind, e), **st.render_item(vault, kind, e, e.latest(), False)}
                for e in vault.deleted[kind].values()
            ]
            return 200, st.page(vault, path, query, items)
        name = rest[0]
        e = vault.deleted[kind].get(name.lower())
        if e is None:
            word = SINGULAR[kind]
            raise KvError(404, NOT_FOUND[kind], f"Deleted {word.capitalize()} not found: {name}")
        kinds = KINDS if kind == "certificates" else (kind,)
        if method == "GET" and len(rest) == 1:
            return 200, {**st.deleted_fields(vault, kind, e), **st.render(vault, kind, e, e.latest(), False)}
        if method == "DELETE" and len(rest) == 1:
            for k in kinds:
                vault.deleted[k].pop(name.lower(), None)
            return 204, None
        if method == "POST" and len(rest) == 2 and rest[1].lower() == "recover":
            for k in kinds:
                item = vault.deleted[k].pop(name.lower(), None)
                if item is not None:
                    item.deleted_date = None
                    vault.live[k][name.lower()] = item
            return 200, st.render(vault, kind, e, e.latest(), with_value=False)
        raise KvError(405, "MethodNotAllowed", f"{method} {path} is not supported by the double")

    # -- certificate import

    def _import_certificate(self, vault: Vault, name: str, body: Json) -> Json:
        st = self.store
        value = body.get("value")
        if not isinstance(value, str) or not value:
            raise KvError(400, "BadParameter", "Property value is required")
        policy_in = body.get("policy") or {}
        ctype = str((policy_in.get("secret_props") or {}).get("contentType") or PKCS12)
        if ctype not in (PKCS12, PEM):
            raise KvError(400, "BadParameter", f"Content type {ctype} is not supported")
        key, leaf, chain = _parse_certificate(value, body.get("pwd"))
        e, v = st.new_version(vault, "certificates", name)
        v.der = leaf.public_bytes(serialization.Encoding.DER)
        v.tags = body.get("tags")
        v.nbf = int(leaf.not_valid_before_utc.timestamp())
        v.exp = int(leaf.not_valid_after_utc.timestamp())
        v.policy = _policy_for(policy_in, key, leaf, ctype, v.created)
        _apply_attributes(v, body.get("attributes"))
        # The backing secret and key share the certificate's name and version.
        _, sv = st.new_version(vault, "secrets", name, v.version)
        sv.value = _secret_value(key, leaf, chain, ctype)
        sv.content_type, sv.managed, sv.enabled, sv.nbf, sv.exp = ctype, True, v.enabled, v.nbf, v.exp
        _, kv = st.new_version(vault, "keys", name, v.version)
        kv.jwk = _public_jwk(key.public_key(), False)
        kv.key_ops = ["sign", "verify", "wrapKey", "unwrapKey", "encrypt", "decrypt"]
        if isinstance(key, ec.EllipticCurvePrivateKey):
            kv.key_ops = ["sign", "verify"]
        kv.managed, kv.enabled, kv.nbf, kv.exp = True, v.enabled, v.nbf, v.exp
        kv.exportable = bool(v.policy["key_props"].get("exportable"))
        return st.render(vault, "certificates", e, v)


# ---------------------------------------------------------------- AAD / identity


@dataclass
class AadClient:
    client_id: str
    secret: str | None = None
    cert: x509.Certificate | None = None
    # Workload identity: the service account token subjects federated with this client
    # ("system:serviceaccount:NS:NAME"); None trusts any assertion.
    federated: list[str] | None = None


def _jwt_subject(assertion: str) -> str:
    """The ``sub`` claim of a JWT, unverified (the double trusts the API server's signature)."""
    try:
        return str(json.loads(_unb64u(assertion.split(".")[1])).get("sub", ""))
    except (IndexError, ValueError, AttributeError):
        return ""


def _jws_verify(assertion: str, cert: x509.Certificate, audience: str) -> str | None:
    """None when the client assertion is signed by cert's key for audience; else why not."""
    try:
        h64, p64, s64 = assertion.split(".")
        header = json.loads(_unb64u(h64))
        payload = json.loads(_unb64u(p64))
        sig = _unb64u(s64)
    except (ValueError, TypeError):
        return "malformed assertion"
    der = cert.public_bytes(serialization.Encoding.DER)
    # MSAL keeps the base64 padding on thumbprints; compare without it.
    if "x5t#S256" in header and str(header["x5t#S256"]).rstrip("=") != _b64u(hashlib.sha256(der).digest()):
        return "x5t#S256 does not match the registered certificate"
    if "x5t" in header and str(header["x5t"]).rstrip("=") != _b64u(hashlib.sha1(der).digest()):
        return "x5t does not match the registered certificate"
    if "x5t" not in header and "x5t#S256" not in header:
        return "assertion header has no x5t or x5t#S256"
    signed = f"{h64}.{p64}".encode()
    alg = str(header.get("alg", ""))
    hash_alg: hashes.HashAlgorithm = {
        "256": hashes.SHA256(),
        "384": hashes.SHA384(),
        "512": hashes.SHA512(),
    }.get(alg[2:], hashes.SHA256())
    public = cert.public_key()
    try:
        if alg.startswith("RS") and isinstance(public, rsa.RSAPublicKey):
            public.verify(sig, signed, padding.PKCS1v15(), hash_alg)
        elif alg.startswith("PS") and isinstance(public, rsa.RSAPublicKey):
            public.verify(sig, signed, padding.PSS(padding.MGF1(hash_alg), padding.PSS.AUTO), hash_alg)
        elif alg.startswith("ES") and isinstance(public, ec.EllipticCurvePublicKey):
            half = len(sig) // 2
            r, s = int.from_bytes(sig[:half], "big"), int.from_bytes(sig[half:], "big")
            public.verify(utils.encode_dss_signature(r, s), signed, ec.ECDSA(hash_alg))
        else:
            return f"unsupported alg {alg}"
    except InvalidSignature:
        return "signature does not verify with the registered certificate"
    if payload.get("aud") != audience:
        return f"aud {payload.get('aud')!r} is not the token endpoint"
    if float(payload.get("exp", 0)) < time.time():
        return "assertion expired"
    return None


class IdentityState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clients: dict[str, AadClient] = {}
        self.denied_pods: set[tuple[str, str]] = set()
        self.pod_client_id = DEFAULT_POD_CLIENT_ID
        self.issued: dict[str, str] = {}  # token -> the identity it was issued to

    def issue(self, subject: str, audience: str, tenant: str, lifetime: int = 3600) -> str:
        now = _now()
        header = _b64u(json.dumps({"typ": "JWT", "alg": "none", "kid": "double"}).encode())
        claims = {
            "aud": audience,
            "iss": f"https://sts.localhost/{tenant}/",
            "tid": tenant,
            "appid": subject,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
        }
        # JWT-shaped so consumers that peek at claims work; the signature is filler.
        token = f"{header}.{_b64u(json.dumps(claims).encode())}.{_b64u(pysecrets.token_bytes(32))}"
        with self.lock:
            self.issued[token] = subject
        return token


# ---------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, addr: tuple[str, int], double: DoubleServer, role: str, tls: ssl.SSLContext | None
    ) -> None:
        self.double = double
        self.role = role
        self.tls = tls
        super().__init__(addr, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # see the module docstring
        return sock, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The handshake runs here, on the connection's own thread, so one slow
        # client cannot stall accept().
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients dropping connections is normal for a test peer; stay quiet.
        pass


class _DropConnection(Exception):
    pass


class _Fault(Exception):
    """An injected failure the handler acts out on the socket: a reset, a stall or a cut mid-body."""

    def __init__(self, fault: Fault, response: Response) -> None:
        super().__init__(fault.kind)
        self.fault = fault
        self.response = response


@dataclass
class Fault:
    """One injected Key Vault failure (``POST /_double/faults``), taken by the next ``count``
    data-plane requests whose path contains ``path``: ``status`` answers ``status`` (with
    ``Retry-After: retry_after`` when set); ``reset`` resets the connection (TCP RST) without
    an answer; ``stall`` sends the headers and half the body, then nothing for ``seconds``;
    ``cut`` sends the headers and half the body, then closes the connection. The body
    faults (``BODY_FAULTS``, see ``_body_fault``) send the real answer behind ``size`` bytes
    of JSON whitespace."""

    kind: str
    count: int = 1
    path: str = ""
    status: int = 503
    retry_after: str = ""
    seconds: float = 30.0
    size: int = 0


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Fault] = []

    def set(self, faults: list[Fault]) -> None:
        with self._lock:
            self._pending = [f for f in faults if f.count > 0]

    def take(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._pending:
                if fault.path in path:
                    fault.count -= 1
                    if fault.count <= 0:
                        self._pending.remove(fault)
                    return fault
        return None

    @staticmethod
    def act(fault: Fault) -> Response:
        body = {"error": {"code": "Throttled" if fault.status == 429 else "ServiceUnavailable",
                          "message": "The double is injecting a fault."}}  # fmt: skip
        extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
        response = _json(fault.status if fault.kind == "status" else 200, body, extra)
        if fault.kind == "status":
            return response
        raise _Fault(fault, response)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_CONNECT(self) -> None:
        self.close_connection = True
        target = self.server.double.tunnel_target(self.server.role, self.path)
        if target is None:
            self.send_error(403, "The double tunnels only to its AAD instance discovery")
            return
        with socket.create_connection(target, timeout=30) as upstream:
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.send_response(200, "Connection Established")
            self.end_headers()
            _pipe(self.connection, upstream)

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            status, headers, payload = self.server.double.route(self.server.role, self, raw)
        except _Fault as injected:
            self._act_out(injected)
            return
        except _DropConnection:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        data = b"" if payload is None else payload
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _act_out(self, injected: _Fault) -> None:
        self.close_connection = True
        if injected.fault.kind in BODY_FAULTS:
            _body_fault(self, injected.fault, injected.response)
            return
        if injected.fault.kind in ("stall", "cut"):
            status, headers, payload = injected.response
            data = payload or b""
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            if injected.fault.kind == "stall":
                time.sleep(injected.fault.seconds)
            return
        # SO_LINGER 0: close() sends RST, as a load balancer dropping the connection does.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# Hostile bodies, each the real answer (a valid JSON document) behind ``size`` bytes of
# JSON whitespace, so a client without bounds takes them as good answers.
BODY_FAULTS = ("gzip-bomb", "huge-body", "endless-chunked", "drip")


def _body_fault(h: _Handler, fault: Fault, answer: Response) -> None:
    """``gzip-bomb``: the padded body gzipped (1 GiB packs into about 1 MB);
    ``huge-body``: the padded body as it is; ``endless-chunked``: chunks of whitespace
    without end (a non-zero ``size`` stops it there, without the last chunk: a safety
    stop for runs against an unbounded client); ``drip``: the padded body one byte
    every ``seconds``. Each ends when the client goes away."""
    status, headers, payload = answer
    data, block = payload or b"", b" " * 65536
    h.send_response(status)
    for k, v in headers.items():
        h.send_header(k, v)

    def padding() -> Iterator[bytes]:
        for start in range(0, fault.size, len(block)):
            yield block[: fault.size - start]
        yield data

    if fault.kind == "endless-chunked":
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        sent = 0
        while not fault.size or sent < fault.size:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
            sent += len(block)
        return
    if fault.kind == "gzip-bomb":
        packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        packed = b"".join([*(packer.compress(part) for part in padding()), packer.flush()])
        h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", str(len(packed)))
        h.end_headers()
        h.wfile.write(packed)
        return
    h.send_header("Content-Length", str(fault.size + len(data)))
    h.end_headers()
    for part in padding():
        if fault.kind == "huge-body":
            h.wfile.write(part)
            continue
        for i in range(len(part)):  # drip
            h.wfile.write(part[i : i + 1])
            time.sleep(fault.seconds)


def _pipe(one: socket.socket, other: socket.socket, idle: float = 60) -> None:
    """Copy bytes both ways until either side closes or both stay idle for ``idle`` s."""
    peer = {one: other, other: one}
    with selectors.DefaultSelector() as selector:
        for sock in peer:
            selector.register(sock, selectors.EVENT_READ)
        while events := selector.select(timeout=idle):
            for key, _ in events:
                source = cast(socket.socket, key.fileobj)
                try:
                    data = source.recv(65536)
                    if not data:
                        return
                    peer[source].sendall(data)
                except OSError:
                    return


Response = tuple[int, dict[str, str], bytes | None]


def _json(status: int, body: Any, extra: dict[str, str] | None = None) -> Response:
    headers = {"Content-Type": "application/json; charset=utf-8", **(extra or {})}
    return status, headers, None if body is None else json.dumps(body).encode()


class DoubleServer:
    """The listeners and shared state; KeyVaultDouble wraps it for tests."""

    def __init__(
        self,
        state_dir: Path,
        port: int = 0,
        imds_port: int = 0,
        nmi_port: int = 0,
        tenant: str = "tenant",
        extra_hosts: tuple[str, ...] = (),
    ) -> None:
        self.state_dir = state_dir
        self.tenant = tenant
        state_dir.mkdir(parents=True, exist_ok=True)
        tls = make_tls(extra_hosts)
        self.ca_path = state_dir / "ca.pem"
        self.ca_path.write_bytes(tls.ca_pem)
        cert_file = state_dir / "server.pem"
        cert_file.write_bytes(tls.cert_pem + tls.key_pem)
        os.chmod(cert_file, 0o600)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert_file))
        self.store = VaultStore(lambda: self.port)
        self.api = KeyVaultApi(self.store)
        self.identity = IdentityState()
        self.log_lock = threading.Lock()
        self.log: list[Json] = []
        self.latency_ms = 0
        self.outage = 0
        self.faults = Faults()
        self.https = _Server(("127.0.0.1", port), self, "https", ctx)
        self.imds = _Server(("127.0.0.1", imds_port), self, "imds", None)
        self.nmi = _Server(("127.0.0.1", nmi_port), self, "nmi", None)
        self.proxy = _Server(("127.0.0.1", 0), self, "proxy", None)
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return int(self.https.server_address[1])

    def start(self) -> None:
        for srv in (self.https, self.imds, self.nmi, self.proxy):
            t = threading.Thread(target=srv.serve_forever, name=f"kv-double-{srv.role}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        for srv in (self.https, self.imds, self.nmi, self.proxy):
            srv.shutdown()
            srv.server_close()

    def ready_info(self) -> Json:
        return {
            "port": self.port,
            "imds_port": int(self.imds.server_address[1]),
            "nmi_port": int(self.nmi.server_address[1]),
            "proxy_port": int(self.proxy.server_address[1]),
            "ca": str(self.ca_path),
            "tenant": self.tenant,
            "pid": os.getpid(),
        }

    # -- routing

    def tunnel_target(self, role: str, authority: str) -> tuple[str, int] | None:
        """Where the proxy tunnels CONNECT ``authority`` (host:port): the TLS port, or nowhere."""
        host, _, port = authority.lower().rpartition(":")
        if role != "proxy" or host not in DISCOVERY_HOSTS or port != "443":
            return None
        self.record({"time": time.time(), "host": authority, "method": "CONNECT", "service": "proxy"})
        return "127.0.0.1", self.port

    def record(self, entry: Json) -> None:
        with self.log_lock:
            self.log.append(entry)

    def route(self, role: str, h: _Handler, raw: bytes) -> Response:
        split = urllib.parse.urlsplit(h.path)
        path = split.path
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(split.query, keep_blank_values=True).items()}
        host = (h.headers.get("Host") or "").lower()
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if path.startswith("/_double/"):
            return self._control(h.command, path, query, raw)
        auth = h.headers.get("Authorization") or ""
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        entry: Json = {
            "time": time.time(),
            "host": host,
            "method": h.command,
            "path": path,
            "query": query,
            "token": token,
            "user_agent": h.headers.get("User-Agent"),
        }
        if role == "imds" and path.startswith("/metadata/identity/oauth2/token"):
            entry["service"] = "imds"
            entry["metadata_header"] = h.headers.get("Metadata")
            response = self._imds(h, query)
        elif role == "nmi" and path.rstrip("/") == "/host/token":
            entry["service"] = "nmi"
            entry["podns"], entry["podname"] = h.headers.get("podns"), h.headers.get("podname")
            response = self._nmi(h, query)
        elif role == "https" and (hostname == "login.localhost" or hostname in DISCOVERY_HOSTS):
            entry["service"] = "aad"
            response = self._aad(h.command, path, query, raw, entry)
        elif role == "https" and hostname.endswith(".vault.localhost"):
            entry["service"] = "keyvault"
            entry["vault"] = hostname.split(".", 1)[0]
            if token is not None:
                with self.identity.lock:
                    entry["identity"] = self.identity.issued.get(token)
            fault = self.faults.take(path)
            if fault is not None and fault.kind not in BODY_FAULTS:
                entry["fault"] = fault.kind
                entry["status"] = fault.status if fault.kind == "status" else 0
                self.record(entry)
                return Faults.act(fault)
            response = self._keyvault(h, entry["vault"], path, query, raw, token)
            if fault is not None:  # the real answer, its body made hostile (see _body_fault)
                entry["fault"], entry["status"] = fault.kind, response[0]
                self.record(entry)
                raise _Fault(fault, response)
        else:
            entry["service"] = "unknown"
            response = _json(
                404, {"error": {"code": "NotFound", "message": f"No such host or path {host}{path}"}}
            )
        entry["status"] = response[0]
        self.record(entry)
        return response

    def _keyvault(
        self, h: _Handler, vault: str, path: str, query: dict[str, str], raw: bytes, token: str | None
    ) -> Response:
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        request_id = str(uuid.uuid4())
        headers = {"x-ms-request-id": request_id, "x-ms-keyvault-service-version": "1.9.2686.1"}
        outage = self.outage
        if outage < 0:
            raise _DropConnection()
        if outage:
            return _json(
                outage,
                {"error": {"code": "ServiceUnavailable", "message": "The double is simulating an outage."}},
                headers,
            )
        if token is None:
            challenge = (
                f'Bearer authorization="https://login.localhost:{self.port}/{self.tenant}", '
                f'resource="https://vault.localhost:{self.port}"'
            )
            return _json(
                401,
                {
                    "error": {
                        "code": "Unauthorized",
                        "message": "AKV10000: Request is missing a Bearer or PoP token.",
                    }
                },
                {**headers, "WWW-Authenticate": challenge},
            )
        return self._kv_call(vault, h.command, path, query, raw, headers)

    def _kv_call(
        self, vault: str, method: str, path: str, query: dict[str, str], raw: bytes, headers: dict[str, str]
    ) -> Response:
        try:
            api_version = query.get("api-version")
            if api_version is None:
                raise KvError(400, "BadParameter", "The 'api-version' query parameter is missing.")
            if api_version not in API_VERSIONS:
                raise KvError(
                    400, "BadParameter", f"The specified version ({api_version}) is not recognized."
                )
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError as exc:
                raise KvError(400, "BadParameter", "The request body is not valid JSON.") from exc
            if not isinstance(body, dict):
                raise KvError(400, "BadParameter", "The request body must be a JSON object.")
            status, payload = self.api.handle(vault, method, path, query, body)
            return _json(status, payload, headers)
        except KvError as err:
            return _json(err.status, err.body(), headers)

    # -- Azure AD

    def _aad(self, method: str, path: str, query: dict[str, str], raw: bytes, entry: Json) -> Response:
        parts = path.strip("/").split("/")
        base = f"https://login.localhost:{self.port}"
        if method == "GET" and parts == ["common", "discovery", "instance"]:
            return self._instance_discovery(query)
        if (
            method == "GET"
            and len(parts) >= 3
            and parts[1:]
            in (
                ["v2.0", ".well-known", "openid-configuration"],
                [".well-known", "openid-configuration"],
            )
        ):
            t = parts[0]
            return _json(
                200,
                {
                    "token_endpoint": f"{base}/{t}/oauth2/v2.0/token",
                    "token_endpoint_auth_methods_supported": [
                        "client_secret_post",
                        "private_key_jwt",
                        "client_secret_basic",
                    ],
                    "jwks_uri": f"{base}/{t}/discovery/v2.0/keys",
                    "response_modes_supported": ["query", "fragment", "form_post"],
                    "subject_types_supported": ["pairwise"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                    "scopes_supported": ["openid", "profile", "email", "offline_access"],
                    "issuer": f"{base}/{t}/v2.0",
                    "request_uri_parameter_supported": False,
                    "userinfo_endpoint": f"{base}/oidc/userinfo",
                    "authorization_endpoint": f"{base}/{t}/oauth2/v2.0/authorize",
                    "device_authorization_endpoint": f"{base}/{t}/oauth2/v2.0/devicecode",
                    "http_logout_supported": True,
                    "frontchannel_logout_supported": True,
                    "end_session_endpoint": f"{base}/{t}/oauth2/v2.0/logout",
                    "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid"],
                    "tenant_region_scope": "NA",
                    "cloud_instance_name": "login.localhost",
                    "cloud_graph_host_name": "graph.localhost",
                    "msgraph_host": "graph.localhost",
                },
            )
        if method == "POST" and len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
            form = {k: v[-1] for k, v in urllib.parse.parse_qs(raw.decode(), keep_blank_values=True).items()}
            entry["tenant"] = parts[0]
            entry["form"] = {
                k: form[k]
                for k in (
                    "client_id",
                    "grant_type",
                    "scope",
                    "client_assertion_type",
                    "client_assertion",
                    "claims",
                )
                if k in form
            }
            entry["form"]["client_secret_present"] = "client_secret" in form
            return self._aad_token(form, f"{base}/{parts[0]}/oauth2/v2.0/token", parts[0])
        return _json(404, {"error": "not_found", "error_description": f"AADSTS90000: no route {path}"})

    def _instance_discovery(self, query: dict[str, str]) -> Response:
        """AAD's answer to "may I trust this authority?": yes for the double's own host only."""
        endpoint = urllib.parse.urlsplit(query.get("authorization_endpoint", ""))
        host, tenant = endpoint.netloc.lower(), endpoint.path.strip("/").split("/")[0]
        if endpoint.scheme != "https" or host != f"login.localhost:{self.port}" or not tenant:
            return self._aad_error(
                400, "invalid_instance", 50049, "Unknown or invalid instance. (authorization_endpoint)"
            )
        return _json(
            200,
            {
                "tenant_discovery_endpoint": f"https://{host}/{tenant}/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
            },
        )

    @staticmethod
    def _aad_error(status: int, error: str, code: int, description: str) -> Response:
        return _json(
            status,
            {
                "error": error,
                "error_description": f"AADSTS{code}: {description}",
                "error_codes": [code],
                "timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
                "trace_id": str(uuid.uuid4()),
                "correlation_id": str(uuid.uuid4()),
            },
        )

    def _aad_token(self, form: dict[str, str], endpoint: str, tenant: str) -> Response:
        if form.get("grant_type") != "client_credentials":
            return self._aad_error(
                400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
            )
        client_id = form.get("client_id", "")
        scope = form.get("scope", "")
        if not client_id:
            return self._aad_error(
                400, "invalid_request", 900144, "The request body must contain 'client_id'."
            )
        if not scope:
            return self._aad_error(400, "invalid_request", 90014, "The request body must contain 'scope'.")
        with self.identity.lock:
            client = self.identity.clients.get(client_id)
        secret = form.get("client_secret")
        assertion = form.get("client_assertion")
        if (
            client is not None
            and client.secret is not None
            and secret is not None
            and secret != client.secret
        ):
            return self._aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        if client is not None and client.secret is not None and secret is None and client.cert is None:
            return self._aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        if secret is None and assertion is None:
            return self._aad_error(
                400,
                "invalid_client",
                7000218,
                "The request body must contain 'client_assertion' or 'client_secret'.",
            )
        if assertion is not None and client is not None and client.federated is not None:
            subject = _jwt_subject(assertion)
            if subject not in client.federated:
                return self._aad_error(
                    400,
                    "invalid_request",
                    70021,
                    f"No matching federated identity record found for presented assertion subject "
                    f"'{subject}'.",
                )
        if assertion is not None and client is not None and client.cert is not None:
            why = _jws_verify(assertion, client.cert, endpoint)
            if why is not None:
                return self._aad_error(
                    400, "invalid_client", 700027, f"Client assertion failed signature validation: {why}"
                )
        audience = scope.split()[0].removesuffix("/.default")
        token = self.identity.issue(client_id, audience, tenant)
        return _json(
            200, {"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600, "access_token": token}
        )

    # -- IMDS and NMI

    def _imds(self, h: _Handler, query: dict[str, str]) -> Response:
        if (h.headers.get("Metadata") or "").lower() != "true":
            return _json(
                400,
                {"error": "invalid_request", "error_description": "Required metadata header not specified"},
            )
        resource = query.get("resource")
        if not query.get("api-version"):
            return _json(
                400,
                {
                    "error": "invalid_request",
                    "error_description": "Required query variable 'api-version' is missing",
                },
            )
        if not resource:
            return _json(
                400,
                {
                    "error": "invalid_request",
                    "error_description": "Required query variable 'resource' is missing",
                },
            )
        client_id = query.get("client_id") or DEFAULT_MI_CLIENT_ID
        token = self.identity.issue(client_id, resource, self.tenant, 86399)
        now = _now()
        # Real IMDS sends the numbers as strings.
        return _json(
            200,
            {
                "access_token": token,
                "client_id": client_id,
                "expires_in": "86399",
                "expires_on": str(now + 86399),
                "ext_expires_in": "86399",
                "not_before": str(now),
                "resource": resource,
                "token_type": "Bearer",
            },
        )

    def _nmi(self, h: _Handler, query: dict[str, str]) -> Response:
        ns, name = h.headers.get("podns"), h.headers.get("podname")
        if not ns or not name:
            return (
                400,
                {"Content-Type": "text/plain; charset=utf-8"},
                b"missing podname and podns from request\n",
            )
        resource = query.get("resource")
        if not resource:
            return 400, {"Content-Type": "text/plain; charset=utf-8"}, b"parameter resource cannot be empty\n"
        with self.identity.lock:
            denied = (ns, name) in self.identity.denied_pods
            client_id = query.get("clientid") or query.get("client_id") or self.identity.pod_client_id
        if denied:
            body = f"no azure identity found for request clientID {client_id}\n".encode()
            return 403, {"Content-Type": "text/plain; charset=utf-8"}, body
        token = self.identity.issue(client_id, resource, self.tenant)
        now = _now()
        return _json(
            200,
            {
                "token": {
                    "access_token": token,
                    "refresh_token": "",
                    "expires_in": 3599,
                    "expires_on": now + 3599,
                    "not_before": now,
                    "resource": resource,
                    "token_type": "Bearer",
                },
                "clientid": client_id,
            },
        )

    # -- control API

    def _control(self, method: str, path: str, query: dict[str, str], raw: bytes) -> Response:
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return _json(400, {"error": "body is not JSON"})
        what = path[len("/_double/") :]
        if what.startswith("vault/"):
            vault, _, rest = what[len("vault/") :].partition("/")
            q = dict(query)
            q.setdefault("api-version", "7.4")
            return self._kv_call(vault, method, "/" + rest, q, raw, {})
        if method == "GET" and what == "requests":
            with self.log_lock:
                return _json(200, list(self.log))
        if method == "POST" and what == "reset-log":
            with self.log_lock:
                self.log.clear()
            return _json(200, {})
        if method == "POST" and what == "latency":
            self.latency_ms = int(body.get("ms", 0))
            return _json(200, {"ms": self.latency_ms})
        if method == "POST" and what == "faults":
            self.faults.set([Fault(**f) for f in body.get("faults", [])])
            return _json(200, {})
        if method == "POST" and what == "outage":
            self.outage = int(body.get("status", 0))
            return _json(200, {"status": self.outage})
        if method == "POST" and what == "aad-clients":
            cert = x509.load_pem_x509_certificate(body["cert_pem"].encode()) if body.get("cert_pem") else None
            client = AadClient(str(body["client_id"]), body.get("secret"), cert, body.get("federated"))
            with self.identity.lock:
                self.identity.clients[client.client_id] = client
            return _json(200, {"client_id": client.client_id})
        if method == "POST" and what == "nmi":
            with self.identity.lock:
                if body.get("deny"):
                    self.identity.denied_pods.add((body["deny"][0], body["deny"][1]))
                if body.get("allow"):
                    self.identity.denied_pods.discard((body["allow"][0], body["allow"][1]))
                if body.get("client_id"):
                    self.identity.pod_client_id = str(body["client_id"])
            return _json(200, {})
        if method == "POST" and what == "deny":
            with self.store.lock:
                denied = self.store.vault(str(body["vault"])).denied
                key = (str(body["kind"]), str(body["name"]).lower())
                (denied.add if body.get("deny", True) else denied.discard)(key)
            return _json(200, {})
        if method == "POST" and what == "next-link":
            with self.store.lock:
                self.store.next_link_base = str(body.get("base", ""))
            return _json(200, {})
        if method == "GET" and what == "info":
            return _json(200, self.ready_info())
        return _json(404, {"error": f"unknown control path {path}"})


# ---------------------------------------------------------------- test-facing API


class _ControlClient:
    """Control-API helpers shared by the in-process and subprocess doubles."""

    port: int
    imds_port: int
    nmi_port: int
    proxy_port: int
    ca_path: Path
    tenant: str

    def url_for(self, vault: str) -> str:
        return f"https://{vault}.vault.localhost:{self.port}"

    @property
    def authority(self) -> str:
        return f"https://login.localhost:{self.port}"

    @property
    def resource(self) -> str:
        return f"https://vault.localhost:{self.port}"

    @property
    def scope(self) -> str:
        return f"{self.resource}/.default"

    @property
    def imds_url(self) -> str:
        return f"http://127.0.0.1:{self.imds_port}"

    @property
    def nmi_url(self) -> str:
        return f"http://127.0.0.1:{self.nmi_port}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def env(self) -> dict[str, str]:
        """Environment for SDK clients in this or a child process."""
        return {
            "REQUESTS_CA_BUNDLE": str(self.ca_path),
            "SSL_CERT_FILE": str(self.ca_path),
            "AZURE_POD_IDENTITY_AUTHORITY_HOST": self.imds_url,
        }

    def go_env(self) -> dict[str, str]:
        """env() for a Go program (SSL_CERT_FILE) whose MSAL asks AAD instance discovery.

        Only the discovery host goes through the proxy; loopback and *.localhost
        (the vaults, login.localhost) are reached directly. Python clients must
        not get these: requests would proxy the plain-HTTP IMDS and NMI calls.
        """
        return {**self.env(), "HTTPS_PROXY": self.proxy_url, "NO_PROXY": "localhost,127.0.0.1"}

    def write_cloud_env(self, path: str | os.PathLike[str]) -> str:
        """An AzureStackCloud environment file (cloudEnvFileName) pointing at this double."""
        doc = {
            "name": "AzureStackCloud",
            "activeDirectoryEndpoint": f"{self.authority}/",
            "keyVaultDNSSuffix": f"vault.localhost:{self.port}",
        }
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
        return os.fspath(path)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"https://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raw = err.read()
            raise RuntimeError(f"{method} {path} -> {err.code}: {raw.decode(errors='replace')}") from err
        return json.loads(raw) if raw else None

    def requests(self) -> list[Json]:
        return cast(list[Json], self._call("GET", "/_double/requests"))

    def reset_log(self) -> None:
        self._call("POST", "/_double/reset-log", {})

    def set_latency(self, ms: int) -> None:
        self._call("POST", "/_double/latency", {"ms": ms})

    def set_faults(self, *faults: Fault) -> None:
        """Replace the injected faults (none: clear them); see Fault."""
        self._call("POST", "/_double/faults", {"faults": [dataclasses.asdict(f) for f in faults]})

    def set_outage(self, status: int) -> None:
        """Vault requests fail with status (0 clears, -1 drops connections)."""
        self._call("POST", "/_double/outage", {"status": status})

    def register_aad_client(
        self,
        client_id: str,
        secret: str | None = None,
        cert_pem: str | bytes | None = None,
        federated: list[str] | None = None,
    ) -> None:
        pem = cert_pem.decode() if isinstance(cert_pem, bytes) else cert_pem
        body = {"client_id": client_id, "secret": secret, "cert_pem": pem, "federated": federated}
        self._call("POST", "/_double/aad-clients", body)

    def deny_pod(self, namespace: str, name: str) -> None:
        self._call("POST", "/_double/nmi", {"deny": [namespace, name]})

    def allow_pod(self, namespace: str, name: str) -> None:
        self._call("POST", "/_double/nmi", {"allow": [namespace, name]})

    def deny_object(self, vault: str, kind: str, name: str, deny: bool = True) -> None:
        """Reads of one object (kind: secrets, keys, certificates) answer 403 AccessDenied, as
        without get permission; deny=False restores access."""
        self._call("POST", "/_double/deny", {"vault": vault, "kind": kind, "name": name, "deny": deny})

    def deny_list(self, vault: str, kind: str, deny: bool = True) -> None:
        """Listing a type (kind: secrets, keys, certificates) answers 403 AccessDenied, as an access
        policy without list permission; deny=False restores it."""
        self.deny_object(vault, kind, "", deny)

    def set_next_link_base(self, base: str = "") -> None:
        """Listings' nextLinks lead to ``base`` (scheme://host:port) instead of the vault; "" restores."""
        self._call("POST", "/_double/next-link", {"base": base})

    def set_pod_client_id(self, client_id: str) -> None:
        self._call("POST", "/_double/nmi", {"client_id": client_id})

    def vault_call(self, vault: str, method: str, path: str, body: Any = None) -> Any:
        """The data plane without auth, latency, outage or logging (for seeding)."""
        return self._call(method, f"/_double/vault/{vault}{path}", body)

    def put_secret(
        self,
        vault: str,
        name: str,
        value: str,
        content_type: str | None = None,
        enabled: bool = True,
        tags: dict[str, str] | None = None,
    ) -> Json:
        body: Json = {"value": value, "attributes": {"enabled": enabled}}
        if content_type is not None:
            body["contentType"] = content_type
        if tags is not None:
            body["tags"] = tags
        return cast(Json, self.vault_call(vault, "PUT", f"/secrets/{name}", body))

    def create_key(
        self, vault: str, name: str, kty: str = "RSA", size: int | None = None, curve: str | None = None
    ) -> Json:
        body: Json = {"kty": kty}
        if size is not None:
            body["key_size"] = size
        if curve is not None:
            body["crv"] = curve
        return cast(Json, self.vault_call(vault, "POST", f"/keys/{name}/create", body))

    def import_certificate(
        self, vault: str, name: str, data: bytes, content_type: str = PKCS12, password: str | None = None
    ) -> Json:
        """data: PFX bytes or PEM bytes (key + chain)."""
        body: Json = {
            "value": base64.b64encode(data).decode(),
            "policy": {"secret_props": {"contentType": content_type}},
        }
        if password is not None:
            body["pwd"] = password
        return cast(Json, self.vault_call(vault, "POST", f"/certificates/{name}/import", body))

    def update(self, vault: str, kind: str, name: str, version: str, body: Json) -> Json:
        return cast(Json, self.vault_call(vault, "PATCH", f"/{kind}/{name}/{version}", body))


class KeyVaultDouble(_ControlClient):
    """The double running in this process (server threads)."""

    def __init__(
        self,
        state_dir: str | Path | None = None,
        port: int = 0,
        imds_port: int = 0,
        nmi_port: int = 0,
        tenant: str = "tenant",
    ) -> None:
        self._tmp = None if state_dir else tempfile.TemporaryDirectory(prefix="kv-double-")
        self.state_dir = Path(state_dir) if state_dir else Path(cast(Any, self._tmp).name)
        self._ports = (port, imds_port, nmi_port)
        self.tenant = tenant
        self._server: DoubleServer | None = None

    def start(self) -> KeyVaultDouble:
        port, imds_port, nmi_port = self._ports
        self._server = DoubleServer(self.state_dir, port, imds_port, nmi_port, self.tenant)
        self._server.start()
        info = self._server.ready_info()
        self.port, self.imds_port, self.nmi_port = info["port"], info["imds_port"], info["nmi_port"]
        self.proxy_port = info["proxy_port"]
        self.ca_path = self._server.ca_path
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> KeyVaultDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def spawn(
        state_dir: str | Path,
        port: int = 0,
        imds_port: int = 0,
        nmi_port: int = 0,
        tenant: str = "tenant",
        timeout: float = 30.0,
    ) -> KeyVaultDoubleProcess:
        return KeyVaultDoubleProcess(Path(state_dir), port, imds_port, nmi_port, tenant, timeout)


class KeyVaultDoubleProcess(_ControlClient):
    """The double as a child process (CLI), for tests that need it out of process."""

    def __init__(
        self, state_dir: Path, port: int, imds_port: int, nmi_port: int, tenant: str, timeout: float
    ) -> None:
        self.state_dir = state_dir
        ready = state_dir / "ready.json"
        ready.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--state-dir", str(state_dir),
            "--port", str(port),
            "--imds-port", str(imds_port),
            "--nmi-port", str(nmi_port),
            "--tenant", tenant,
        ]  # fmt: skip
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"keyvault double exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.process.kill()
                raise TimeoutError("keyvault double did not become ready")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        self.port, self.imds_port, self.nmi_port = info["port"], info["imds_port"], info["nmi_port"]
        self.proxy_port = info["proxy_port"]
        self.ca_path = Path(info["ca"])
        self.tenant = info["tenant"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--imds-port", type=int, default=0)
    parser.add_argument("--nmi-port", type=int, default=0)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--tenant", default="tenant")
    args = parser.parse_args(argv)
    state = Path(args.state_dir)
    server = DoubleServer(state, args.port, args.imds_port, args.nmi_port, args.tenant)
    server.start()
    tmp = state / "ready.json.tmp"
    tmp.write_text(json.dumps(server.ready_info()))
    tmp.replace(state / "ready.json")  # atomic: readers never see a partial file
    stop = threading.Event()
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
