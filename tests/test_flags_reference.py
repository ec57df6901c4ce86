"""docs/flags.md is what scripts/gen-flags-reference makes of the commands' parsers today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.peer  # a fresh process
def test_flags_reference_is_current() -> None:
    # A fresh process: building every parser must neither print nor take stdout over.
    generated = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_flags_reference.py"), "--stdout"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    current = (REPO / "docs" / "flags.md").read_text(encoding="utf-8")
    assert generated == current, "docs/flags.md is stale: run scripts/gen-flags-reference"
