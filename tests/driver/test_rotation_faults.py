"""Rotation while Key Vault fails: `kvmount driver` (standalone, rotating every second) in
front of `kvmount provider` and the Key Vault double with injected faults.

A passing failure (throttling) is retried within the provider's budget and the rotation
lands; a lasting one (connection resets) fails the round with a clear error while the
volume keeps its last good files, and the next healthy round rotates.
"""

from __future__ import annotations

import re
import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.driver.conftest import Driver, make_pod, start_driver, stop_driver
from tests.peers.keyvault_double import Fault, KeyVaultDouble
from tests.provider.conftest import VAULT, Provider, start_provider, stop_provider
from tests.support import eventually, starts_process


@pytest.fixture(scope="module")
@starts_process
def stack(
    keyvault: KeyVaultDouble, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Provider, Driver]]:
    base = tmp_path_factory.mktemp("rotation-faults")
    providers = base / "providers"
    providers.mkdir()
    # The driver finds the provider's socket, azure.sock, in its --provider-volume.
    provider = start_provider(providers, keyvault, "--coalesce-seconds=0")
    try:
        driver = start_driver(base, providers, "--enable-secret-rotation", "--rotation-poll-interval=1s")
        yield provider, driver
        stop_driver(driver)
    finally:
        stop_provider(provider)


def rotation_errors(driver: Driver) -> int:
    url = f"http://127.0.0.1:{driver.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        int(float(n)) for n in re.findall(r"^rotation_reconcile_error_total\{[^}]*\} (\S+)$", text, re.M)
    )


def statuses(keyvault: KeyVaultDouble, name: str) -> list[int]:
    return [
        int(r["status"])
        for r in keyvault.requests()
        if r.get("service") == "keyvault" and r.get("path", "").startswith(f"/secrets/{name}")
    ]


def test_rotation_retries_a_passing_failure_and_keeps_old_files_through_a_lasting_one(
    stack: tuple[Provider, Driver], keyvault: KeyVaultDouble, kubelet_dir: Path
) -> None:
    provider, driver = stack
    sp = {"clientid": f"app-{secrets.token_hex(4)}", "clientsecret": secrets.token_hex(12)}
    keyvault.register_aad_client(sp["clientid"], secret=sp["clientsecret"])
    name = f"rot-{secrets.token_hex(4)}"
    keyvault.put_secret(VAULT, name, "before")
    objects = yaml.safe_dump({"array": [yaml.safe_dump({"objectName": name, "objectType": "secret"})]})
    driver.write_class("kv", {**provider.attributes([]), "objects": objects}, provider="azure")
    pod = make_pod(kubelet_dir)
    driver.node.NodePublishVolume(pod.publish_request("kv", secrets=sp), timeout=60)
    assert (pod.target / name).read_text() == "before"
    try:
        # Throttled twice with Retry-After: the round waits it out and rotates.
        keyvault.reset_log()
        keyvault.set_faults(Fault("status", count=2, path=name, status=429, retry_after="1"))
        keyvault.put_secret(VAULT, name, "during")
        eventually(
            lambda: (pod.target / name).read_text() == "during", timeout=30, what="rotated through throttling"
        )
        assert statuses(keyvault, name)[:2] == [429, 429]

        # Every connection reset: rounds fail with a clear error, the files stay as they were.
        errors = rotation_errors(driver)
        keyvault.set_faults(Fault("reset", count=10_000, path=name))
        keyvault.put_secret(VAULT, name, "after")
        eventually(lambda: rotation_errors(driver) > errors, timeout=30, what="a failed rotation round")
        assert (pod.target / name).read_text() == "during"
        assert sorted(p.name for p in pod.target.iterdir() if not p.name.startswith("..")) == [name]
        log = driver.log.read_text()
        assert f"secret '{name}'" in log and "unreachable or failing" in log
    finally:
        keyvault.set_faults()
    eventually(
        lambda: (pod.target / name).read_text() == "after",
        timeout=30,
        what="rotated once Key Vault recovered",
    )
    driver.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=60)
