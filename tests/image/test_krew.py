"""`kubectl kvmount` as krew installs it: the build's manifest and archives
(scripts/image/kubectl_plugin.py), installed by a real krew and run by a real
kubectl against the real API server, with none of this checkout on the PATH."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
import yaml

from tests.image.archives import ARCHES, IMAGES, built
from tests.peers.kube import CACHE, KubeAPIServer
from tests.support import peer_missing
from tests.test_kubectl_plugin import OBJECTS_WITH_A_TYPO, two_contexts

KREW = CACHE / "bin" / "kubectl-krew"
EM_AARCH64, EM_X86_64 = 183, 62


@pytest.fixture(scope="module")
def manifest() -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load(built("plugin/kvmount.yaml").read_text())
    return loaded


def archive_of(arch: str) -> Path:
    (found,) = (IMAGES / "plugin").glob(f"kubectl-kvmount_v*_linux_{arch}.tar.gz")
    return found


@pytest.fixture
def installed(manifest: dict[str, object], tmp_path: Path) -> dict[str, str]:
    """The environment of a user who ran `kubectl krew install kvmount`: krew's bin on the PATH."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        peer_missing("kubectl is not installed (Debian's or Google's kubectl package)")
    if not KREW.exists():
        peer_missing(f"{KREW} is missing: run scripts/peers/krew.sh")
    root = tmp_path / "krew"
    env = {"PATH": f"{root / 'bin'}:{Path(kubectl).parent}", "HOME": str(tmp_path), "KREW_ROOT": str(root)}
    manifest_file, archive = built("plugin/kvmount.yaml"), archive_of("amd64")
    done = subprocess.run(
        [str(KREW), "install", f"--manifest={manifest_file}", f"--archive={archive}"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return env


def kubectl_kvmount(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "kvmount", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_manifest_names_every_archive_with_its_digest(manifest: dict[str, object]) -> None:
    spec = manifest["spec"]
    assert isinstance(spec, dict)
    platforms = {p["selector"]["matchLabels"]["arch"]: p for p in spec["platforms"]}
    assert sorted(platforms) == sorted(ARCHES)
    for arch, platform in platforms.items():
        archive = archive_of(arch)
        assert platform["uri"].endswith("/" + archive.name)
        assert platform["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
        with tarfile.open(archive) as tar:
            interpreter = tar.extractfile("kubectl-kvmount/bin/python3.11")
            assert interpreter is not None
            header = interpreter.read(20)
        machine = int.from_bytes(header[18:20], "little")
        assert machine == {"amd64": EM_X86_64, "arm64": EM_AARCH64}[arch], arch


def test_krew_installs_a_plugin_that_validates_files_and_the_cluster(
    installed: dict[str, str], secrets_store_api: KubeAPIServer, tmp_path: Path
) -> None:
    namespace = f"ns-{uuid.uuid4().hex[:8]}"
    spc = {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "app"},
        "spec": {
            "provider": "azure",
            "parameters": {"keyvaultName": "kv", "tenantId": "tenant", "objects": OBJECTS_WITH_A_TYPO},
        },
    }
    manifest = tmp_path / "class.yaml"
    manifest.write_text(yaml.safe_dump(spc))
    done = kubectl_kvmount(installed, "validate", "-f", str(manifest))
    assert done.returncode == 1 and "did you mean 'objectAlias'" in done.stdout, done.stdout + done.stderr
    # The cluster's classes, through the official client the archive carries (the image has none).
    secrets_store_api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    secrets_store_api.apply(spc, namespace=namespace)
    config = two_contexts(secrets_store_api, tmp_path / "config", namespace)
    done = kubectl_kvmount(installed, "validate", f"--kubeconfig={config}", "--context=test")
    assert done.returncode == 1 and f"{namespace}/app" in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
