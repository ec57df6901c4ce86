"""The workstation tools without the ``cli`` extra: `kvmount doctor` and `validate --cluster` need
the kubernetes package (users' kubeconfigs run exec credential plugins, which only it runs); the
image leaves it out. Missing, they say which extra to install, in one line, and exit 2. A missing
module is a fault no installed part produces on demand: the child process blocks the import."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.peers.kube import KubeAPIServer

MISSING = "the Kubernetes client (the kubernetes package) is not installed: pip install 'kvmount[cli]'"
# None in sys.modules makes every `import kubernetes...` raise ImportError, as when it is absent.
BLOCKED = "import sys; sys.modules['kubernetes'] = None; from kvmount.cli import main; sys.exit(main())"
WITH_CLIENT = "import sys; from kvmount.cli import main; sys.exit(main())"


def _run(program: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", program, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [["validate", "--cluster"], ["doctor", "--pod", "default/web"], ["doctor", "--class", "app"]],
    ids=["validate", "doctor-pod", "doctor-class"],
)
def test_without_the_cli_extra(secrets_store_api: KubeAPIServer, args: list[str]) -> None:
    kubeconfig = f"--kubeconfig={secrets_store_api.kubeconfig}"
    # With the package, the same command reaches the API server (not vacuous).
    answered = _run(WITH_CLIENT, *args, kubeconfig)
    assert answered.returncode in (0, 1), answered.stderr[-2000:]
    assert "kvmount[cli]" not in answered.stdout + answered.stderr
    missing = _run(BLOCKED, *args, kubeconfig)
    assert (missing.returncode, missing.stdout) == (2, ""), missing.stderr[-2000:]
    assert missing.stderr.splitlines() == [f"kvmount {args[0]}: {MISSING}"]
