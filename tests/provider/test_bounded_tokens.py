"""Hostile identity endpoints at the provider: token answers too large (decoded), endless, or drip-fed.

Each route is the real azure-identity SDK (or the provider's NMI client) against the Key
Vault double's own token endpoints: Azure AD for a service principal (through MSAL) and
for workload identity (azure-identity's own client), IMDS for a managed identity, and the
NMI of aad-pod-identity. Each hostile answer pads the real token answer with whitespace,
so a client that held it whole would take it and mount: a refusal naming the cap shows
the answer was counted while it arrived. A drip-fed answer ends with the mount and gives
its fetch worker back.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest

from kvmount.csi.attributes import POD_NAME, POD_NAMESPACE, SA_TOKENS
from tests.peers.keyvault_double import Fault, KeyVaultDouble
from tests.provider.conftest import VAULT, Provider, start_provider, stop_provider
from tests.support import eventually, starts_process


@dataclass(frozen=True)
class Route:
    """A mount of a fresh identity whose token comes from ``service``, and the fault's ``client``."""

    attributes: dict[str, str]
    secrets: dict[str, str] | None
    service: str
    client: str
    # What must never show in an error: the identity's secret, if it has one.
    secret: str = ""


def _service_principal(provider: Provider, kv: KeyVaultDouble, objects: list[dict[str, str]]) -> Route:
    client, secret = f"app-{os.urandom(4).hex()}", f"sp-secret-{os.urandom(12).hex()}"
    kv.register_aad_client(client, secret=secret)
    return Route(
        provider.attributes(objects), {"clientid": client, "clientsecret": secret}, "aad", client, secret
    )


def _workload_identity(
    provider: Provider, kv: KeyVaultDouble, objects: list[dict[str, str]], sa_token: str = ""
) -> Route:
    client, sa_token = f"wi-{os.urandom(4).hex()}", sa_token or f"sa.{os.urandom(8).hex()}.jwt"
    tokens = json.dumps({"api://AzureADTokenExchange": {"token": sa_token, "expirationTimestamp": "x"}})
    attributes = provider.attributes(objects, clientID=client, **{SA_TOKENS: tokens})
    return Route(attributes, None, "aad", client, sa_token)


def _workload_identity_proved(provider: Provider, kv: KeyVaultDouble, objects: list[dict[str, str]]) -> Route:
    """A service account token with a subject: the mount proves its own token first, before
    any fetch (keyvault/identity/credentials.py ``prove``), on the Mount's own thread."""
    claims = {"sub": f"system:serviceaccount:shop:{os.urandom(4).hex()}"}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return _workload_identity(provider, kv, objects, f"e30.{payload}.c2ln")


def _managed_identity(provider: Provider, kv: KeyVaultDouble, objects: list[dict[str, str]]) -> Route:
    client = f"uami-{os.urandom(4).hex()}"
    attributes = provider.attributes(objects, useVMManagedIdentity="true", userAssignedIdentityID=client)
    return Route(attributes, None, "imds", client)


def _pod_identity(provider: Provider, kv: KeyVaultDouble, objects: list[dict[str, str]]) -> Route:
    pod = f"web-{os.urandom(4).hex()}"
    attributes = provider.attributes(objects, usePodIdentity="true", **{POD_NAME: pod, POD_NAMESPACE: "shop"})
    return Route(attributes, None, "nmi", f"shop/{pod}")


ROUTES: dict[str, Callable[[Provider, KeyVaultDouble, list[dict[str, str]]], Route]] = {
    "aad-service-principal": _service_principal,
    "aad-workload-identity": _workload_identity,
    "aad-workload-identity-proved": _workload_identity_proved,
    "imds": _managed_identity,
    "nmi": _pod_identity,
}


def route_to(provider: Provider, kv: KeyVaultDouble, kind: str) -> tuple[str, Route]:
    """A new secret and a new identity reading it along route ``kind``."""
    name = f"tok-{os.urandom(4).hex()}"
    kv.put_secret(VAULT, name, "token-bounded value")
    return name, ROUTES[kind](provider, kv, [{"objectName": name, "objectType": "secret"}])


def mount(provider: Provider, route: Route, timeout: float) -> grpc.RpcError | None:
    try:
        provider.stub.Mount(provider.request(route.attributes, route.secrets), timeout=timeout)
    except grpc.RpcError as err:
        return err
    return None


@pytest.mark.parametrize("kind", list(ROUTES))
@pytest.mark.parametrize(
    "fault",
    # endless-chunked's size: a safety stop for a provider without bounds (the test then fails).
    [
        Fault("gzip-bomb", size=64 << 20),
        Fault("huge-body", size=8 << 20),
        Fault("endless-chunked", size=256 << 20),
    ],
    ids=["gzip-bomb", "huge-body", "endless-chunked"],
)
def test_a_token_answer_past_its_cap_fails_the_mount_naming_the_flag(
    provider: Provider, keyvault: KeyVaultDouble, kind: str, fault: Fault
) -> None:
    _, route = route_to(provider, keyvault, kind)
    keyvault.set_faults(
        Fault(fault.kind, count=100, size=fault.size, service=route.service, client=route.client)
    )
    try:
        started = time.monotonic()
        err = mount(provider, route, timeout=60)
        took = time.monotonic() - started
    finally:
        keyvault.set_faults()
    assert err is not None and err.code() is grpc.StatusCode.UNAUTHENTICATED, err
    details = str(err.details())
    assert "--max-token-answer-bytes" in details and f"keyvault {VAULT!r}" in details, details
    assert "access_token" not in details and (not route.secret or route.secret not in details)
    # Refused at the cap, not after reading the answer (or its retries) to the end.
    assert took < 30, f"the refusal took {took:.1f} s"
    # The endpoint answering normally again, the same identity mounts.
    assert mount(provider, route, timeout=60) is None


@pytest.fixture(scope="module")
@starts_process
def one_worker(keyvault: KeyVaultDouble, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """A provider with a single fetch worker: a token request that kept it would stall every mount."""
    started = start_provider(tmp_path_factory.mktemp("one-worker"), keyvault, "--max-concurrent-fetches=1")
    yield started
    stop_provider(started)


@pytest.mark.parametrize("kind", list(ROUTES))
def test_a_drip_fed_token_answer_ends_with_the_mount_and_frees_its_worker(
    one_worker: Provider, keyvault: KeyVaultDouble, kind: str
) -> None:
    # The provider is warm (the Azure SDK loaded on its first Mount) before the clock matters.
    _, warm = route_to(one_worker, keyvault, "aad-service-principal")
    assert mount(one_worker, warm, timeout=60) is None
    _, dripped = route_to(one_worker, keyvault, kind)
    # A byte every half second, for far longer than the test: each byte would restart a
    # per-recv timeout, and the whole answer would take 14 hours.
    keyvault.set_faults(
        Fault("drip", count=100, seconds=0.5, size=100_000, service=dripped.service, client=dripped.client)
    )

    def failed_mounts() -> int:
        return one_worker.log.read_text().count("failed to process mount request")

    before = failed_mounts()
    try:
        started = time.monotonic()
        err = mount(one_worker, dripped, timeout=8)
        took = time.monotonic() - started
        assert err is not None and err.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ), err
        assert took < 12, f"the drip-fed mount took {took:.1f} s"
        # The provider's own Mount ended too (its token request with it), not only the caller's wait.
        eventually(lambda: failed_mounts() > before, timeout=6, what="the provider ending the drip-fed Mount")
        assert any(
            r.get("fault") == "drip" and r.get("service") == dripped.service for r in keyvault.requests()
        ), "the token request was not drip-fed"
        # The only worker is free again: another identity mounts well before the drip's
        # read timeout (30 s) would have ended it.
        _, healthy = route_to(one_worker, keyvault, "aad-service-principal")
        assert mount(one_worker, healthy, timeout=20) is None
    finally:
        keyvault.set_faults()
