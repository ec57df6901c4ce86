"""scripts/demo-driver end to end, with the provider double as the provider command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvmount.volume import mounts

pytestmark = pytest.mark.peer  # each test runs kvmount as a process

REPO = Path(__file__).resolve().parents[2]
CLASS = """\
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: {name: sample, namespace: default}
spec:
  provider: double
  parameters:
    file.username: admin
    file.tls/ca.crt: CA
"""


def test_demo_script(tmp_path: Path) -> None:
    class_file = tmp_path / "class.yaml"
    class_file.write_text(CLASS)
    demo = tmp_path / "demo"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "PROVIDER_NAME": "double",
        "PROVIDER_CMD": "$PYTHON -m tests.driver.provider_double --endpoint unix://$PROVIDER_SOCKET",
        "CLASS_FILE": str(class_file),
        "DEMO_DIR": str(demo),
    }
    result = subprocess.run(
        [str(REPO / "scripts" / "demo-driver")], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "./username  5 bytes, mode 644" in result.stdout
    assert "./tls/ca.crt  2 bytes, mode 644" in result.stdout
    assert '"secretProviderClassName": "sample"' in result.stdout
    assert "target path removed" in result.stdout
    assert not [p for p in mounts.mount_points() if p.startswith(str(demo))]


def test_demo_script_default_path(tmp_path: Path) -> None:
    """The default: `kvmount provider` against the Key Vault double."""
    demo = tmp_path / "demo"
    env = {**os.environ, "PYTHON": sys.executable, "DEMO_DIR": str(demo)}
    result = subprocess.run(
        [str(REPO / "scripts" / "demo-driver")], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "./db-password  28 bytes, mode 644" in result.stdout
    assert "correct horse" not in result.stdout, "contents are shown only with SHOW_CONTENT=1"
    assert "target path removed" in result.stdout
    assert not [p for p in mounts.mount_points() if p.startswith(str(demo))]
