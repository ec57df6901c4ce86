"""`kvmount doctor`: live checks, one row each with a verdict and what to do.

  --class FILE|NAME [--pod NS/NAME]  the identity, its token, and each object's access
  --pod NS/NAME                      why this pod is stuck (install, pod, volumes, class, identity,
                                     events), then its objects' access
  --node                             the driver and providers on this node, their sockets and mounts

Exit status 0 when nothing failed, 1 when a check failed, 2 for unusable input.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import yaml

from kvmount.base import yamlread
from kvmount.base.flags import go_port
from kvmount.doctor import node
from kvmount.doctor.access import access_rows
from kvmount.doctor.cluster import (
    DRIVER,
    DRIVER_ACCOUNT,
    ClusterDoctor,
    Unreadable,
    Volume,
    class_rows,
    get,
    identity_mode,
)
from kvmount.doctor.report import Row, Verdict, as_json, failed, render
from kvmount.keyvault import NMI_PORT, IdentityMode, InvalidSpec, KeyVaultMounter, Settings, parse_mount
from kvmount.kube.api_store import KubeStore
from kvmount.kube.classes import CLASSES, GROUP, VERSION
from kvmount.kube.errors import StoreError
from kvmount.kube.official_client import ClientMissing
from kvmount.mount.command import InputError, secret_data

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--class", dest="klass", metavar="FILE|NAME", help="a class file, or a class's name")
    parser.add_argument("--pod", metavar="NS/NAME", help="the pod (its identity; alone: why it is stuck)")
    parser.add_argument("--node", action="store_true", help="the driver and providers on this node")
    parser.add_argument("--namespace", "-n", default="default", help="the namespace of --class NAME")
    parser.add_argument(
        "--secrets", help="with --class FILE: the node-publish Secret (clientid, clientsecret)"
    )
    parser.add_argument("--kubeconfig", default="", help="kubeconfig (default $KUBECONFIG, else in-cluster)")
    parser.add_argument("--context", default="", help="the kubeconfig context (default: its current-context)")
    parser.add_argument("--output", choices=("text", "json"), default="text")
    parser.add_argument("--driver-name", default=DRIVER, help="the CSI driver's name")
    parser.add_argument(
        "--driver-account", default=DRIVER_ACCOUNT, help="the driver's ServiceAccount NS/NAME"
    )
    parser.add_argument("--cloud-name", default="", help="the provider's default cloud (--cloud-name)")
    parser.add_argument("--nmi-port", type=go_port, default=NMI_PORT, help="aad-pod-identity's NMI port")
    parser.add_argument(
        "--token-proxy-url", default="", help="the provider's --token-proxy-url (identity binding)"
    )
    parser.add_argument("--sni-name", default="", help="the provider's --sni-name (identity binding)")
    parser.add_argument(
        "--provider-dir",
        action="append",
        help=f"provider socket directory (default {', '.join(node.PROVIDER_DIRS)})",
    )
    parser.add_argument("--driver-socket", default=node.DRIVER_SOCKET, help="the driver's CSI socket")
    parser.add_argument("--kubelet-dir", default=node.KUBELET_DIR, help="kubelet's root directory")
    parser.add_argument(
        "--metrics-url",
        action="append",
        default=[],
        help="the driver's /metrics (e.g. http://127.0.0.1:8095/metrics)",
    )
    parser.add_argument(
        "--health-url",
        action="append",
        default=[],
        help="a /healthz to ask (e.g. http://127.0.0.1:8989/healthz)",
    )


def _pod(text: str) -> tuple[str, str]:
    namespace, _, name = text.partition("/")
    if not namespace or not name:
        raise UsageError(f"--pod {text!r}: use NAMESPACE/NAME")
    return namespace, name


def _class_file(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            docs = yamlread.read(lambda: list(yaml.safe_load_all(fh)))
    except OSError as err:
        raise UsageError(f"--class {path}: {err.strerror}") from None
    except yamlread.Unreadable as err:
        raise UsageError(f"--class {path}: {err}; run kvmount validate {path}") from None
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "SecretProviderClass":
            return doc
    raise UsageError(f"--class {path}: no SecretProviderClass in the file")


def _mounter(args: argparse.Namespace) -> KeyVaultMounter:
    settings = Settings(
        default_cloud=args.cloud_name,
        nmi_port=args.nmi_port,
        coalesce_seconds=0,
        token_proxy_url=args.token_proxy_url,
        sni_name=args.sni_name,
    )
    return KeyVaultMounter(settings)


def _access(volume: Volume, mounter: KeyVaultMounter) -> list[Row]:
    try:
        params = parse_mount(volume.attributes, volume.secrets)
    except InvalidSpec as err:
        return [Row("class", Verdict.FAIL, f"the provider refuses the mount: {err}")]
    return access_rows(params, mounter, volume.source)


def _class_rows(args: argparse.Namespace, mounter: KeyVaultMounter) -> list[Row]:
    store = KubeStore(args.kubeconfig, context=args.context)
    pod = _pod(args.pod) if args.pod else None
    doc: dict[str, Any] | None
    if os.path.exists(args.klass):
        doc, what = _class_file(args.klass), f"class file {args.klass}"
    else:
        namespace = pod[0] if pod else args.namespace
        what = f"SecretProviderClass {namespace}/{args.klass}"
        try:
            doc = _read_class(store, namespace, args.klass)
        except (Unreadable, StoreError) as err:
            return [Row("class", Verdict.FAIL, str(err), "check --kubeconfig and the doctor's permissions")]
        if doc is None:
            return [Row("class", Verdict.FAIL, f"{what} not found", f"create it in namespace {namespace}")]
    rows = list(class_rows(what, doc))
    if failed(rows):
        return rows
    parameters = {str(k): str(v) for k, v in ((doc.get("spec") or {}).get("parameters") or {}).items()}
    if pod is not None:
        volume, more = ClusterDoctor(store, args.driver_name, args.driver_account).identity_for(
            pod[0], pod[1], parameters
        )
        rows += more
        if volume is None or failed(more):
            return rows
    else:
        volume = Volume("", str((doc.get("metadata") or {}).get("name") or ""), dict(parameters))
        if args.secrets:
            try:
                with open(args.secrets, encoding="utf-8") as fh:
                    volume.secrets = secret_data(yamlread.read(lambda: yaml.safe_load(fh)), args.secrets)
            except (OSError, yamlread.Unreadable, InputError) as err:
                raise UsageError(f"--secrets {args.secrets}: {err}") from None
            volume.source = f"--secrets {args.secrets}"
        if identity_mode(parameters) in (IdentityMode.WORKLOAD, IdentityMode.TOKEN_PROXY):
            need = "workload identity needs the pod's service account token"
            return [
                *rows,
                Row("identity", Verdict.SKIP, need, "add --pod NS/NAME (a pod of the class's namespace)"),
            ]
    return rows + _access(volume, mounter)


def _read_class(store: KubeStore, namespace: str, name: str) -> dict[str, Any] | None:
    api_client = store.api_client()  # first: it says which extra to install when the package is missing
    from kubernetes import client

    api: Any = client.CustomObjectsApi(api_client)
    doc: dict[str, Any] | None = get(
        f"SecretProviderClass {namespace}/{name}",
        lambda: api.get_namespaced_custom_object(GROUP, VERSION, namespace, CLASSES, name),
    )
    return doc


def _pod_rows(args: argparse.Namespace, mounter: KeyVaultMounter) -> list[Row]:
    namespace, name = _pod(args.pod)
    doctor = ClusterDoctor(
        KubeStore(args.kubeconfig, context=args.context), args.driver_name, args.driver_account
    )
    volumes: list[Volume] = []
    try:
        rows = list(doctor.install_rows())
        rows += doctor.pod_rows(namespace, name, volumes)
    except Unreadable as err:
        return [Row("API server", Verdict.FAIL, str(err), "check --kubeconfig and the doctor's permissions")]
    for volume in volumes:
        rows += _access(volume, mounter)
    directories = args.provider_dir or [d for d in node.PROVIDER_DIRS if os.path.isdir(d)]
    if directories:  # on the node: the provider must answer too
        rows += node.provider_rows(directories)
    return rows


def _node_rows(args: argparse.Namespace) -> list[Row]:
    rows = list(node.driver_rows(args.driver_socket))
    rows += node.provider_rows(args.provider_dir or list(node.PROVIDER_DIRS))
    rows += node.health_rows(args.health_url)
    rows += node.metrics_rows(args.metrics_url)
    rows += node.mount_rows(args.kubelet_dir)
    return rows


def run(args: argparse.Namespace) -> int:
    if not (args.klass or args.pod or args.node):
        print("kvmount doctor: choose --class FILE|NAME, --pod NS/NAME or --node", file=sys.stderr)
        return EXIT_USAGE
    mounter = _mounter(args)
    try:
        if args.klass:
            rows = _class_rows(args, mounter)
        elif args.pod:
            rows = _pod_rows(args, mounter)
        else:
            rows = []
        if args.node:
            rows += _node_rows(args)
    except (UsageError, ClientMissing) as err:
        print(f"kvmount doctor: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (StoreError, Unreadable) as err:
        rows = [Row("API server", Verdict.FAIL, str(err), "check --kubeconfig and the doctor's permissions")]
    finally:
        mounter.close()
    print(as_json(rows) if args.output == "json" else render(rows))
    return EXIT_FAILED if failed(rows) else EXIT_OK
