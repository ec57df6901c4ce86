"""`kvmount provider` serves its socket without the Azure SDK, which it loads on the first Mount."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.peer  # the test runs a process


def test_the_provider_command_does_not_load_the_azure_sdk() -> None:
    heavy = "{'azure', 'msal', 'requests', 'cryptography'}"
    probe = (
        "import sys, kvmount.provider.command, kvmount.provider.server; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy}))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout
