"""`kvmount validate`: SecretProviderClass and SecretSync manifests checked offline, before any
pod (or Secret) gets stuck.

Files (multi-document YAML; `-` is stdin) or, with --cluster, the classes in
the API server. One line per finding; exit 0 without findings, 1 with, 2 when
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
from kvmount.validate.checks import Finding, Severity
from kvmount.validate.document import documents
from kvmount.validate.kinds import check_documents, check_object

EXIT_CLEAN, EXIT_FINDINGS, EXIT_UNREADABLE = 0, 1, 2


@dataclass(frozen=True)
class Located:
    """A finding and where it is: a file and document (1-based), or a class in the API server."""

    finding: Finding
    source: str
    document: int = 0

    def text(self) -> str:
        f = self.finding
        where = f"{self.source}:{f.line}: doc {self.document}" if self.document else self.source
        return f"{where}: {f.severity}: {f.field}: {f.message}"

    def json(self) -> dict[str, Any]:
        f = self.finding
        place = {"file": self.source, "document": self.document} if self.document else {"class": self.source}
        return {**place, "line": f.line, "field": f.field, "severity": f.severity.value, "message": f.message}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="manifests to check (SecretProviderClass and SecretSync); - or none: stdin",
    )
    parser.add_argument("--output", choices=("text", "json"), default="text", help="text (default) or json")
    parser.add_argument("--cluster", action="store_true", help="check the classes in the API server instead")
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
    """Findings of the classes the API server holds (one namespace, or all); raises StoreError,
    ClientMissing."""
    # The kubernetes client, not kube/rest.py: a user's kubeconfig may run a credential plugin (exec).
    # Asked for first: it says which extra to install when the package is missing.
    api_client = KubeStore(kubeconfig, context=context).api_client()
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    api: Any = client.CustomObjectsApi(api_client)
    what = f"SecretProviderClasses in {f'namespace {namespace}' if namespace else 'all namespaces'}"
    listed: dict[str, Any]
    try:
        if namespace:
            listed = api.list_namespaced_custom_object(
                GROUP, VERSION, namespace, CLASSES, _request_timeout=10
            )
        else:
            listed = api.list_cluster_custom_object(GROUP, VERSION, CLASSES, _request_timeout=10)
    except ApiException as err:
        raise api_error(what, "list", err) from None
    except (HTTPError, OSError) as err:
        raise StoreUnavailable(f"{what}: API server unreachable ({type(err).__name__})") from None
    found: list[Located] = []
    items: list[dict[str, Any]] = listed.get("items") or []
    for item in items:
        meta = item.get("metadata") or {}
        item.setdefault("apiVersion", f"{GROUP}/{VERSION}")
        source = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        found += [Located(f, source) for f in check_object(item)]
    return found


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
