"""Each daemon the image runs, started for real, imports neither the kubernetes package nor
pydantic (the image leaves them out; the driver's and the sync controller's own tests, in
tests/driver/test_kube.py and tests/synccontroller/test_imports.py, do the same through the API
server). Python's import report (PYTHONPROFILEIMPORTTIME) covers imports made at any time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.certs import make_chain
from tests.driver.conftest import start_driver, stop_driver
from tests.driver.test_sidecars import Sidecar, healthz
from tests.imports import PROFILE, assert_lean
from tests.kms.conftest import credentials_secret, kms_entry, volume_id, write_config
from tests.peers.keyvault_double import KeyVaultDouble
from tests.provider.conftest import VAULT, start_provider, stop_provider
from tests.support import eventually, free_port

pytestmark = pytest.mark.peer  # each test runs kvmount as a process


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvmount.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {}), **PROFILE},
        timeout=120,
        check=False,
    )


def test_provider(keyvault: KeyVaultDouble, tmp_path: Path) -> None:
    name, client_id, secret = f"lean-{uuid.uuid4().hex[:6]}", f"app-{uuid.uuid4().hex[:6]}", "sp-secret"
    keyvault.put_secret(VAULT, name, "value")
    keyvault.register_aad_client(client_id, secret=secret)
    provider = start_provider(tmp_path, keyvault, extra_env=PROFILE)
    try:
        response = provider.mount(
            provider.attributes([{"objectName": name, "objectType": "secret"}]),
            {"clientid": client_id, "clientsecret": secret},
        )
        assert [f.contents for f in response.files] == [b"value"]
    finally:
        stop_provider(provider)
    assert_lean(provider.log.read_text(), {"kvmount.provider.server", "azure.keyvault.secrets", "grpc"})


def test_registrar_and_livenessprobe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in PROFILE.items():
        monkeypatch.setenv(name, value)
    # A unix socket path is at most 108 bytes: pytest's tmp_path is too long for the registrar's.
    base = Path(os.path.realpath("/tmp")) / f"kvl-{uuid.uuid4().hex[:6]}"
    base.mkdir()
    registry, providers = base / "registration", base / "providers"
    registry.mkdir()
    providers.mkdir()
    socket, csi = registry / "secrets-store.csi.k8s.io-reg.sock", base / "csi.sock"
    probe_port, registrar_port = free_port(), free_port()
    driver = start_driver(base, providers)
    registrar = Sidecar(
        base,
        "registrar",
        f"--csi-address={csi}",
        "--kubelet-registration-path=/var/lib/kubelet/plugins/csi-secrets-store/csi.sock",
        f"--plugin-registration-path={registry}",
        f"--http-endpoint=127.0.0.1:{registrar_port}",
    )
    probe = Sidecar(base, "livenessprobe", f"--csi-address={csi}", f"--http-endpoint=127.0.0.1:{probe_port}")
    try:
        eventually(socket.exists, timeout=20, what="the registration socket")
        eventually(lambda: healthz(probe_port) == 200, timeout=20, what="the probe's /healthz")
    finally:
        stop_driver(driver)
        logs = registrar.stop(), probe.stop()
        subprocess.run(["rm", "-rf", str(base)], check=True)
    assert_lean(logs[0], {"kvmount.sidecars.common", "grpc"})
    assert_lean(logs[1], {"kvmount.sidecars.common", "grpc"})


def test_kms(keyvault: KeyVaultDouble, tmp_path: Path) -> None:
    """A fetch that reaches Key Vault (signed in with a client certificate) and finds nothing."""
    chain = make_chain("kms-lean")
    client_id = str(uuid.uuid4())
    keyvault.register_aad_client(client_id, cert_pem=chain.pem("leaf"))
    config = write_config(tmp_path / "config.json", {"lean": kms_entry(keyvault, client_id)})
    secret = credentials_secret(tmp_path / "secret.yaml", chain.pfx(()))
    done = _run(
        "kms", "fetch", "--config", config, "--kms-id", "lean", "--credentials", secret,
        "--volume-id", volume_id(), env=keyvault.env(),
    )  # fmt: skip
    assert done.returncode == 3, done.stderr[-2000:]
    assert "no passphrase is stored for this volume" in done.stderr
    assert_lean(done.stderr, {"kvmount.kms.store", "azure.keyvault.secrets"})


def test_flexvolume(tmp_path: Path) -> None:
    """kubelet's calls: init, and a mount (its whole Key Vault and volume path imported) whose
    options it refuses before any call."""
    init = _run("flexvolume", "init")
    assert json.loads(init.stdout.splitlines()[-1])["status"] == "Success"
    assert_lean(init.stderr, {"kvmount.flexvolume.reply"})
    target = tmp_path / "target"
    target.mkdir()
    mount = _run("flexvolume", "mount", str(target), json.dumps({"kubernetes.io/pod.name": "web"}))
    assert "keyvaultname" in mount.stdout
    assert_lean(mount.stderr, {"kvmount.flexvolume.volume", "kvmount.keyvault.scheduling.fetch"})
