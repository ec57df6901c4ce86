"""Upstream's released sources and helm, for the tests that hold kvmount to upstream's manifests.

The sources are the Go modules of secrets-store-csi-driver v1.6.0 and
secrets-store-csi-driver-provider-azure v1.8.2, found with ``go mod download``
(cached in GOMODCACHE after the first run: scripts/peers/upstream-*.sh download
them too). helm is installed by scripts/peers/helm.sh. A missing one skips the
test, naming what installs it, except under CI, where it fails.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support import peer_missing

DRIVER_MODULE = ("sigs.k8s.io/secrets-store-csi-driver", "v1.6.0")
PROVIDER_MODULE = ("github.com/Azure/secrets-store-csi-driver-provider-azure", "v1.8.2")
CACHE = Path(os.environ.get("KVMOUNT_CACHE", Path.home() / ".cache" / "kvmount"))
HELM = CACHE / "bin" / "helm"
# Where each upstream container's image is swapped for kvmount, and the subcommand it runs.
COMPONENTS = {"secrets-store": "driver", "provider-azure-installer": "provider"}
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

Doc = dict[str, Any]


def missing(what: str, installer: str) -> None:
    message = f"{what} is not available: run {installer}"
    peer_missing(message)


def _go() -> str | None:
    return shutil.which("go") or next((g for g in ["/usr/local/go/bin/go"] if os.access(g, os.X_OK)), None)


@functools.cache
def _download(module: str, version: str) -> Path | None:
    go = _go()
    if go is None:
        return None
    # From / so that no go.mod is consulted; a cached module needs no network.
    out = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@{version}"], cwd="/", capture_output=True, text=True
    )
    try:
        directory = Path(json.loads(out.stdout)["Dir"])
    except (ValueError, KeyError):
        return None
    return directory if directory.is_dir() else None


def module_dir(module: str, version: str) -> Path:
    directory = _download(module, version)
    if directory is None:
        peer = "upstream-driver" if module == DRIVER_MODULE[0] else "upstream-provider"
        missing(f"Go module {module}@{version} (go mod download)", f"scripts/peers/{peer}.sh")
        raise AssertionError("unreachable")  # missing() skips or fails
    return directory


def helm() -> Path:
    if not os.access(HELM, os.X_OK):
        missing("helm", "scripts/peers/helm.sh")
    return HELM


def render(chart: Path, values: Doc) -> list[Doc]:
    """``helm template`` of a chart with values, as the documents it renders."""
    out = subprocess.run(
        [str(helm()), "template", "kvmount-test", str(chart), "--namespace", "kube-system",
         "--kube-version", "1.34.0", "--values", "-"],
        input=json.dumps(values), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def daemonset_containers(docs: list[Doc]) -> list[tuple[Doc, Doc]]:
    """(pod spec, container) of each Linux DaemonSet container that kvmount replaces."""
    found = []
    for doc in docs:
        if doc.get("kind") != "DaemonSet":
            continue
        spec = doc["spec"]["template"]["spec"]
        if spec.get("nodeSelector", {}).get("kubernetes.io/os") == "windows":
            continue
        found += [(spec, c) for c in spec["containers"] if c["name"] in COMPONENTS]
    return found


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of args and env values: unknown names stay, $$ is $."""
    return _VAR.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)
