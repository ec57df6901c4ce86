"""Key Vault's data plane: the REST routes on the live and deleted secrets, keys and
certificates of one vault, behind the api-version and body checks."""

from __future__ import annotations

import json
import urllib.parse

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.peers.keyvault_double.base import PEM, PKCS12, Json, KvError, Response, json_response, unix_now
from tests.peers.keyvault_double.crypto import (
    generate_key,
    import_jwk,
    parse_certificate,
    policy_for,
    public_jwk,
    secret_value,
)
from tests.peers.keyvault_double.store import KINDS, NOT_FOUND, SINGULAR, Vault, VaultStore, apply_attributes

API_VERSIONS = frozenset(
    {"7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2016-10-01", "2025-07-01", "2026-04-01"}
)


class KeyVaultApi:
    """Data-plane routes; callers hold no locks, this takes the store lock."""

    def __init__(self, store: VaultStore) -> None:
        self.store = store

    def call(
        self, vault: str, method: str, path: str, query: dict[str, str], raw: bytes, headers: dict[str, str]
    ) -> Response:
        """One data-plane request, answered as Key Vault would (errors included)."""
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
            status, payload = self.handle(vault, method, path, query, body)
            return json_response(status, payload, headers)
        except KvError as err:
            return json_response(err.status, err.body(), headers)

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
            apply_attributes(v, body.get("attributes"))
            return 200, st.render(vault, kind, e, v)
        if kind == "keys" and (
            (method == "POST" and tail.lower() == "create") or (method == "PUT" and not tail)
        ):
            if method == "POST":
                jwk, ops = generate_key(body)
            else:
                if not isinstance(body.get("key"), dict):
                    raise KvError(400, "BadParameter", "Property key is required")
                jwk, ops = import_jwk(body["key"], bool(body.get("Hsm")))
            e, v = st.new_version(vault, kind, name)
            v.jwk, v.key_ops, v.tags = jwk, ops, body.get("tags")
            apply_attributes(v, body.get("attributes"))
            return 200, st.render(vault, kind, e, v)
        if kind == "certificates" and method == "POST" and tail.lower() == "import":
            return 200, self._import_certificate(vault, name, body)
        raise KvError(405, "MethodNotAllowed", f"{method} {path} is not supported by the double")

    def _update(self, vault: Vault, kind: str, name: str, version: str, body: Json) -> Json:
        st = self.store
        e, v = st.version(vault, kind, name, version)
        apply_attributes(v, body.get("attributes"))
        if "tags" in body:
            v.tags = body["tags"]
        if kind == "secrets" and "contentType" in body:
            v.content_type = body["contentType"]
        if kind == "keys" and body.get("key_ops"):
            v.key_ops = list(body["key_ops"])
        v.updated = unix_now()
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
        now = unix_now()
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
        key, leaf, chain = parse_certificate(value, body.get("pwd"))
        e, v = st.new_version(vault, "certificates", name)
        v.der = leaf.public_bytes(serialization.Encoding.DER)
        v.tags = body.get("tags")
        v.nbf = int(leaf.not_valid_before_utc.timestamp())
        v.exp = int(leaf.not_valid_after_utc.timestamp())
        v.policy = policy_for(policy_in, key, leaf, ctype, v.created)
        apply_attributes(v, body.get("attributes"))
        # The backing secret and key share the certificate's name and version.
        _, sv = st.new_version(vault, "secrets", name, v.version)
        sv.value = secret_value(key, leaf, chain, ctype)
        sv.content_type, sv.managed, sv.enabled, sv.nbf, sv.exp = ctype, True, v.enabled, v.nbf, v.exp
        _, kv = st.new_version(vault, "keys", name, v.version)
        kv.jwk = public_jwk(key.public_key(), False)
        kv.key_ops = ["sign", "verify", "wrapKey", "unwrapKey", "encrypt", "decrypt"]
        if isinstance(key, ec.EllipticCurvePrivateKey):
            kv.key_ops = ["sign", "verify"]
        kv.managed, kv.enabled, kv.nbf, kv.exp = True, v.enabled, v.nbf, v.exp
        kv.exportable = bool(v.policy["key_props"].get("exportable"))
        return st.render(vault, "certificates", e, v)
