"""The KMS configuration as Ceph-CSI reads it, and the credentials Secret.

The configuration is Ceph-CSI's: a JSON object keyed by KMS id, either the
``config.json`` of the ceph-csi-encryption-kms-config ConfigMap (entries are
objects) or the ``csi-kms-connection-details`` ConfigMap (entries are JSON
strings). Either may be given as the ConfigMap manifest or as its data alone.
An entry names its provider with ``encryptionKMSType`` or, when that is
absent, ``KMS_PROVIDER``; this store serves ``azure-kv``.

Keys of an azure-kv entry:

``AZURE_VAULT_URL``, ``AZURE_CLIENT_ID``, ``AZURE_TENANT_ID``
    Required, as in Ceph-CSI.
``AZURE_CERT_SECRET_NAME``
    The Secret holding ``CLIENT_CERT``; default ``ceph-csi-azure-credentials``.
``AZURE_AUTHORITY_HOST`` (kvmount)
    The Entra ID authority, for sovereign clouds and private endpoints. Else
    the ``AZURE_AUTHORITY_HOST`` environment variable, else the public cloud.
``AZURE_AUTH_METHOD`` (kvmount)
    ``client-certificate`` (default, Ceph-CSI's only method) or
    ``workload-identity``: the projected service account token of Azure AD
    workload identity is exchanged for a token of ``AZURE_CLIENT_ID``.
``AZURE_FEDERATED_TOKEN_FILE`` (kvmount)
    The token file for workload identity; else the variable of that name,
    which the workload identity webhook sets in the pod.

Other keys are ignored, as Ceph-CSI ignores them.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
import urllib.parse
from dataclasses import dataclass
from enum import Enum
from typing import Any

import yaml

from kvmount.base import yamlread
from kvmount.keyvault import InvalidSpec

KMS_TYPE = "azure-kv"
DEFAULT_CERT_SECRET_NAME = "ceph-csi-azure-credentials"
CLIENT_CERT = "CLIENT_CERT"
AUTHORITY_ENV = "AZURE_AUTHORITY_HOST"
FEDERATED_TOKEN_ENV = "AZURE_FEDERATED_TOKEN_FILE"
PUBLIC_AUTHORITY = "https://login.microsoftonline.com"


class AuthMethod(Enum):
    CLIENT_CERTIFICATE = "client-certificate"
    WORKLOAD_IDENTITY = "workload-identity"


@dataclass(frozen=True)
class KMSConfig:
    kms_id: str
    vault_url: str
    client_id: str
    tenant_id: str
    cert_secret_name: str
    authority: str  # https://host, no trailing slash
    auth_method: AuthMethod
    federated_token_file: str  # workload identity only


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as err:
        raise InvalidSpec(what, f"cannot read {path!r}: {err.strerror}") from None


def _parse_document(raw: bytes, path: str) -> Any:
    # YAML is a superset of JSON, so one parser takes config.json and manifests alike.
    try:
        return yamlread.read(lambda: yaml.safe_load(raw.decode("utf-8")))
    except yamlread.Unreadable as err:
        raise InvalidSpec("--config", f"{path!r} is neither JSON nor YAML ({err})") from None


def _sections(doc: Any, path: str) -> dict[str, Any]:
    if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
        doc = doc.get("data") or {}
    if not isinstance(doc, dict):
        raise InvalidSpec("--config", f"{path!r} must hold an object of KMS entries keyed by KMS id")
    return {str(k): v for k, v in doc.items()}


def _entry(sections: dict[str, Any], kms_id: str, path: str) -> dict[str, Any]:
    if kms_id not in sections:
        have = ", ".join(repr(k) for k in sorted(sections)) or "none"
        raise InvalidSpec("--kms-id", f"{kms_id!r} is not in {path!r} (have {have})")
    entry = sections[kms_id]
    if isinstance(entry, str):
        # csi-kms-connection-details holds each entry as a JSON string.
        try:
            entry = json.loads(entry)
        except (ValueError, RecursionError):
            raise InvalidSpec(f"KMS {kms_id!r}", "its entry is not valid JSON") from None
    if not isinstance(entry, dict):
        raise InvalidSpec(f"KMS {kms_id!r}", "its entry must be a JSON object")
    return entry


def _string(entry: dict[str, Any], kms_id: str, key: str, default: str | None = None) -> str:
    value = entry.get(key)
    if value is None or value == "":
        if default is None:
            raise InvalidSpec(f"KMS {kms_id!r}: {key}", "is required")
        return default
    if not isinstance(value, str):
        raise InvalidSpec(f"KMS {kms_id!r}: {key}", f"must be a string, not {type(value).__name__}")
    return value


def _https(value: str, field: str) -> urllib.parse.SplitResult:
    try:
        url = urllib.parse.urlsplit(value)
        host = url.hostname
    except ValueError:  # "https://[" and other URLs urllib cannot split
        host = None
    if not host or url.scheme != "https":
        raise InvalidSpec(field, f"{value!r} must be an https URL, https://<host>")
    try:
        url.port  # noqa: B018 (urllib checks the port only when it is read)
    except ValueError:
        raise InvalidSpec(field, f"{value!r} has no valid port: give 1 to 65535, or none for 443") from None
    return url


def _https_url(value: str, field: str) -> str:
    # Hosts without a scheme are accepted, as azure-identity accepts them.
    return f"https://{_https(value if '://' in value else f'https://{value}', field).netloc}"


def parse_entry(kms_id: str, entry: dict[str, Any]) -> KMSConfig:
    """An azure-kv entry, checked; raises InvalidSpec naming the KMS id and key."""
    type_key = "encryptionKMSType" if "encryptionKMSType" in entry else "KMS_PROVIDER"
    provider = entry.get(type_key)
    if provider is None:
        raise InvalidSpec(f"KMS {kms_id!r}", "names no provider (encryptionKMSType or KMS_PROVIDER)")
    if provider != KMS_TYPE:
        raise InvalidSpec(f"KMS {kms_id!r}: {type_key}", f"is {provider!r}; this store serves {KMS_TYPE!r}")
    vault_url = _string(entry, kms_id, "AZURE_VAULT_URL")
    method_name = _string(entry, kms_id, "AZURE_AUTH_METHOD", AuthMethod.CLIENT_CERTIFICATE.value)
    try:
        method = AuthMethod(method_name)
    except ValueError:
        names = ", ".join(m.value for m in AuthMethod)
        raise InvalidSpec(
            f"KMS {kms_id!r}: AZURE_AUTH_METHOD", f"is {method_name!r}; one of {names}"
        ) from None
    authority = _string(
        entry, kms_id, "AZURE_AUTHORITY_HOST", os.environ.get(AUTHORITY_ENV) or PUBLIC_AUTHORITY
    )
    token_file = ""
    if method is AuthMethod.WORKLOAD_IDENTITY:
        token_file = _string(
            entry, kms_id, "AZURE_FEDERATED_TOKEN_FILE", os.environ.get(FEDERATED_TOKEN_ENV, "")
        )
        if not token_file:
            raise InvalidSpec(
                f"KMS {kms_id!r}: AZURE_FEDERATED_TOKEN_FILE",
                f"is required for workload-identity (or set {FEDERATED_TOKEN_ENV})",
            )
    _https(vault_url, f"KMS {kms_id!r}: AZURE_VAULT_URL")
    return KMSConfig(
        kms_id=kms_id,
        vault_url=vault_url,
        client_id=_string(entry, kms_id, "AZURE_CLIENT_ID"),
        tenant_id=_string(entry, kms_id, "AZURE_TENANT_ID"),
        cert_secret_name=_string(entry, kms_id, "AZURE_CERT_SECRET_NAME", DEFAULT_CERT_SECRET_NAME),
        authority=_https_url(authority, f"KMS {kms_id!r}: AZURE_AUTHORITY_HOST"),
        auth_method=method,
        federated_token_file=token_file,
    )


def load_config(path: str, kms_id: str) -> KMSConfig:
    """The entry for kms_id of the configuration file at path."""
    sections = _sections(_parse_document(_read(path, "--config"), path), path)
    return parse_entry(kms_id, _entry(sections, kms_id, path))


def _secret_manifest(raw: bytes) -> dict[str, Any] | None:
    try:
        doc = yamlread.read(lambda: yaml.safe_load(raw.decode("utf-8")))
    except yamlread.Unreadable:
        return None
    return doc if isinstance(doc, dict) and doc.get("kind") == "Secret" else None


def _manifest_data(doc: dict[str, Any], path: str, secret_name: str) -> dict[str, bytes]:
    metadata, encoded, plain = (doc.get(k) or {} for k in ("metadata", "data", "stringData"))
    if not all(isinstance(part, dict) for part in (metadata, encoded, plain)):
        raise InvalidSpec("--credentials", f"{path!r}: metadata, data and stringData must be mappings")
    name = metadata.get("name")
    if name is not None and name != secret_name:
        raise InvalidSpec(
            "--credentials", f"{path!r} is Secret {name!r}, but AZURE_CERT_SECRET_NAME is {secret_name!r}"
        )
    data: dict[str, bytes] = {}
    for key, value in encoded.items():
        try:
            data[str(key)] = base64.b64decode(str(value), validate=True)
        except binascii.Error:
            raise InvalidSpec("--credentials", f"{path!r}: data.{key} is not base64") from None
    for key, value in plain.items():
        data[str(key)] = str(value).encode("utf-8")
    return data


def _mounted_secret(path: str) -> dict[str, bytes]:
    # A Secret volume: one file per key, beside kubelet's ..data bookkeeping entries.
    data: dict[str, bytes] = {}
    try:
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if not name.startswith("..") and stat.S_ISREG(os.stat(full).st_mode):
                data[name] = _read(full, "--credentials")
    except OSError as err:
        raise InvalidSpec("--credentials", f"cannot read {path!r}: {err.strerror}") from None
    return data


def load_client_certificate(path: str, secret_name: str) -> bytes:
    """CLIENT_CERT from a Secret manifest (data or stringData), a mounted Secret
    directory, or a certificate file as it is (PEM, or PKCS#12 without password).

    As in Ceph-CSI, a Secret holding any key but CLIENT_CERT is refused.
    """
    if os.path.isdir(path):
        data = _mounted_secret(path)
    else:
        raw = _read(path, "--credentials")
        manifest = _secret_manifest(raw)
        if manifest is None:
            return raw
        data = _manifest_data(manifest, path, secret_name)
    extra = sorted(set(data) - {CLIENT_CERT})
    if extra:
        raise InvalidSpec(
            "--credentials", f"{path!r} holds {', '.join(extra)}; only {CLIENT_CERT} is supported"
        )
    if not data.get(CLIENT_CERT):
        raise InvalidSpec("--credentials", f"{path!r} holds no {CLIENT_CERT}")
    return data[CLIENT_CERT]
