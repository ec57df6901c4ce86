"""`kvmount admission` as a real HTTPS process behind a real kube-apiserver: `kubectl apply`
prints the findings as warnings, deny mode refuses, a webhook that is down blocks nothing;
and the server's own bounds (body size, time) hold."""

from __future__ import annotations

import base64
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.certs import server_tls
from tests.peers.kube import KubeAPIServer

pytestmark = pytest.mark.peer  # its fixtures and tests start kvmount as a process

TYPO_CLASS = """\
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: {name}
spec:
  provider: azure
  parameters:
    keyvaultName: kv-shop
    tenantId: tenant
    clientID: client
    objects: |
      array:
        - |
          objectName: db
          objectType: secret
          objectAlais: password
"""
WARNING = "Warning: spec.parameters.objects[0]: unknown key 'objectAlais'; did you mean 'objectAlias'?"
# The CRD accepts any type; the sync controller would refuse this one at its first sync.
TOKEN_SYNC = """\
apiVersion: secret-sync.x-k8s.io/v1alpha1
kind: SecretSync
metadata:
  name: {name}
spec:
  secretProviderClassName: app
  serviceAccountName: default
  secretObject:
    type: kubernetes.io/service-account-token
    data:
      - sourcePath: db
        targetKey: token
"""
SYNC_WARNING = (
    "Warning: spec.secretObject.type: 'kubernetes.io/service-account-token' is refused: the sync controller"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Webhook:
    process: subprocess.Popen[bytes]
    port: int
    ca_pem: bytes
    log: Path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path, Path]:
    material = server_tls("kvmount-admission", ["localhost"])
    base = tmp_path_factory.mktemp("admission-tls")
    (base / "tls.crt").write_bytes(material.cert_pem)
    (base / "tls.key").write_bytes(material.key_pem)
    return material.ca_pem, base / "tls.crt", base / "tls.key"


def start_webhook(tls: tuple[bytes, Path, Path], log: Path, *extra: str) -> Webhook:
    ca, cert, key = tls
    port = free_port()
    cmd = [
        sys.executable, "-m", "kvmount.cli", "admission", f"--port={port}",
        f"--tls-cert-file={cert}", f"--tls-private-key-file={key}", *extra,
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return Webhook(process, port, ca, log)
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"webhook did not start: {log.read_text()}") from None
            time.sleep(0.05)


def stop_webhook(webhook: Webhook) -> None:
    webhook.process.terminate()
    webhook.process.wait(timeout=20)
    assert "Traceback" not in webhook.log.read_text(), webhook.log.read_text()


@pytest.fixture(scope="module")
def warn(tls: tuple[bytes, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    webhook = start_webhook(tls, tmp_path_factory.mktemp("warn") / "log", "--request-timeout=1s")
    yield webhook
    stop_webhook(webhook)


@pytest.fixture(scope="module")
def deny(tls: tuple[bytes, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    webhook = start_webhook(tls, tmp_path_factory.mktemp("deny") / "log", "--deny-invalid")
    yield webhook
    stop_webhook(webhook)


def kubectl(api: KubeAPIServer, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    binary = shutil.which("kubectl") or "/usr/bin/kubectl"
    return subprocess.run(
        [binary, f"--kubeconfig={api.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def namespace(secrets_store_api: KubeAPIServer) -> Iterator[str]:
    name = f"adm-{uuid.uuid4().hex[:8]}"
    secrets_store_api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    kubectl(secrets_store_api, "delete", "namespace", name, "--wait=false")


def register(api: KubeAPIServer, namespace: str, port: int, ca_pem: bytes) -> str:
    """A ValidatingWebhookConfiguration for the classes and SecretSyncs of ``namespace`` only, as
    the chart's."""
    name = f"kvmount-{namespace}"
    api.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": "secretproviderclasses.kvmount.azure.github.io",
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "failurePolicy": "Ignore",
                    "timeoutSeconds": 5,
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{port}/validate",
                        "caBundle": base64.b64encode(ca_pem).decode(),
                    },
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                    "rules": [
                        {
                            "apiGroups": [group],
                            "apiVersions": ["*"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": [resource],
                        }
                        for group, resource in (
                            ("secrets-store.csi.x-k8s.io", "secretproviderclasses"),
                            ("secret-sync.x-k8s.io", "secretsyncs"),
                        )
                    ],
                }
            ],
        }
    )
    return name


def dry_run_until(api: KubeAPIServer, namespace: str, seen: str, timeout: float = 30) -> None:
    """Wait until the API server calls the new webhook (its configuration is read by an informer)."""
    end = time.monotonic() + timeout
    while True:
        done = kubectl(
            api,
            "-n",
            namespace,
            "apply",
            "--dry-run=server",
            "-f",
            "-",
            stdin=TYPO_CLASS.format(name="probe"),
        )
        if seen in done.stderr:
            return
        assert time.monotonic() < end, f"the webhook was not called within {timeout}s: {done.stderr}"
        time.sleep(0.2)


def test_kubectl_apply_prints_the_findings_and_the_class_is_created(
    secrets_store_api: KubeAPIServer, namespace: str, warn: Webhook
) -> None:
    config = register(secrets_store_api, namespace, warn.port, warn.ca_pem)
    try:
        dry_run_until(secrets_store_api, namespace, WARNING)
        done = kubectl(
            secrets_store_api, "-n", namespace, "apply", "-f", "-", stdin=TYPO_CLASS.format(name="app")
        )
        assert done.returncode == 0, done.stderr
        assert WARNING in done.stderr.splitlines()
        got = kubectl(secrets_store_api, "-n", namespace, "get", "secretproviderclass", "app", "-o", "yaml")
        assert yaml.safe_load(got.stdout)["metadata"]["name"] == "app"
    finally:
        kubectl(secrets_store_api, "delete", "validatingwebhookconfiguration", config)


def test_deny_mode_refuses(secrets_store_api: KubeAPIServer, namespace: str, deny: Webhook) -> None:
    config = register(secrets_store_api, namespace, deny.port, deny.ca_pem)
    try:
        dry_run_until(secrets_store_api, namespace, "is invalid")
        done = kubectl(
            secrets_store_api, "-n", namespace, "apply", "-f", "-", stdin=TYPO_CLASS.format(name="app")
        )
        assert done.returncode != 0
        assert "denied the request" in done.stderr and "objectAlais" in done.stderr, done.stderr
        missing = kubectl(secrets_store_api, "-n", namespace, "get", "secretproviderclass", "app")
        assert missing.returncode != 0 and "NotFound" in missing.stderr
    finally:
        kubectl(secrets_store_api, "delete", "validatingwebhookconfiguration", config)


def test_a_secret_sync_the_controller_would_refuse_is_warned_about_or_refused(
    secrets_store_api: KubeAPIServer, namespace: str, warn: Webhook, deny: Webhook
) -> None:
    def apply(name: str) -> subprocess.CompletedProcess[str]:
        return kubectl(
            secrets_store_api, "-n", namespace, "apply", "-f", "-", stdin=TOKEN_SYNC.format(name=name)
        )

    config = register(secrets_store_api, namespace, warn.port, warn.ca_pem)
    try:
        dry_run_until(secrets_store_api, namespace, WARNING)
        done = apply("warned")
        assert done.returncode == 0, done.stderr
        assert any(line.startswith(SYNC_WARNING) for line in done.stderr.splitlines()), done.stderr
        got = kubectl(secrets_store_api, "-n", namespace, "get", "secretsync", "warned", "-o", "yaml")
        assert yaml.safe_load(got.stdout)["metadata"]["name"] == "warned"
    finally:
        kubectl(secrets_store_api, "delete", "validatingwebhookconfiguration", config)
    config = register(secrets_store_api, namespace, deny.port, deny.ca_pem)
    try:
        dry_run_until(secrets_store_api, namespace, "is invalid")
        done = apply("denied")
        assert done.returncode != 0
        assert "denied the request: SecretSync" in done.stderr and "service-account-token" in done.stderr, (
            done.stderr
        )
        missing = kubectl(secrets_store_api, "-n", namespace, "get", "secretsync", "denied")
        assert missing.returncode != 0 and "NotFound" in missing.stderr
    finally:
        kubectl(secrets_store_api, "delete", "validatingwebhookconfiguration", config)


def test_a_webhook_that_is_down_blocks_nothing(
    secrets_store_api: KubeAPIServer, namespace: str, tls: tuple[bytes, Path, Path]
) -> None:
    config = register(secrets_store_api, namespace, free_port(), tls[0])  # nothing listens there
    try:
        # Whether or not the API server has read the configuration yet, the apply goes through.
        done = kubectl(
            secrets_store_api, "-n", namespace, "apply", "-f", "-", stdin=TYPO_CLASS.format(name="app")
        )
        assert done.returncode == 0, done.stderr
        assert "objectAlais" not in done.stderr
    finally:
        kubectl(secrets_store_api, "delete", "validatingwebhookconfiguration", config)


def tls_client(webhook: Webhook) -> ssl.SSLSocket:
    context = ssl.create_default_context(cadata=webhook.ca_pem.decode())
    raw = socket.create_connection(("127.0.0.1", webhook.port), timeout=10)
    return context.wrap_socket(raw, server_hostname="localhost")


def test_a_body_over_the_bound_is_refused_unread(warn: Webhook) -> None:
    with tls_client(warn) as conn:
        conn.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        assert conn.recv(200).startswith(b"HTTP/1.0 413")
    with tls_client(warn) as conn:
        conn.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert conn.recv(200).startswith(b"HTTP/1.0 411")


def test_a_slow_client_is_dropped_at_the_request_timeout(warn: Webhook) -> None:
    with tls_client(warn) as conn:
        conn.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        start = time.monotonic()
        assert conn.recv(200) == b"", "closed without an answer"
        assert time.monotonic() - start < 5, "--request-timeout=1s"
    # A client that never finishes its TLS handshake holds nothing up either.
    with socket.create_connection(("127.0.0.1", warn.port), timeout=10) as idle, tls_client(warn) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.recv(200).startswith(b"HTTP/1.0 200")
        assert idle.recv(10) == b""


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    first = server_tls("kvmount-admission", ["localhost"])
    (tmp_path / "tls.crt").write_bytes(first.cert_pem)
    (tmp_path / "tls.key").write_bytes(first.key_pem)
    webhook = start_webhook((first.ca_pem, tmp_path / "tls.crt", tmp_path / "tls.key"), tmp_path / "log")
    try:
        with tls_client(webhook) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.recv(200).startswith(b"HTTP/1.0 200")
        renewed = server_tls("kvmount-admission", ["localhost"])
        for name, data in (("tls.key", renewed.key_pem), ("tls.crt", renewed.cert_pem)):
            (tmp_path / f"{name}.new").write_bytes(data)
            (tmp_path / f"{name}.new").rename(tmp_path / name)  # as a Secret volume swaps its files
        webhook.ca_pem = renewed.ca_pem
        with tls_client(webhook) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.recv(200).startswith(b"HTTP/1.0 200")
    finally:
        stop_webhook(webhook)
