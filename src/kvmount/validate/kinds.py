"""What `kvmount validate` checks, by kind: SecretProviderClass (checks.py) and SecretSync
(sync_checks.py), from a manifest's YAML or an object as the API server holds or is sent it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import yaml

from kvmount.kube.classes import GROUP
from kvmount.secretsync import syncspec
from kvmount.validate.checks import KIND, Finding, check_class, check_class_files
from kvmount.validate.document import documents, entries, scalar
from kvmount.validate.sync_checks import check_sync

# Each kind's check, and its apiVersion when an object comes without one.
CHECKS: dict[str, tuple[Callable[[yaml.Node], list[Finding] | None], str]] = {
    KIND: (check_class, f"{GROUP}/v1"),
    syncspec.KIND: (check_sync, syncspec.API_VERSION),
}
KINDS = tuple(CHECKS)


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
    """Findings for an object of ``kind`` (one of KINDS: what was listed, or what the review
    names) as the API server holds or is sent it (JSON): its name, namespace and spec only, and
    no lines, which mean nothing in a re-serialised object."""
    check, api_version = CHECKS[kind]
    meta = item.get("metadata") or {}
    doc = {
        "apiVersion": item.get("apiVersion") or api_version,
        "kind": kind,
        "metadata": {k: meta[k] for k in ("name", "namespace") if k in meta},
        **({"spec": item["spec"]} if "spec" in item else {}),
    }
    found: list[Finding] = []
    for node in documents(yaml.safe_dump(doc)):
        found += [Finding(f.severity, f.field, f.message) for f in check(node) or []]
    return found
