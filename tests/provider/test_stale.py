"""--serve-stale-on-error: through a Key Vault outage, a new mount of an identity that was
served an object within the window gets that content, with a note naming it; any other
identity, or an object Key Vault has since refused, gets the error."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from kvmount.csi.attributes import SA_TOKENS
from kvmount.csi.provider_client import STALE_METADATA
from tests.peers.keyvault_double import KeyVaultDouble
from tests.provider.conftest import VAULT, Provider, start_provider, stop_provider
from tests.provider.test_coalescing import sa_token

pytestmark = pytest.mark.peer  # its fixtures and tests start kvmount as a process


@pytest.fixture(scope="module")
def stale_provider(keyvault: KeyVaultDouble, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    started = start_provider(tmp_path_factory.mktemp("stale"), keyvault, "--serve-stale-on-error=10m")
    yield started
    stop_provider(started)


@contextmanager
def outage(keyvault: KeyVaultDouble, status: int) -> Iterator[None]:
    keyvault.set_outage(status)
    try:
        yield
    finally:
        keyvault.set_outage(0)


def mount(
    provider: Provider, attributes: dict[str, str], secrets: dict[str, str] | None
) -> tuple[dict[str, bytes], str]:
    """The files of a new mount, and the stale-content note the provider sent ("" if none)."""
    response, call = provider.stub.Mount.with_call(provider.request(attributes, secrets), timeout=60)
    notes = [str(v) for k, v in call.trailing_metadata() or () if k == STALE_METADATA]
    return {f.path: f.contents for f in response.files}, "".join(notes)


def principal(keyvault: KeyVaultDouble) -> dict[str, str]:
    client, secret = f"st-app-{os.urandom(3).hex()}", f"st-secret-{os.urandom(8).hex()}"
    keyvault.register_aad_client(client, secret=secret)
    return {"clientid": client, "clientsecret": secret}


def seeded(keyvault: KeyVaultDouble, size: int = 0) -> str:
    name = f"st-{os.urandom(4).hex()}"
    keyvault.put_secret(VAULT, name, f"value of {name}".ljust(size, "x"))
    return name


def stale_served(provider: Provider) -> float:
    found = re.search(r"^keyvault_stale_served_total\{[^}]*\} (\S+)$", provider.metrics(), re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("status", [429, 503, -1], ids=["throttled", "5xx", "connection-dropped"])
def test_a_new_mount_of_the_same_identity_rides_out_an_outage(
    stale_provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], status: int
) -> None:
    name = seeded(keyvault)
    attributes = stale_provider.attributes([{"objectName": name, "objectType": "secret"}])
    assert mount(stale_provider, attributes, sp) == ({name: f"value of {name}".encode()}, "")
    before = stale_served(stale_provider)
    with outage(keyvault, status):
        files, note = mount(stale_provider, attributes, sp)
        assert files == {name: f"value of {name}".encode()}
        assert f"secret {name!r}" in note and " old (Key Vault " in note, note
        with pytest.raises(grpc.RpcError) as other:
            mount(stale_provider, attributes, principal(keyvault))
        assert other.value.code() is grpc.StatusCode.UNAVAILABLE, "another identity never gets it"
    assert stale_served(stale_provider) == before + 1
    keyvault.put_secret(VAULT, name, "rotated")
    assert mount(stale_provider, attributes, sp) == ({name: b"rotated"}, ""), "Key Vault back: fresh"


def test_a_refusal_drops_the_kept_content(
    stale_provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]
) -> None:
    name = seeded(keyvault)
    attributes = stale_provider.attributes([{"objectName": name, "objectType": "secret"}])
    mount(stale_provider, attributes, sp)
    keyvault.deny_object(VAULT, "secrets", name)
    try:
        with pytest.raises(grpc.RpcError) as denied:
            mount(stale_provider, attributes, sp)
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    finally:
        keyvault.deny_object(VAULT, "secrets", name, deny=False)
    with outage(keyvault, 429), pytest.raises(grpc.RpcError) as failed:
        mount(stale_provider, attributes, sp)
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE


def test_workload_identity_still_exchanges_the_pods_own_token(
    stale_provider: Provider, keyvault: KeyVaultDouble
) -> None:
    name = seeded(keyvault)
    client, subject = f"st-wi-{os.urandom(3).hex()}", "system:serviceaccount:shop:web"
    keyvault.register_aad_client(client, federated=[subject])

    def attributes() -> dict[str, str]:  # a new pod: a token of its own
        tokens = json.dumps({"api://AzureADTokenExchange": {"token": sa_token(subject)}})
        objects = [{"objectName": name, "objectType": "secret"}]
        return stale_provider.attributes(objects, clientID=client, **{SA_TOKENS: tokens})

    mount(stale_provider, attributes(), None)
    with outage(keyvault, 503):
        assert mount(stale_provider, attributes(), None)[0] == {name: f"value of {name}".encode()}
        keyvault.register_aad_client(client, federated=[])  # the federation removed
        with pytest.raises(grpc.RpcError) as refused:
            mount(stale_provider, attributes(), None)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_a_selection_rides_out_an_outage_on_its_last_listing(
    stale_provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]
) -> None:
    prefix = f"st-{os.urandom(4).hex()}"
    for suffix in ("a", "b"):
        keyvault.put_secret(VAULT, f"{prefix}-{suffix}", f"value {suffix}")
    selecting = [{"objectNamePattern": f"{prefix}-*", "objectType": "secret", "objectAlias": "sel"}]
    attributes = stale_provider.attributes(selecting)
    expected = {f"sel/{prefix}-a": b"value a", f"sel/{prefix}-b": b"value b"}
    assert mount(stale_provider, attributes, sp) == (expected, "")
    with outage(keyvault, 429):
        files, note = mount(stale_provider, attributes, sp)
        assert files == expected
        assert f"secrets matching '{prefix}-*'" in note and f"secret '{prefix}-a'" in note, note
        with pytest.raises(grpc.RpcError) as other:
            mount(stale_provider, attributes, principal(keyvault))
        assert other.value.code() is grpc.StatusCode.UNAVAILABLE, "another identity never gets the listing"
    # A listing Key Vault refuses (the list permission taken away) is dropped at once.
    keyvault.deny_list(VAULT, "secrets")
    try:
        with pytest.raises(grpc.RpcError) as denied:
            mount(stale_provider, attributes, sp)
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    finally:
        keyvault.deny_list(VAULT, "secrets", deny=False)
    with outage(keyvault, 503), pytest.raises(grpc.RpcError) as failed:
        mount(stale_provider, attributes, sp)
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "matching" in str(failed.value.details()), failed.value.details()


def test_off_by_default(provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]) -> None:
    name = seeded(keyvault)
    attributes = provider.attributes([{"objectName": name, "objectType": "secret"}])
    mount(provider, attributes, sp)
    with outage(keyvault, 503), pytest.raises(grpc.RpcError) as failed:
        mount(provider, attributes, sp)
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE


def test_the_byte_bound_drops_the_oldest(
    keyvault: KeyVaultDouble, sp: dict[str, str], tmp_path: Path
) -> None:
    # Each entry counts its content and 512 bytes: two fit in 7,000, a third drops the first.
    provider = start_provider(tmp_path, keyvault, "--serve-stale-on-error=10m", "--stale-cache-bytes=7000")
    try:
        first, second = seeded(keyvault, 2500), seeded(keyvault, 2500)
        specs = {n: provider.attributes([{"objectName": n, "objectType": "secret"}]) for n in (first, second)}
        for attributes in specs.values():
            mount(provider, attributes, sp)
        big = seeded(keyvault, 2500)
        mount(provider, provider.attributes([{"objectName": big, "objectType": "secret"}]), sp)
        with outage(keyvault, 503):
            with pytest.raises(grpc.RpcError):
                mount(provider, specs[first], sp)
            assert mount(provider, specs[second], sp)[0] == {
                second: f"value of {second}".ljust(2500, "x").encode()
            }
    finally:
        stop_provider(provider)
