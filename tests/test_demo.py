"""The README's first command, scripts/demo, end to end: `kvmount mount` and, as root, the CSI path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.peer  # each test runs kvmount as a process

REPO = Path(__file__).resolve().parents[1]


def test_readme_demo_runs_end_to_end() -> None:
    # scripts/demo is scripts/setup + hosts.sh + this script; the test runs in the set-up venv.
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "correct horse battery staple" in done.stdout  # the mount of the class file
    if os.geteuid() == 0:
        assert "== NodePublishVolume" in done.stdout and "target path removed" in done.stdout
        assert "publish failed" not in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
