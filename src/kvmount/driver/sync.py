"""Kubernetes Secrets made from a mount's files (a SecretProviderClass's ``secretObjects``).

After the publisher has written a volume's files, ``SecretSync.sync`` creates
or updates one Secret per ``secretObjects`` entry, owned by the volume's
SecretProviderClassPodStatus so that the garbage collector removes the Secret
with the last pod status that uses it.

Differences from upstream, on purpose:
- every entry is checked before any Secret is written, and errors name the
  class, the entry and the field;
- a Secret the driver did not create (no managed label) is never modified
  (upstream overwrites it, kubernetes-sigs/secrets-store-csi-driver#499);
- ``kubernetes.io/tls`` keys ``tls.key`` / ``tls.crt`` are split out of PEM
  and of password-less PKCS#12 files alike;
- writes are resourceVersion-guarded and skipped when nothing changed.

No message ever carries a file's content.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from kvmount.driver.kube import REQUEST_TIMEOUT
from kvmount.keyvault.content import order_chain, pem_certs

MANAGED_LABEL = "secrets-store.csi.k8s.io/managed"
OWNER_API_VERSION = "secrets-store.csi.x-k8s.io/v1"
OWNER_KIND = "SecretProviderClassPodStatus"
TLS = "kubernetes.io/tls"
TLS_KEY = "tls.key"
TLS_CERT = "tls.crt"
# Keys the API server insists on for its built-in types; checked here so that
# one bad entry fails before any Secret is written.
_REQUIRED_KEYS = {
    TLS: (TLS_CERT, TLS_KEY),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
}
MAX_SECRET_BYTES = 1024 * 1024  # the API server's limit on a Secret's data
# A few tries when another writer (a pod on another node) updates the same Secret.
ATTEMPTS = 5

_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_NAME_PART = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
_PEM_KEYS = {b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY"}


class SyncError(Exception):
    """A Secret that cannot be synced; ``reason`` is a closed-set metric label.

    Reasons: InvalidSecretObject, ObjectNotMounted, InvalidCertificate,
    SecretNotManaged, SecretTypeMismatch, APIServerForbidden, APIServerUnavailable.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Owner:
    """The SecretProviderClassPodStatus that owns the synced Secrets."""

    name: str
    uid: str

    def reference(self) -> dict[str, str]:
        return {"apiVersion": OWNER_API_VERSION, "kind": OWNER_KIND, "name": self.name, "uid": self.uid}


def _invalid(message: str) -> SyncError:
    return SyncError("InvalidSecretObject", message)


def _short(value: object) -> str:
    """A user-written name for a message, cut short (never a file's content)."""
    text = str(value)
    return repr(text if len(text) <= 64 else text[:61] + "...")


def _is_subdomain(name: str) -> bool:
    return len(name) <= 253 and _SUBDOMAIN.fullmatch(name) is not None


# ------------------------------------------------------------------ validation


def secret_data(
    secret_object: Mapping[str, Any], files: Mapping[str, bytes], where: str
) -> tuple[str, str, dict[str, bytes]]:
    """(name, type, data) of one ``secretObjects`` entry, checked; ``where`` prefixes messages.

    For ``kubernetes.io/tls``, ``tls.key`` gets the private key alone (PKCS#8
    PEM) and ``tls.crt`` the certificate chain alone (PEM, leaf first), from a
    PEM file or a password-less PKCS#12 file (DER or base64). Other keys and
    types get the file's bytes unchanged. Raises SyncError.
    """
    if not isinstance(secret_object, Mapping):
        raise _invalid(f"{where} must be an object with secretName, type and data")
    name = secret_object.get("secretName")
    if not isinstance(name, str) or not name:
        raise _invalid(f"{where}.secretName is missing: name the Secret to create")
    if not _is_subdomain(name):
        raise _invalid(
            f"{where}.secretName {_short(name)} is not a valid Secret name: use at most 253 lower-case "
            "letters, digits, '-' and '.', starting and ending with a letter or digit"
        )
    secret_type = secret_object.get("type") or "Opaque"
    if not isinstance(secret_type, str):
        raise _invalid(f"{where}.type must be a string such as Opaque or kubernetes.io/tls")
    entries = secret_object.get("data")
    if not isinstance(entries, list) or not entries:
        raise _invalid(f"{where}.data must be a non-empty list of {{objectName, key}}")

    data: dict[str, bytes] = {}
    for j, entry in enumerate(entries):
        at = f"{where}.data[{j}]"
        if not isinstance(entry, Mapping):
            raise _invalid(f"{at} must be an object with objectName and key")
        key, object_name = entry.get("key"), entry.get("objectName")
        if not isinstance(key, str) or not key:
            raise _invalid(f"{at}.key is missing: name the Secret's data key")
        if len(key) > 253 or _SECRET_KEY.fullmatch(key) is None or key in (".", ".."):
            raise _invalid(
                f"{at}.key {_short(key)} is not a valid Secret key: use at most 253 letters, "
                "digits, '-', '_' and '.' (not '.' or '..')"
            )
        if key in data:
            raise _invalid(f"{at}.key {_short(key)} appears twice in {where}.data: keys must be unique")
        if not isinstance(object_name, str) or not object_name:
            raise _invalid(f"{at}.objectName is missing: name a mounted file (objectAlias or objectName)")
        if object_name not in files:
            mounted = ", ".join(sorted(files)[:20]) or "none"
            raise SyncError(
                "ObjectNotMounted",
                f"{at}.objectName {_short(object_name)} is not a file of this mount (files: {mounted}); "
                "use the object's objectAlias, or its objectName when it has no alias",
            )
        content = files[object_name]
        if secret_type == TLS and key == TLS_KEY:
            content = _tls_key(content, f"{at} (file {object_name})")
        elif secret_type == TLS and key == TLS_CERT:
            content = _tls_chain(content, f"{at} (file {object_name})")
        data[key] = content

    missing = [k for k in _REQUIRED_KEYS.get(secret_type, ()) if k not in data]
    if missing:
        raise _invalid(f"{where}.data lacks key(s) {', '.join(missing)}, which type {secret_type} requires")
    if secret_type == TLS:
        _check_pair(data[TLS_KEY], data[TLS_CERT], where)
    size = sum(len(v) for v in data.values())
    if size > MAX_SECRET_BYTES:
        raise _invalid(f"{where}.data totals {size} bytes; a Secret holds at most 1 MiB: split it")
    return name, secret_type, data


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _invalid(f"{where} must be a map of strings; quote the values in YAML")
    return dict(value)


def _is_qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if "/" in key and not _is_subdomain(prefix):
        return False
    return len(name) <= 63 and _NAME_PART.fullmatch(name) is not None


def _metadata(secret_object: Mapping[str, Any], where: str) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) of an entry, checked as the API server would."""
    labels = _string_map(secret_object.get("labels"), f"{where}.labels")
    annotations = _string_map(secret_object.get("annotations"), f"{where}.annotations")
    for key, value in labels.items():
        if not _is_qualified_name(key):
            raise _invalid(f"{where}.labels key {_short(key)} is not a valid label name")
        if value and (len(value) > 63 or _NAME_PART.fullmatch(value) is None):
            raise _invalid(
                f"{where}.labels[{key}] is not a valid label value: at most 63 letters, digits, "
                "'-', '_' and '.', starting and ending with a letter or digit"
            )
    if labels.get(MANAGED_LABEL, "true") != "true":
        raise _invalid(f'{where}.labels may not set {MANAGED_LABEL}: the driver sets it to "true"')
    for key in annotations:
        if not _is_qualified_name(key):
            raise _invalid(f"{where}.annotations key {_short(key)} is not a valid annotation name")
    return {**labels, MANAGED_LABEL: "true"}, annotations


# ------------------------------------------------------------------ TLS


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
            key, cert, extra = pkcs12.load_key_and_certificates(der, None)
        except (ValueError, TypeError):
            continue
        return key, ([cert] if cert is not None else []) + list(extra)
    raise SyncError(
        "InvalidCertificate",
        f"{where}: neither PEM nor a password-less PKCS#12 (DER or base64); mount the "
        "certificate's secret (objectType: secret), not its public certificate alone",
    )


def _pem_parts(content: bytes, where: str) -> tuple[PrivateKeyTypes | None, list[x509.Certificate]]:
    keys: list[PrivateKeyTypes] = []
    certs: list[x509.Certificate] = []
    for block in _PEM_BLOCK.finditer(content):
        label = block.group(1)
        if label == b"ENCRYPTED PRIVATE KEY":
            raise SyncError(
                "InvalidCertificate", f"{where}: the private key is encrypted; mount it unencrypted"
            )
        try:
            if label == b"CERTIFICATE":
                certs.append(x509.load_pem_x509_certificate(block.group(0)))
            elif label in _PEM_KEYS:
                keys.append(serialization.load_pem_private_key(block.group(0), None))
        except (ValueError, TypeError):
            raise SyncError(
                "InvalidCertificate", f"{where}: a PEM {label.decode()} block is corrupt"
            ) from None
    if len(keys) > 1:
        raise SyncError(
            "InvalidCertificate", f"{where}: holds {len(keys)} private keys; a TLS Secret takes one"
        )
    return (keys[0] if keys else None), certs


def _tls_key(content: bytes, where: str) -> bytes:
    key, _ = _tls_parts(content, where)
    if key is None:
        raise SyncError(
            "InvalidCertificate",
            f"{where}: no private key in the file; mount the certificate's secret (objectType: secret)",
        )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _tls_chain(content: bytes, where: str) -> bytes:
    key, certs = _tls_parts(content, where)
    if not certs:
        raise SyncError("InvalidCertificate", f"{where}: no certificate in the file")
    chain = order_chain(certs)
    if key is not None:
        # Whatever the file's order, the certificate of the file's own key is the leaf.
        mine = _spki(key.public_key())
        leaf = next((c for c in chain if _spki(c.public_key()) == mine), None)
        if leaf is not None:
            chain = [leaf, *(c for c in chain if c is not leaf)]
    return pem_certs(chain)


def _check_pair(key_pem: bytes, chain_pem: bytes, where: str) -> None:
    # Both were produced above, so they parse; a mismatch would only fail later, in a TLS handshake.
    key = serialization.load_pem_private_key(key_pem, None)
    leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        raise SyncError(
            "InvalidCertificate",
            f"{where}: the private key for {TLS_KEY} does not belong to the first certificate of "
            f"{TLS_CERT} ({leaf.subject.rfc4514_string()}); map both keys to the same certificate object",
        )


# ------------------------------------------------------------------ API server


@dataclass(frozen=True)
class _Desired:
    where: str
    name: str
    type: str
    data: dict[str, str]  # base64, as the API carries it
    labels: dict[str, str]
    annotations: dict[str, str]


def _api_error(err: Any, verb: str, what: str) -> SyncError:
    if err.status in (401, 403):
        return SyncError(
            "APIServerForbidden",
            f"{what}: the driver may not {verb} it (HTTP {err.status}); check the driver's RBAC "
            "for secrets (get, create, update)",
        )
    if err.status == 422:
        # The causes name fields; their messages are left out so that no value is ever echoed.
        try:
            causes = json.loads(err.body)["details"]["causes"]
            fields = ", ".join(f"{c.get('field', '?')} ({c.get('reason', '?')})" for c in causes)
        except (TypeError, ValueError, KeyError):
            fields = "see the API server's log"
        return _invalid(f"{what}: the API server refused to {verb} it: {fields}")
    return SyncError("APIServerUnavailable", f"{what}: {verb} failed with HTTP {err.status} {err.reason}")


class SecretSync:
    """Creates and updates the Secrets of ``secretObjects`` through the API server."""

    def __init__(self, core: Callable[[], Any]) -> None:
        self._core = core

    def sync(
        self,
        namespace: str,
        secret_objects: Sequence[Mapping[str, Any]],
        files: Mapping[str, bytes],
        owner: Owner,
        class_name: str,
    ) -> list[str]:
        """Create or update every entry's Secret; returns the names synced. Raises SyncError.

        All entries are checked first. A Secret that exists without the managed
        label is left alone; the others are still synced, then SyncError
        (SecretNotManaged) names the refused ones.
        """
        desired: list[_Desired] = []
        seen: dict[str, int] = {}
        for i, secret_object in enumerate(secret_objects):
            where = f"SecretProviderClass {namespace}/{class_name} secretObjects[{i}]"
            name, secret_type, data = secret_data(secret_object, files, where)
            labels, annotations = _metadata(secret_object, where)
            if name in seen:
                raise _invalid(
                    f"{where}.secretName {_short(name)} is also secretObjects[{seen[name]}]'s: "
                    "merge the two entries"
                )
            seen[name] = i
            encoded = {k: base64.b64encode(v).decode("ascii") for k, v in data.items()}
            desired.append(_Desired(where, name, secret_type, encoded, labels, annotations))
        if not desired:
            return []

        api = self._core()
        synced: list[str] = []
        refused: list[SyncError] = []
        for want in desired:
            try:
                self._sync_one(api, namespace, want, owner)
            except SyncError as err:
                # Only problems of this one Secret; anything else would fail the others too.
                if err.reason not in ("SecretNotManaged", "SecretTypeMismatch", "InvalidSecretObject"):
                    raise
                refused.append(err)
            else:
                synced.append(want.name)
        if refused:
            raise SyncError(refused[0].reason, "; ".join(str(e) for e in refused))
        return synced

    def _call(self, verb: str, what: str, fn: Any, *args: Any, passing: tuple[int, ...] = ()) -> Any:
        """``fn(*args)`` with API errors as SyncError, except statuses in ``passing``."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as err:
            if err.status in passing:
                raise
            raise _api_error(err, verb, what) from None
        except (HTTPError, OSError) as err:
            raise SyncError(
                "APIServerUnavailable", f"{what}: API server unreachable ({type(err).__name__}); will retry"
            ) from None

    def _sync_one(self, api: Any, namespace: str, want: _Desired, owner: Owner) -> bool:
        """Create or update one Secret; True if it was written."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        what = f"Secret {namespace}/{want.name} ({want.where})"
        for _ in range(ATTEMPTS):
            try:
                current = self._call(
                    "get", what, api.read_namespaced_secret, want.name, namespace, passing=(404,)
                )
            except ApiException:
                current = None
            if current is None:
                body = {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        "name": want.name,
                        "namespace": namespace,
                        "labels": want.labels,
                        "annotations": want.annotations,
                        "ownerReferences": [owner.reference()],
                    },
                    "type": want.type,
                    "data": want.data,
                }
                try:
                    self._call("create", what, api.create_namespaced_secret, namespace, body, passing=(409,))
                    return True
                except ApiException:
                    continue  # created meanwhile by another writer: update it instead
            meta = current.metadata
            labels = dict(meta.labels or {})
            if labels.get(MANAGED_LABEL) != "true":
                raise SyncError(
                    "SecretNotManaged",
                    f"{what} exists and was not created by the driver (no label {MANAGED_LABEL}=true), "
                    "so it is left untouched: choose another secretName, or delete the Secret "
                    "(or label it) to let the driver manage it",
                )
            if (current.type or "Opaque") != want.type:
                raise SyncError(
                    "SecretTypeMismatch",
                    f"{what} has type {current.type} but the entry asks for {want.type}; a Secret's type "
                    "cannot change: delete the Secret and the driver recreates it on the next mount",
                )
            annotations = dict(meta.annotations or {})
            owners = list(meta.owner_references or [])
            new_labels = {**labels, **want.labels}
            new_annotations = {**annotations, **want.annotations}
            has_owner = any(ref.uid == owner.uid for ref in owners)
            unchanged = (current.data or {}) == want.data and (labels, annotations) == (
                new_labels,
                new_annotations,
            )
            if unchanged and has_owner:
                return False
            current.data = want.data
            meta.labels, meta.annotations = new_labels, new_annotations
            if not has_owner:
                # Added, never replaced: the Secret lives as long as any pod status using it.
                owners.append(
                    client.V1OwnerReference(
                        api_version=OWNER_API_VERSION, kind=OWNER_KIND, name=owner.name, uid=owner.uid
                    )
                )
                meta.owner_references = owners
            try:
                # resourceVersion from the read guards against overwriting a concurrent change.
                self._call(
                    "update",
                    what,
                    api.replace_namespaced_secret,
                    want.name,
                    namespace,
                    current,
                    passing=(404, 409),
                )
                return True
            except ApiException:
                continue  # changed or deleted meanwhile: read again
        raise SyncError(
            "APIServerUnavailable", f"{what}: kept conflicting with concurrent updates; will retry"
        )
