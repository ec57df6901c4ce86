"""One SecretSync document -> findings: what its CRD and the sync controller refuse before a
Secret is written. The rules are theirs (secretsync/syncspec.py: the object's fields, patterns
and reserved key; secretsync/data.py: the Secret's name, type, keys, labels and annotations, in
the sync controller's dialect), called, never restated. Whether each sourcePath is a file the
class writes is checked when the class is known (in the same file); otherwise it is left to the
controller."""

from __future__ import annotations

import re
from collections.abc import Callable

import yaml

from kvmount.base import yamlread
from kvmount.keyvault import goyaml
from kvmount.kube.names import name_problem
from kvmount.secretsync.data import SECRET_SYNC, entry_problems, metadata
from kvmount.secretsync.errors import SyncError, SyncReason, is_subdomain
from kvmount.secretsync.syncspec import (
    API_VERSION,
    DATA_FIELDS,
    DATA_PATH,
    FORCE_SYNCHRONIZATION,
    KIND,
    RESERVED_KEY,
    SECRET_OBJECT_FIELDS,
    SPEC_FIELDS,
    crd_reserved,
    field_problem,
)
from kvmount.validate.checks import Add, Finding, Severity, names, sync_finding, unknown_keys
from kvmount.validate.document import entries, locate, scalar

Fields = dict[str, tuple[yaml.Node, yaml.Node]]
# (namespace, class name) -> the files that class writes, or None when it is not known.
ClassFiles = Callable[[str, str], list[str] | None]
_DROPPED = "the API server drops it"
_REFERENCES = {
    "secretProviderClassName": "the SecretProviderClass, in this namespace, that says what to fetch",
    "serviceAccountName": "the ServiceAccount, in this namespace, whose identity fetches the objects",
}


def _unknown(namespace: str, name: str) -> list[str] | None:
    return None


def check_sync(doc: yaml.Node, class_files: ClassFiles = _unknown) -> list[Finding] | None:
    """Findings for one document; None when it is not a SecretSync."""
    top = entries(doc)
    if scalar(top.get("kind", (doc, None))[1]) != KIND:
        return None
    found: list[Finding] = []

    def add(severity: Severity, path: str, message: str) -> None:
        found.append(Finding(severity, path, message, locate(doc, path)))

    api = scalar(top.get("apiVersion", (doc, None))[1])
    if api != API_VERSION:
        add(Severity.ERROR, "apiVersion", f"{api!r} is not served; use {API_VERSION}")
    meta = entries(top.get("metadata", (doc, None))[1])
    name = names(add, meta, "SecretSync (and so its Secret)")
    spec_pair = top.get("spec")
    if spec_pair is None or not isinstance(spec_pair[1], yaml.MappingNode):
        add(
            Severity.ERROR,
            "spec",
            f"is missing; set spec.{', spec.'.join(_REFERENCES)} and spec.secretObject",
        )
        return found
    spec = entries(spec_pair[1])
    unknown_keys(add, "spec", spec, SPEC_FIELDS, _DROPPED)
    for field, what in _REFERENCES.items():
        where, value = f"spec.{field}", _text(spec, field)
        problem = name_problem(where, value) if value else f"{where} is missing; name {what}"
        if problem:
            add(Severity.ERROR, where, problem.removeprefix(f"{where} "))
    force = _text(spec, "forceSynchronization")
    _pattern(add, "spec.forceSynchronization", force, FORCE_SYNCHRONIZATION, set())
    files = class_files(_text(meta, "namespace"), _text(spec, "secretProviderClassName"))
    # The Secret is named like the SecretSync; a bad name is metadata.name's finding already.
    _secret_object(add, spec, name if is_subdomain(name) else "validate", files)
    return sorted(found, key=lambda f: f.line)


def _text(fields: Fields, key: str) -> str:
    return scalar(fields[key][1]) if key in fields else ""


def _pattern(add: Add, where: str, value: str, pattern: re.Pattern[str], flagged: set[str]) -> None:
    """The CRD's length and pattern of one field, unless another check has flagged it already."""
    problem = field_problem(where, value, pattern) if value and where not in flagged else None
    if problem:
        add(Severity.ERROR, where, problem.removeprefix(f"{where} "))


def _secret_object(add: Add, spec: Fields, secret_name: str, files: list[str] | None) -> None:
    where = "spec.secretObject"
    node = spec["secretObject"][1] if "secretObject" in spec else None
    if node is None or goyaml.is_null(node):
        add(Severity.ERROR, where, "is missing; set its data: a list of {sourcePath, targetKey}")
        return
    if not isinstance(node, yaml.MappingNode):
        add(Severity.ERROR, where, "must be a map of type, data, labels and annotations")
        return
    fields = entries(node)
    unknown_keys(add, where, fields, SECRET_OBJECT_FIELDS, _DROPPED)
    try:
        secret_object = yamlread.read(yaml.safe_load, yaml.serialize(node))
    except yamlread.Unreadable as err:
        add(Severity.ERROR, where, str(err))
        return
    flagged: set[str] = set()

    def flag(severity: Severity, path: str, message: str) -> None:
        flagged.add(path)
        add(severity, path, message)

    entry = {**secret_object, "secretName": secret_name}
    for problem in entry_problems(entry, files or (), where, SECRET_SYNC):
        if problem.reason is not SyncReason.OBJECT_NOT_MOUNTED or files is not None:
            sync_finding(flag, where, problem)
    try:
        metadata(entry, where, SECRET_SYNC)
    except SyncError as problem:
        sync_finding(flag, where, problem)
    data = fields.get("data")
    items = data[1].value if data is not None and isinstance(data[1], yaml.SequenceNode) else []
    for j, item in enumerate(items):
        at, item_fields = f"{where}.data[{j}]", entries(item)
        unknown_keys(add, at, item_fields, DATA_FIELDS, _DROPPED)
        for key in DATA_FIELDS:
            _pattern(add, f"{at}.{key}", _text(item_fields, key), DATA_PATH, flagged)
    for field in ("labels", "annotations"):
        keys = secret_object.get(field)
        for key in crd_reserved(keys if isinstance(keys, dict) else {}):
            add(
                Severity.ERROR,
                f"{where}.{field}",
                f"{str(key)[:80]!r}: keys starting with {RESERVED_KEY} are reserved for the sync "
                "controller; remove it",
            )
