"""A ``secretObjects`` entry and the mounted files -> the Secret's name, type, data, labels and
annotations, checked as the API server would check them, so that a bad entry is refused
before its Secret is written (the other entries still sync). Pure: no API calls."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kvmount.secretsync.errors import SyncError, SyncReason, invalid, is_subdomain, short
from kvmount.secretsync.secret_types import REQUIRED_KEYS, TLS, TLS_CERT, TLS_KEY

MANAGED_LABEL = "secrets-store.csi.k8s.io/managed"
MAX_SECRET_BYTES = 1024 * 1024  # the API server's limit on a Secret's data
# The types of Kubernetes' own prefixes a sync writes: plain data that gives no one a power. The
# writers may create Secrets in any namespace, so a type Kubernetes acts on is refused: a
# service-account-token Secret makes the token controller mint a token of any ServiceAccount,
# a bootstrap token (in kube-system) lets its holder join nodes. Types outside Kubernetes'
# prefixes (example.com/thing) mean nothing to Kubernetes and are written as asked.
WRITTEN_TYPES = (
    "Opaque",
    "kubernetes.io/basic-auth",
    "kubernetes.io/dockercfg",
    "kubernetes.io/dockerconfigjson",
    "kubernetes.io/ssh-auth",
    TLS,
)
_KUBERNETES_TYPE = re.compile(r"(.+\.)?(kubernetes\.io|k8s\.io)/.*")

_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_NAME_PART = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


@dataclass(frozen=True)
class Dialect:
    """How one API spells a Secret to sync, and how its writer marks the Secrets it manages."""

    source: str  # a data entry's field naming the mounted file
    target: str  # a data entry's field naming the Secret's key
    managed_label: str
    managed_value: str
    writer: str  # who writes the Secrets, for messages


# The driver's SecretProviderClass ``secretObjects``.
DRIVER = Dialect("objectName", "key", MANAGED_LABEL, "true", "the driver")
# The SecretSync API (secret-sync.x-k8s.io), with the upstream sync controller's label.
SECRET_SYNC = Dialect("sourcePath", "targetKey", "secrets-store.sync.x-k8s.io", "", "the sync controller")


def entry_problems(
    secret_object: Any, file_names: Collection[str], where: str, dialect: Dialect = DRIVER
) -> Iterator[SyncError]:
    """Every problem of one ``secretObjects`` entry that shows without the files' content: names,
    keys, a data entry naming no file of the mount, keys its type requires. The driver raises the
    first (secret_data); `kvmount validate` lists them all."""
    if not isinstance(secret_object, Mapping):
        yield invalid(f"{where} must be an object with secretName, type and data")
        return
    name = secret_object.get("secretName")
    if not isinstance(name, str) or not name:
        yield invalid(f"{where}.secretName is missing: name the Secret to create")
    elif not is_subdomain(name):
        yield invalid(
            f"{where}.secretName {short(name)} is not a valid Secret name: use at most 253 lower-case "
            "letters, digits, '-' and '.', starting and ending with a letter or digit"
        )
    secret_type = secret_object.get("type") or "Opaque"
    if not isinstance(secret_type, str):
        yield invalid(f"{where}.type must be a string such as Opaque or kubernetes.io/tls")
    elif secret_type not in WRITTEN_TYPES and _KUBERNETES_TYPE.fullmatch(secret_type):
        yield invalid(
            f"{where}.type {short(secret_type)} is refused: {dialect.writer} writes no Secret that "
            f"Kubernetes acts on; use one of {', '.join(WRITTEN_TYPES)} or a type of your own domain"
        )
    entries = secret_object.get("data")
    if not isinstance(entries, list) or not entries:
        yield invalid(f"{where}.data must be a non-empty list of {{{dialect.source}, {dialect.target}}}")
        return
    keys: set[str] = set()
    for j, entry in enumerate(entries):
        at = f"{where}.data[{j}]"
        if not isinstance(entry, Mapping):
            yield invalid(f"{at} must be an object with {dialect.source} and {dialect.target}")
            continue
        key, object_name = entry.get(dialect.target), entry.get(dialect.source)
        if not isinstance(key, str) or not key:
            yield invalid(f"{at}.{dialect.target} is missing: name the Secret's data key")
        elif len(key) > 253 or _SECRET_KEY.fullmatch(key) is None or key in (".", ".."):
            yield invalid(
                f"{at}.{dialect.target} {short(key)} is not a valid Secret key: use at most 253 letters, "
                "digits, '-', '_' and '.' (not '.' or '..')"
            )
        elif key in keys:
            yield invalid(
                f"{at}.{dialect.target} {short(key)} appears twice in {where}.data: keys must be unique"
            )
        else:
            keys.add(key)
        if not isinstance(object_name, str) or not object_name:
            yield invalid(
                f"{at}.{dialect.source} is missing: name a mounted file (objectAlias or objectName)"
            )
        elif object_name not in file_names:
            mounted = ", ".join(sorted(file_names)[:20]) or "none"
            yield SyncError(
                SyncReason.OBJECT_NOT_MOUNTED,
                f"{at}.{dialect.source} {short(object_name)} is not a file of this mount (files: {mounted}); "
                "use the object's objectAlias, or its objectName when it has no alias",
            )
    missing = [k for k in REQUIRED_KEYS.get(str(secret_type), ()) if k not in keys]
    if missing:
        yield invalid(f"{where}.data lacks key(s) {', '.join(missing)}, which type {secret_type} requires")


def secret_data(
    secret_object: Mapping[str, Any], files: Mapping[str, bytes], where: str, dialect: Dialect = DRIVER
) -> tuple[str, str, dict[str, bytes]]:
    """(name, type, data) of one ``secretObjects`` entry, checked; ``where`` prefixes messages.

    For ``kubernetes.io/tls``, ``tls.key`` gets the private key alone (PEM,
    PKCS#1 for RSA and SEC1 for EC, as upstream) and ``tls.crt`` the
    certificate chain alone (PEM, leaf first), from a
    PEM file or a password-less PKCS#12 file (DER or base64). Other keys and
    types get the file's bytes unchanged. Raises SyncError.
    """
    for problem in entry_problems(secret_object, files, where, dialect):
        raise problem
    name, secret_type = str(secret_object["secretName"]), str(secret_object.get("type") or "Opaque")
    if secret_type == TLS:
        # Here, not at the top: cryptography costs every node's driver about 8 MiB, and most
        # classes sync no TLS Secret.
        from kvmount.secretsync.tls import check_pair, tls_chain, tls_key
    data: dict[str, bytes] = {}
    for j, entry in enumerate(secret_object["data"]):
        at, key, object_name = f"{where}.data[{j}]", str(entry[dialect.target]), str(entry[dialect.source])
        content = files[object_name]
        if secret_type == TLS and key == TLS_KEY:
            content = tls_key(content, f"{at} (file {object_name})")
        elif secret_type == TLS and key == TLS_CERT:
            content = tls_chain(content, f"{at} (file {object_name})")
        data[key] = content
    if secret_type == TLS:
        check_pair(data[TLS_KEY], data[TLS_CERT], where)
    size = sum(len(v) for v in data.values())
    if size > MAX_SECRET_BYTES:
        raise invalid(f"{where}.data totals {size} bytes; a Secret holds at most 1 MiB: split it")
    return name, secret_type, data


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise invalid(f"{where} must be a map of strings; quote the values in YAML")
    return dict(value)


def _is_qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if "/" in key and not is_subdomain(prefix):
        return False
    return len(name) <= 63 and _NAME_PART.fullmatch(name) is not None


def metadata(
    secret_object: Mapping[str, Any], where: str, dialect: Dialect = DRIVER
) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) of an entry, checked as the API server would, with the managed label."""
    labels = _string_map(secret_object.get("labels"), f"{where}.labels")
    annotations = _string_map(secret_object.get("annotations"), f"{where}.annotations")
    for key, value in labels.items():
        if not _is_qualified_name(key):
            raise invalid(f"{where}.labels key {short(key)} is not a valid label name")
        if value and (len(value) > 63 or _NAME_PART.fullmatch(value) is None):
            raise invalid(
                f"{where}.labels[{key}] is not a valid label value: at most 63 letters, digits, "
                "'-', '_' and '.', starting and ending with a letter or digit"
            )
    for key in annotations:
        if not _is_qualified_name(key):
            raise invalid(f"{where}.annotations key {short(key)} is not a valid annotation name")
    # The managed label is the writer's whatever the entry says, as upstream's driver sets it.
    return {**labels, dialect.managed_label: dialect.managed_value}, annotations
