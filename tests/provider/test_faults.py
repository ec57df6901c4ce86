"""Key Vault failing mid-mount: throttling, server errors, resets, stalls and bodies cut short.

A failure that passes is retried within the Mount's budget; one that lasts ends
in a clear status naming the object, never a hang past the caller's deadline.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import grpc
import pytest

from tests.peers.keyvault_double import Fault, KeyVaultDouble
from tests.provider.conftest import VAULT, Provider
from tests.support import eventually


@pytest.fixture
def name(keyvault: KeyVaultDouble) -> Iterator[str]:
    """A fresh secret "value"; faults set by the test are cleared afterwards."""
    secret = f"fault-{os.urandom(4).hex()}"
    keyvault.put_secret(VAULT, secret, "value")
    yield secret
    keyvault.set_faults()


def attempts(keyvault: KeyVaultDouble, name: str) -> list[int]:
    """The statuses of the reads of ``name`` (0: no answer), in order."""
    return [
        int(r["status"])
        for r in keyvault.requests()
        if r.get("service") == "keyvault"
        and r.get("path", "").startswith(f"/secrets/{name}")
        # The SDK's first request to a vault carries no token; the 401 answers its challenge.
        and r["status"] != 401
    ]


def mount_fails(provider: Provider, name: str, sp: dict[str, str], timeout: float) -> grpc.RpcError:
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        provider.stub.Mount(
            provider.request(provider.attributes([{"objectName": name, "objectType": "secret"}]), sp),
            timeout=timeout,
        )
    # The provider answered within the caller's deadline, with its own status.
    assert time.monotonic() - start < timeout
    return caught.value


def mounts(provider: Provider, name: str, sp: dict[str, str]) -> bytes:
    response = provider.mount(provider.attributes([{"objectName": name, "objectType": "secret"}]), sp)
    return {f.path: f.contents for f in response.files}[name]


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", count=2, status=429, retry_after="1"),
        Fault("status", count=2, status=503),
        Fault("status", count=1, status=500),
        Fault("reset", count=2),
        Fault("cut", count=2),
    ],
    ids=["429-retry-after", "503", "500", "reset", "cut"],
)
def test_a_passing_failure_is_retried(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], name: str, fault: Fault
) -> None:
    keyvault.set_faults(Fault(**{**fault.__dict__, "path": name}))
    keyvault.reset_log()
    assert mounts(provider, name, sp) == b"value"
    assert attempts(keyvault, name)[-1] == 200
    assert len(attempts(keyvault, name)) == fault.count + 1


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (Fault("status", count=100, status=503), "(HTTP 503)"),
        (Fault("status", count=100, status=429, retry_after="1"), "(HTTP 429)"),
        (Fault("reset", count=100), "unreachable or failing"),
        (Fault("cut", count=100), "unreachable or failing"),
    ],
    ids=["503", "429", "reset", "cut"],
)
def test_a_lasting_failure_ends_in_a_clear_error_after_bounded_retries(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], name: str, fault: Fault, words: str
) -> None:
    keyvault.set_faults(Fault(**{**fault.__dict__, "path": name}))
    keyvault.reset_log()
    err = mount_fails(provider, name, sp, timeout=30)
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert name in str(err.details()) and words in str(err.details())
    assert len(attempts(keyvault, name)) == 3  # the first try and two retries


def test_retry_after_longer_than_the_deadline_is_not_waited_out(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], name: str
) -> None:
    keyvault.set_faults(Fault("status", count=100, path=name, status=429, retry_after="3600"))
    err = mount_fails(provider, name, sp, timeout=5)
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert name in str(err.details())


def test_a_stall_mid_body_ends_at_the_deadline(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], name: str
) -> None:
    keyvault.set_faults(Fault("stall", count=100, path=name, seconds=60))
    err = mount_fails(provider, name, sp, timeout=5)
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert name in str(err.details())
    # Once the stalled read has ended, the same provider mounts again.
    keyvault.set_faults()

    def mounted() -> bytes | None:
        try:
            return mounts(provider, name, sp)
        except grpc.RpcError as err:
            assert err.code() is grpc.StatusCode.UNAVAILABLE, err
            return None

    assert eventually(mounted, timeout=30, what="a mount once the stall has ended") == b"value"
