"""The vaults' objects (secrets, keys, certificates with their versions, deleted ones) and how
Key Vault renders them: bundles, list items, pages with Key Vault's opaque nextLinks."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.peers.keyvault_double.base import Json, KvError, b64u, unb64u, unix_now

RECOVERY_LEVEL = "Recoverable+Purgeable"
RECOVERABLE_DAYS = 90
PAGE_MAX = 25  # Key Vault's own cap on maxresults
NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")

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


def apply_attributes(v: Version, attrs: Json | None) -> None:
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
            "x5t": b64u(hashlib.sha1(der).digest()),
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
                "x5t": b64u(hashlib.sha1(v.der or b"").digest()),
                "attributes": _attributes(v, kind),
                "tags": v.tags or {},
            }
        if v.managed:
            out["managed"] = True
        return out

    def deleted_fields(self, vault: Vault, kind: str, e: Entry) -> Json:
        deleted = e.deleted_date or unix_now()
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
        now = unix_now()
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
                start = int(json.loads(unb64u(token))["NextMarker"])
            except (ValueError, KeyError, TypeError) as exc:
                raise KvError(400, "BadParameter", "Invalid $skiptoken") from exc
        end = start + size
        page: Json = {"value": items[start:end], "nextLink": None}
        if end < len(items):
            # Real nextLinks carry an opaque base64 marker plus the original maxresults.
            marker = b64u(json.dumps({"NextMarker": str(end)}).encode())
            params = {"api-version": query.get("api-version", "7.4"), "$skiptoken": marker}
            if "maxresults" in query:
                params["maxresults"] = str(size)
            page["nextLink"] = f"{self.next_link_base or vault.base}{path}?{urllib.parse.urlencode(params)}"
        return page
