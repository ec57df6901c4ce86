"""`kvmount validate`: SecretProviderClass and SecretSync manifests checked offline, before any
pod (or Secret) gets stuck.

Files (multi-document YAML; `-` is stdin) or, with --cluster, the classes and
SecretSyncs in the API server. One line per finding; exit 0 without findings, 1 with, 2 when
an input cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

from kvmount.base.yamlread import Unreadable
from kvmount.kube.api_store import KubeStore
from kvmount.kube.classes import CLASSES, GROUP, VERSION
from kvmount.kube.errors import StoreError, StoreUnavailable, api_error
from kvmount.kube.official_client import ClientMissing
from kvmount.secretsync import syncspec
from kvmount.validate.checks import KIND, Finding, Severity
from kvmount.validate.document import documents
from kvmount.validate.kinds import check_documents, check_objects

EXIT_CLEAN, EXIT_FINDINGS, EXIT_UNREADABLE = 0, 1, 2


@dataclass(frozen=True)
class Located:
    """A finding and where it is: a file and document (1-based), or an object of ``kind`` in the
    API server."""

    finding: Finding
    source: str
    document: int = 0
    kind: str = KIND

    def text(self) -> str:
        f = self.finding
        if self.document:
            where = f"{self.source}:{f.line}: doc {self.document}"
        else:  # a class as "ns/name", as before SecretSyncs were checked too
            where = self.source if self.kind == KIND else f"{self.kind} {self.source}"
        return f"{where}: {f.severity}: {f.field}: {f.message}"

    def json(self) -> dict[str, Any]:
        f = self.finding
        place: dict[str, Any]
        if self.document:
            place = {"file": self.source, "document": self.document}
        else:  # "class" as before SecretSyncs were checked too; "kind" tells them apart
            place = {"kind": self.kind, _JSON_KEYS[self.kind]: self.source}
        return {**place, "line": f.line, "field": f.field, "severity": f.severity.value, "message": f.message}


# The key naming an object of the API server in --output json, by kind.
_JSON_KEYS = {KIND: "class", syncspec.KIND: "secretSync"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="manifests to check (SecretProviderClass and SecretSync); - or none: stdin",
    )
    parser.add_argument("--output", choices=("text", "json"), default="text", help="text (default) or json")
    parser.add_argument(
        "--cluster", action="store_true", help="check the classes and SecretSyncs in the API server instead"
    )
    parser.add_argument("--namespace", "-n", default="", help="with --cluster: only this namespace")
    parser.add_argument("--kubeconfig", default="", help="with --cluster: kubeconfig (default $KUBECONFIG)")
    parser.add_argument("--context", default="", help="with --cluster: the kubeconfig context")


def check_text(text: str, source: str) -> tuple[list[Located], int]:
    """Findings of one file's documents, and how many it checked (classes and SecretSyncs);
    raises Unreadable."""
    found: list[Located] = []
    checked = 0
    for number, findings in enumerate(check_documents(documents(text)), start=1):
        if findings is None:
            continue
        checked += 1
        found += [Located(f, source, number) for f in findings]
    return found, checked


def check_cluster(kubeconfig: str, namespace: str, context: str = "") -> list[Located]:
    """Findings of the classes and SecretSyncs the API server holds (one namespace, or all), a
    SecretSync's sourcePaths checked against its class's files; raises StoreError, ClientMissing."""
    # The kubernetes client, not kube/rest.py: a user's kubeconfig may run a credential plugin (exec).
    # Asked for first: it says which extra to install when the package is missing.
    api_client = KubeStore(kubeconfig, context=context).api_client()
    from kubernetes import client

    api: Any = client.CustomObjectsApi(api_client)
    listed = [(KIND, item) for item in _list(api, namespace, KIND, (GROUP, VERSION, CLASSES))]
    # Without the SecretSync CRD (no sync controller installed) there is none to check; without
    # the right to list them, the classes are still checked.
    syncs = _list(api, namespace, syncspec.KIND, (syncspec.GROUP, syncspec.VERSION, syncspec.PLURAL), True)
    listed += [(syncspec.KIND, item) for item in syncs]
    found: list[Located] = []
    for (kind, item), findings in zip(listed, check_objects(listed), strict=True):
        meta = item.get("metadata") or {}
        source = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        found += [Located(f, source, kind=kind) for f in findings]
    return found


def _list(
    api: Any, namespace: str, kind: str, resource: tuple[str, str, str], missing_ok: bool = False
) -> list[dict[str, Any]]:
    """The objects of ``resource`` (group, version, plural) in ``namespace`` ("": all); with
    ``missing_ok``, none when the API server does not serve it (404), or, said in one line on
    stderr, when this user may not list them (403)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    plural = f"{kind}es" if kind.endswith("s") else f"{kind}s"
    what = f"{plural} in {f'namespace {namespace}' if namespace else 'all namespaces'}"
    try:
        if namespace:
            listed = api.list_namespaced_custom_object(
                *resource[:2], namespace, resource[2], _request_timeout=10
            )
        else:
            listed = api.list_cluster_custom_object(*resource, _request_timeout=10)
    except ApiException as err:
        if missing_ok and err.status == 404:
            return []
        if missing_ok and err.status == 403:
            print(f"kvmount validate: {what} not checked: you may not list them", file=sys.stderr)
            return []
        raise api_error(what, "list", err, who="the kubeconfig's user") from None
    except (HTTPError, OSError) as err:
        raise StoreUnavailable(f"{what}: API server unreachable ({type(err).__name__})") from None
    items: list[dict[str, Any]] = listed.get("items") or []
    return items


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def run(args: argparse.Namespace) -> int:
    found: list[Located] = []
    status = EXIT_CLEAN
    if args.cluster:
        try:
            found = check_cluster(args.kubeconfig, args.namespace, args.context)
        except (StoreError, ClientMissing) as err:
            print(f"kvmount validate: {err}", file=sys.stderr)
            return EXIT_UNREADABLE
    for path in args.files or ([] if args.cluster else ["-"]):
        source = "<stdin>" if path == "-" else path
        try:
            located, checked = check_text(_read(path), source)
        except OSError as err:
            print(f"kvmount validate: {path}: {err.strerror}", file=sys.stderr)
            status = EXIT_UNREADABLE
            continue
        except (Unreadable, UnicodeDecodeError) as err:
            at = f":{err.line}" if isinstance(err, Unreadable) and err.line else ""
            print(f"kvmount validate: {source}{at}: {err}", file=sys.stderr)
            status = EXIT_UNREADABLE
            continue
        if not checked:
            nothing = "no SecretProviderClass or SecretSync in this file"
            located = [Located(Finding(Severity.WARNING, "kind", nothing), source)]
        found += located
    if args.output == "json":
        print(json.dumps([one.json() for one in found], indent=2))
    else:
        for one in found:
            print(one.text())
    if status == EXIT_UNREADABLE:
        return status
    return EXIT_FINDINGS if found else EXIT_CLEAN
