"""The whole node path on one machine: kubelet-style publish -> `kvmount driver` ->
`kvmount provider` -> the Key Vault double -> files on tmpfs."""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from tests.driver.conftest import Driver, await_socket, make_pod, start_driver, stop_driver
from tests.support import start_daemon, starts_process

VAULT = "kvtest"


@pytest.fixture(scope="module")
def kv(request: pytest.FixtureRequest) -> Any:
    try:
        return request.getfixturevalue("keyvault")
    except pytest.FixtureLookupError:
        pytest.skip("no keyvault fixture in tests/conftest.py yet")


@pytest.fixture(scope="module")
@starts_process
def azure_driver(kv: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driver]:
    base = tmp_path_factory.mktemp("e2e")
    providers = base / "providers"
    providers.mkdir()
    sock, log = providers / "azure.sock", base / "provider.log"
    env = {**os.environ, **kv.env()}
    cmd = [
        sys.executable, "-m", "kvmount.cli", "provider", f"--endpoint=unix://{sock}",
        "--healthz-port=0", "--prometheus-port=0", f"--cloud-env-dirs={base}",
        "--serve-stale-on-error=10m",
    ]  # fmt: skip
    provider = start_daemon("provider", cmd, log, env=env)
    try:
        await_socket(sock, provider)
        driver = start_driver(base, providers)
        yield driver
        stop_driver(driver)
    finally:
        provider.stop(timeout=40)


def write_azure_class(driver: Driver, kv: Any, name: str, objects: list[dict[str, str]]) -> None:
    env_file = driver.classes_dir.parent / "azurestack.json"
    env_file.write_text(
        json.dumps(
            {
                "name": "AzureStackCloud",
                "activeDirectoryEndpoint": f"{kv.authority}/",
                "keyVaultDNSSuffix": f"vault.localhost:{kv.port}",
            }
        )
    )
    driver.write_class(
        name,
        {
            "keyvaultName": VAULT,
            "tenantId": kv.tenant,
            "cloudName": "AzureStackCloud",
            "cloudEnvFileName": str(env_file),
            "objects": yaml.safe_dump({"array": [yaml.safe_dump(o) for o in objects]}),
        },
        provider="azure",
    )


def test_secret_from_key_vault_through_driver_and_provider(
    azure_driver: Driver, kv: Any, kubelet_dir: Path
) -> None:
    name = f"e2e-{secrets.token_hex(4)}"
    kv.put_secret(VAULT, name, "first value")
    client_secret = f"sp-{secrets.token_hex(12)}"
    kv.register_aad_client("e2e-app", secret=client_secret)
    write_azure_class(
        azure_driver, kv, "kv", [{"objectName": name, "objectType": "secret", "objectAlias": "db"}]
    )
    pod = make_pod(kubelet_dir)
    node_secret = {"clientid": "e2e-app", "clientsecret": client_secret}
    azure_driver.node.NodePublishVolume(pod.publish_request("kv", secrets=node_secret), timeout=60)
    assert (pod.target / "db").read_text() == "first value"
    status_file = azure_driver.state_dir / "podstatuses" / "default" / "web-default-kv.json"
    (obj,) = json.loads(status_file.read_text())["status"]["objects"]
    assert obj["id"] == f"secret/{name}" and obj["version"]
    assert client_secret not in azure_driver.log.read_text()
    azure_driver.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=60)
    assert not pod.target.exists()

    # A Key Vault refusal reaches kubelet as a status naming the class and provider; nothing is left.
    missing = make_pod(kubelet_dir)
    write_azure_class(azure_driver, kv, "gone", [{"objectName": "no-such-secret", "objectType": "secret"}])
    with pytest.raises(grpc.RpcError) as info:
        azure_driver.node.NodePublishVolume(missing.publish_request("gone", secrets=node_secret), timeout=60)
    assert "SecretProviderClass default/gone" in str(info.value.details())
    assert "provider 'azure'" in str(info.value.details())
    assert not missing.target.exists()


def test_a_new_pod_starts_through_a_key_vault_outage(
    azure_driver: Driver, kv: Any, kubelet_dir: Path
) -> None:
    """With --serve-stale-on-error, a pod of an identity served minutes ago starts while Key
    Vault throttles, and the pod's event (the log, standalone) says the content is stale."""
    name = f"e2e-{secrets.token_hex(4)}"
    kv.put_secret(VAULT, name, "kept value")
    client_secret = f"sp-{secrets.token_hex(12)}"
    kv.register_aad_client("e2e-stale", secret=client_secret)
    write_azure_class(azure_driver, kv, "kept", [{"objectName": name, "objectType": "secret"}])
    node_secret = {"clientid": "e2e-stale", "clientsecret": client_secret}
    first = make_pod(kubelet_dir, "replica-1")
    azure_driver.node.NodePublishVolume(first.publish_request("kept", secrets=node_secret), timeout=60)
    kv.set_outage(429)
    try:
        second = make_pod(kubelet_dir, "replica-2")
        azure_driver.node.NodePublishVolume(second.publish_request("kept", secrets=node_secret), timeout=60)
    finally:
        kv.set_outage(0)
    assert (second.target / name).read_text() == "kept value"
    [event] = [line for line in azure_driver.log.read_text().splitlines() if "StaleContentServed" in line]
    assert "replica-2" in event and f"secret {name!r}" in event and "HTTP 429" in event, event
    for pod in (first, second):
        azure_driver.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=60)
