"""`kubectl kvmount`: the package's kubectl-kvmount entry point, run by a real kubectl against the
real API server, with kubectl's --kubeconfig, --context and -n, and validate's -f."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from tests.peers.kube import KubeAPIServer
from tests.support import peer_missing

PLUGIN = Path(sys.executable).parent / "kubectl-kvmount"
OBJECTS_WITH_A_TYPO = "array:\n  - |\n    objectName: db\n    objectType: secret\n    objectAlais: x\n"


@pytest.fixture
def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        reason = "kubectl is not installed (Debian's or Google's kubectl package)"
        peer_missing(reason)
    return found


def two_contexts(server: KubeAPIServer, path: Path, namespace: str) -> Path:
    """The admin kubeconfig plus a current context that reaches nothing: only --context test works."""
    doc = yaml.safe_load(server.kubeconfig.read_text())
    real = doc["contexts"][0]
    doc["contexts"] = [
        {"name": "test", "context": {**real["context"], "namespace": namespace}},
        {"name": "elsewhere", "context": {"cluster": "nowhere", "user": real["context"]["user"]}},
    ]
    doc["clusters"].append({"name": "nowhere", "cluster": {"server": "https://127.0.0.1:1"}})
    doc["current-context"] = "elsewhere"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(kubectl: str, *args: str) -> subprocess.CompletedProcess[str]:
    # kubectl finds plugins on PATH: the package's scripts directory first.
    env = {**os.environ, "PATH": f"{PLUGIN.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("KUBECONFIG", None)
    return subprocess.run(
        [kubectl, "kvmount", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_package_installs_the_plugin() -> None:
    (script,) = entry_points(group="console_scripts", name="kubectl-kvmount")
    assert script.value == "kvmount.cli:kubectl_main"
    assert os.access(PLUGIN, os.X_OK), f"{PLUGIN} missing: reinstall the package (scripts/setup)"


def test_doctor_through_kubectl_takes_its_context_and_namespace(
    kubectl: str, kube_apiserver: KubeAPIServer, tmp_path: Path
) -> None:
    namespace = f"ns-{uuid.uuid4().hex[:8]}"
    kube_apiserver.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    config = two_contexts(kube_apiserver, tmp_path / "config", namespace)
    done = run(kubectl, "doctor", "--pod", "web-0", f"--kubeconfig={config}", "--context", "test")
    assert f"{namespace}/web-0" in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "127.0.0.1:1" not in done.stdout
    # The current context reaches no API server: the doctor says so, in one row.
    done = run(kubectl, "doctor", "--pod", "web-0", f"--kubeconfig={config}", "-n", namespace)
    assert done.returncode == 1 and "API server" in done.stdout, done.stdout + done.stderr


def test_validate_through_kubectl_reads_files_and_the_cluster(
    kubectl: str, secrets_store_api: KubeAPIServer, tmp_path: Path
) -> None:
    manifest = tmp_path / "class.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "secrets-store.csi.x-k8s.io/v1",
                "kind": "SecretProviderClass",
                "metadata": {"name": "app"},
                "spec": {
                    "provider": "azure",
                    "parameters": {
                        "keyvaultName": "kv",
                        "tenantId": "tenant",
                        "objects": OBJECTS_WITH_A_TYPO,
                    },
                },
            }
        )
    )
    done = run(kubectl, "validate", "-f", str(manifest))
    assert done.returncode == 1 and "objectAlais" in done.stdout, done.stdout + done.stderr
    namespace = f"ns-{uuid.uuid4().hex[:8]}"
    secrets_store_api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    secrets_store_api.apply(yaml.safe_load(manifest.read_text()), namespace=namespace)
    config = two_contexts(secrets_store_api, tmp_path / "config", namespace)
    # The context's namespace, as kubectl's -n default.
    secrets_store_api.apply(
        {
            "apiVersion": "secret-sync.x-k8s.io/v1alpha1",
            "kind": "SecretSync",
            "metadata": {"name": "app-sync"},
            "spec": {
                "secretProviderClassName": "app",
                "serviceAccountName": "app",
                "secretObject": {
                    "type": "kubernetes.io/service-account-token",
                    "data": [{"sourcePath": "db", "targetKey": "db"}],
                },
            },
        },
        namespace=namespace,
    )
    done = run(kubectl, "validate", f"--kubeconfig={config}", "--context=test")
    assert done.returncode == 1 and f"{namespace}/app:" in done.stdout, done.stdout + done.stderr
    assert f"SecretSync {namespace}/app-sync: error: spec.secretObject.type:" in done.stdout, done.stdout
