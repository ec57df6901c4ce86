"""Hostile Key Vault answers at the provider: too large (decoded), endless, or drip-fed.

Each is refused while it arrives, naming the object, and a drip-fed read gives its
fetch worker back when its Mount ends, so a slow vault never stalls other pods.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from tests.peers.keyvault_double import Fault, KeyVaultDouble
from tests.provider.conftest import VAULT, Provider, start_provider, stop_provider
from tests.support import starts_process


@pytest.fixture(scope="module")
@starts_process
def small(keyvault: KeyVaultDouble, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """A provider of four fetch workers, a 2 MiB mount budget and no per-object cap to speak of."""
    started = start_provider(
        tmp_path_factory.mktemp("bounded"),
        keyvault,
        "--max-concurrent-fetches=4",
        "--max-mount-bytes=2097152",
        "--max-object-bytes=1073741824",
    )
    yield started
    stop_provider(started)


def new_sp(kv: KeyVaultDouble) -> dict[str, str]:
    client_id, secret = f"app-{os.urandom(4).hex()}", f"sp-secret-{os.urandom(12).hex()}"
    kv.register_aad_client(client_id, secret=secret)
    return {"clientid": client_id, "clientsecret": secret}


def seeded(kv: KeyVaultDouble, prefix: str, fault: Fault | None = None) -> str:
    name = f"{prefix}-{os.urandom(4).hex()}"
    kv.put_secret(VAULT, name, "value")
    if fault is not None:
        kv.set_faults(Fault(**{**fault.__dict__, "count": 100, "path": name}))
    return name


def mount(provider: Provider, name: str, sp: dict[str, str], timeout: float) -> grpc.RpcError | None:
    request = provider.request(provider.attributes([{"objectName": name, "objectType": "secret"}]), sp)
    try:
        provider.stub.Mount(request, timeout=timeout)
    except grpc.RpcError as err:
        return err
    return None


@pytest.mark.parametrize(
    "fault",
    [Fault("gzip-bomb", size=64 << 20), Fault("huge-body", size=8 << 20)],
    ids=["gzip-bomb", "huge-body"],
)
def test_an_answer_past_the_object_cap_is_refused_naming_the_object(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], fault: Fault
) -> None:
    name = seeded(keyvault, fault.kind, fault)
    try:
        err = mount(provider, name, sp, timeout=30)
    finally:
        keyvault.set_faults()
    assert err is not None and err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert name in str(err.details()) and "--max-object-bytes" in str(err.details())


def test_an_endless_answer_is_refused_at_the_mount_budget(
    small: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]
) -> None:
    # size: a safety stop for a provider without bounds (the test then fails, not the machine).
    name = seeded(keyvault, "endless", Fault("endless-chunked", size=256 << 20))
    try:
        err = mount(small, name, sp, timeout=30)
    finally:
        keyvault.set_faults()
    assert err is not None and err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert name in str(err.details()) and "--max-mount-bytes" in str(err.details())


def test_drip_fed_mounts_give_their_workers_back_to_another_identity(
    small: Provider, keyvault: KeyVaultDouble
) -> None:
    healthy = seeded(keyvault, "healthy")
    # The provider is warm (the Azure SDK loaded on its first Mount) before the clock matters.
    assert mount(small, healthy, new_sp(keyvault), timeout=60) is None
    prefix = f"drip-{os.urandom(4).hex()}"
    # A byte every half second, for longer than the test: each byte would restart a
    # per-recv timeout. One identity each, so each holds a worker of its own.
    keyvault.set_faults(Fault("drip", count=100, path=prefix, seconds=0.5, size=100_000))
    dripped = [seeded(keyvault, f"{prefix}-{i}") for i in range(4)]
    failures: dict[str, grpc.RpcError | None] = {}

    # Long enough for each drip mount's token request to be done and its read begun on a
    # loaded machine; the healthy mount below outlives them, so it passes only if their
    # workers are given back when they end (the drip itself lasts far longer).
    def drip_mount(name: str) -> None:
        failures[name] = mount(small, name, new_sp(keyvault), timeout=30)

    threads = [threading.Thread(target=drip_mount, args=(name,)) for name in dripped]
    try:
        for thread in threads:
            thread.start()
        # Wait until all four workers are held by a drip.
        end = time.monotonic() + 30
        while len({r["path"] for r in keyvault.requests() if r.get("fault") == "drip"}) < 4:
            assert time.monotonic() < end, "the four drip-fed reads did not start"
            time.sleep(0.05)
        assert mount(small, healthy, new_sp(keyvault), timeout=60) is None
        for thread in threads:
            thread.join(timeout=65)
    finally:
        keyvault.set_faults()
    assert sorted(failures) == sorted(dripped)
    for err in failures.values():
        assert err is not None and err.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ), err
