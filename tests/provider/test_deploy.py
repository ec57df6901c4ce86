"""The provider's manifest is accepted by a real API server and matches the provider's flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from kubernetes import client as k8s

from kvmount.provider.command import add_arguments
from tests.peers.kube import KubeAPIServer

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "provider" / "daemonset.yaml"


def test_daemonset_flags_parse_and_socket_is_where_the_driver_looks() -> None:
    daemonset, _ = yaml.safe_load_all(MANIFEST.read_text())
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(container["args"])
    assert args.endpoint == "unix:///provider/azure.sock"
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/provider")
    volume = next(v for v in daemonset["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["hostPath"]["path"] == "/var/run/secrets-store-csi-providers"
    assert container["livenessProbe"]["httpGet"]["port"] == args.healthz_port


def test_manifest_passes_api_server_validation(kube_apiserver: KubeAPIServer) -> None:
    api = kube_apiserver.admin
    daemonset, account = yaml.safe_load_all(MANIFEST.read_text())
    k8s.CoreV1Api(api).create_namespaced_service_account("kube-system", account, dry_run="All")
    created = k8s.AppsV1Api(api).create_namespaced_daemon_set("kube-system", daemonset, dry_run="All")
    spec = created.spec.template.spec
    assert spec is not None and spec.host_network is True
