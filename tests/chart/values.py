"""The chart under test, `helm template` of it, and the values that switch every feature on."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.compat.upstream import helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kvmount"
Doc = dict[str, Any]

ALL_FEATURES: Doc = {
    "secrets-store-csi-driver": {
        "syncSecret": {"enabled": True},
        "enableSecretRotation": True,
        "rotation": {"restartWorkloads": True, "restartMinInterval": "10m"},
        "providerHealthCheck": True,
    },
    "flexvolume": {"enabled": True},
    "syncController": {"enabled": True},
    "staleOnError": "15m",
    "admission": {"enabled": True, "denyInvalid": True},
    "logVerbosity": 2,
    "logFormatJSON": True,
}


def helm_template(
    values: Doc, namespace: str = "kube-system", include_crds: bool = False, chart: Path = CHART
) -> list[Doc]:
    """The documents `helm template` renders (it must succeed)."""
    done = template(values, namespace, include_crds, chart)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def template(
    values: Doc, namespace: str = "kube-system", include_crds: bool = False, chart: Path = CHART
) -> subprocess.CompletedProcess[str]:
    argv = [str(helm()), "template", "kvmount", str(chart), "--namespace", namespace, "--values", "-"]
    argv += ["--kube-version", "1.34.0"] + (["--include-crds"] if include_crds else [])
    return subprocess.run(argv, input=json.dumps(values), capture_output=True, text=True, timeout=120)
