"""bench/compare.py runs end to end with minimal iterations (providers only) and writes its tables.

The numbers of such a run mean nothing; this only keeps the benchmark from rotting.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.peers.upstream import PROVIDER_BINARY, require

pytestmark = pytest.mark.peer  # each test runs kvmount as a process

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_writes_the_measured_tables(tmp_path: Path) -> None:
    require(PROVIDER_BINARY)
    out = tmp_path / "RESULTS.md"
    out.write_text("# kept\n\n<!-- measured:begin -->\nold\n<!-- measured:end -->\n\nkept too\n")
    run = subprocess.run(
        [sys.executable, "bench/compare.py", "--quick", "--skip-driver", f"--out={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# kept\n") and text.rstrip().endswith("kept too")
    assert "\nold\n" not in text
    for table in ("### Targets (issue 14)", "### Providers", "### Rotation", "### Scale on paper"):
        assert table in text
    assert "| mount p50, 50 objects, 20 ms latency |" in text
