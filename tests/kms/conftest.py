"""Running `kvmount kms` as a process, as cryptsetup pipelines and Ceph-CSI would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support import starts_process

Kms = Callable[..., subprocess.CompletedProcess[bytes]]


@pytest.fixture
@starts_process
def kms() -> Kms:
    """kms(action, *args, env=..., stdin=...): the exit status, and stdout and stderr as bytes."""

    def run(
        action: str, *args: str, env: Mapping[str, str] | None = None, stdin: bytes = b""
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "kvmount.cli", "kms", action, *args],
            input=stdin,
            capture_output=True,
            env={**os.environ, **(env or {})},
            timeout=120,
            check=False,
        )

    return run


def write_config(path: Path, entries: dict[str, dict[str, Any]]) -> str:
    path.write_text(json.dumps(entries))
    return str(path)
