"""What `kvmount validate` checks, by kind: SecretProviderClass (checks.py) and SecretSync
(sync_checks.py), from a manifest's YAML or an object as the API server holds or is sent it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from kvmount.kube.classes import GROUP
from kvmount.secretsync import syncspec
from kvmount.validate.checks import KIND, Finding, check_class_files
from kvmount.validate.document import documents, entries, scalar
from kvmount.validate.sync_checks import check_sync

# Each kind's apiVersion, for an object that comes without one.
API_VERSIONS = {KIND: f"{GROUP}/v1", syncspec.KIND: syncspec.API_VERSION}
KINDS = tuple(API_VERSIONS)


def check_documents(docs: list[yaml.Node]) -> list[list[Finding] | None]:
    """Findings for each document (None for one of no kind validate checks, a Pod in the same
    file); a SecretSync's sourcePaths are checked against the files of its class when the class
    is among ``docs``."""
    classes: dict[tuple[str, str], list[str] | None] = {}
    checked: list[list[Finding] | None] = []
    for doc in docs:
        found = check_class_files(doc)
        if found is not None:
            classes[_place(doc)] = found[1]
        checked.append(None if found is None else found[0])
    return [
        findings if findings is not None else check_sync(doc, lambda ns, name: classes.get((ns, name)))
        for doc, findings in zip(docs, checked, strict=True)
    ]


def _place(doc: yaml.Node) -> tuple[str, str]:
    """A document's (namespace, name), "" for either one missing."""
    meta = entries(entries(doc).get("metadata", (doc, None))[1])
    return scalar(meta.get("namespace", (doc, None))[1]), scalar(meta.get("name", (doc, None))[1])


def check_object(item: Mapping[str, Any], kind: str = KIND) -> list[Finding]:
    """Findings for an object of ``kind`` (one of KINDS: what the review names) as the API server
    is sent it (JSON); see check_objects."""
    return check_objects([(kind, item)])[0]


def check_objects(items: Sequence[tuple[str, Mapping[str, Any]]]) -> list[list[Finding]]:
    """Findings for each (kind, object) as the API server holds them (JSON): their names,
    namespaces and specs only, and no lines, which mean nothing in a re-serialised object. A
    SecretSync's sourcePaths are checked against its class's files when the class is among them."""
    docs = [node for kind, item in items for node in documents(yaml.safe_dump(_document(kind, item)))]
    return [[Finding(f.severity, f.field, f.message) for f in found or []] for found in check_documents(docs)]


def _document(kind: str, item: Mapping[str, Any]) -> dict[str, Any]:
    meta = item.get("metadata") or {}
    return {
        "apiVersion": item.get("apiVersion") or API_VERSIONS[kind],
        "kind": kind,
        "metadata": {k: meta[k] for k in ("name", "namespace") if k in meta},
        **({"spec": item["spec"]} if "spec" in item else {}),
    }
