"""What a namespace user's class can make the provider do: nothing that stalls or exhausts it.

The provider runs with small caps here so each limit is reached cheaply; the Key Vault
double's request log shows which reads were made and in what order.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from kvmount.proto import v1alpha1_pb2 as pb
from tests.peers.keyvault_double import Fault, KeyVaultDouble
from tests.provider.conftest import VAULT, Provider, start_provider, stop_provider
from tests.support import eventually, starts_process


@pytest.fixture(scope="module")
@starts_process
def capped(keyvault: KeyVaultDouble, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    started = start_provider(
        tmp_path_factory.mktemp("capped"),
        keyvault,
        "--max-concurrent-fetches=2",
        "--max-mount-bytes=2000",
        "--max-version-history=5",
        "--max-objects-per-mount=300",
        "--default-mount-timeout=3s",
        "--coalesce-seconds=0",
    )
    yield started
    stop_provider(started)


def uid(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def request(
    provider: Provider, objects: list[dict[str, Any]], sp: dict[str, str], **extra: str
) -> pb.MountRequest:
    return provider.request(provider.attributes(objects, **extra), sp)


def failure(provider: Provider, req: pb.MountRequest, timeout: float | None = 60) -> grpc.RpcError:
    """The status of a Mount that must fail; a Mount without a deadline must still end within 60s."""
    future = provider.stub.Mount.future(req, timeout=timeout)
    try:
        future.result(timeout=60)
    except grpc.RpcError as err:
        return err
    except grpc.FutureTimeoutError:
        future.cancel()
        raise AssertionError("the Mount did not end within 60s") from None
    raise AssertionError("the Mount succeeded")


def secrets(keyvault: KeyVaultDouble, prefix: str, count: int, value: str = "v") -> list[dict[str, Any]]:
    names = [f"{prefix}-{i}" for i in range(count)]
    for name in names:
        keyvault.put_secret(VAULT, name, value)
    return [{"objectName": n, "objectType": "secret"} for n in names]


def reads_of(keyvault: KeyVaultDouble, prefix: str) -> list[dict[str, Any]]:
    return [
        r
        for r in keyvault.requests()
        if r.get("service") == "keyvault" and r.get("path", "").startswith(f"/secrets/{prefix}-")
    ]


@pytest.mark.peer
@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_a_cloud_environment_file_that_is_not_a_regular_file_is_refused_at_once(
    keyvault: KeyVaultDouble, tmp_path: Path, sp: dict[str, str], special: str
) -> None:
    path = special
    if special == "fifo":
        path = str(tmp_path / "env.json")
        os.mkfifo(path)
    (tmp_path / "p").mkdir()
    provider = start_provider(tmp_path / "p", keyvault, f"--cloud-env-dirs=/dev,{tmp_path}")
    try:
        objects = [{"objectName": "any", "objectType": "secret"}]
        err = failure(provider, request(provider, objects, sp, cloudEnvFileName=path), timeout=20)
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "cloudEnvFileName" in str(err.details()) and "not a regular file" in str(err.details())
        # The provider still answers: nothing was left blocked or reading.
        assert provider.stub.Version(pb.VersionRequest(version="v1alpha1"), timeout=10).version
    finally:
        stop_provider(provider)


def test_a_cloud_environment_file_outside_the_allowed_directories_is_refused(
    capped: Provider, keyvault: KeyVaultDouble, tmp_path: Path, sp: dict[str, str]
) -> None:
    elsewhere = Path("/dev/shm") / f"{uid('env')}.json"
    keyvault.write_cloud_env(elsewhere)
    try:
        objects = [{"objectName": "any", "objectType": "secret"}]
        err = failure(capped, request(capped, objects, sp, cloudEnvFileName=str(elsewhere)))
        assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "--cloud-env-dirs" in str(err.details())
    finally:
        elsewhere.unlink()


def test_caps_answer_invalid_argument_naming_the_field(capped: Provider, sp: dict[str, str]) -> None:
    history = [{"objectName": "h", "objectType": "secret", "objectVersionHistory": 10**9}]
    err = failure(capped, request(capped, history, sp))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "objectVersionHistory" in str(err.details()) and "--max-version-history" in str(err.details())
    many = [{"objectName": f"o{i}", "objectType": "secret"} for i in range(301)]
    err = failure(capped, request(capped, many, sp))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "--max-objects-per-mount" in str(err.details())


def test_content_above_the_cap_fails_cleanly_as_it_arrives(
    capped: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]
) -> None:
    prefix = uid("big")
    objects = secrets(keyvault, prefix, 40, "x" * 400)
    keyvault.reset_log()
    err = failure(capped, request(capped, objects, sp))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "objects" in str(err.details()) and "--max-mount-bytes" in str(err.details())
    # The mount stopped reading once over the cap (2,000 bytes: the sixth object of 400).
    assert len(reads_of(keyvault, prefix)) < 20
    assert "x" * 400 not in capped.log.read_text()


def test_a_failed_mount_drops_the_rest_of_its_fetches(
    capped: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]
) -> None:
    prefix = uid("fail")
    objects = [{"objectName": f"{prefix}-missing", "objectType": "secret"}, *secrets(keyvault, prefix, 60)]
    keyvault.reset_log()
    err = failure(capped, request(capped, objects, sp))
    assert err.code() is grpc.StatusCode.NOT_FOUND and "missing" in str(err.details())
    assert len(reads_of(keyvault, prefix)) < 20


def test_a_small_mount_is_served_while_a_big_one_has_a_backlog(
    capped: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]
) -> None:
    big_prefix, small_prefix = uid("big"), uid("small")
    big = secrets(keyvault, big_prefix, 120)
    small = secrets(keyvault, small_prefix, 3)
    keyvault.reset_log()
    keyvault.set_latency(20)
    try:
        done: list[pb.MountResponse] = []
        worker = threading.Thread(
            target=lambda: done.append(capped.stub.Mount(request(capped, big, sp), timeout=120))
        )
        worker.start()
        # The small mount starts once the big one is under way.
        eventually(
            lambda: len(reads_of(keyvault, big_prefix)) >= 5, timeout=30, what="the big mount under way"
        )
        capped.stub.Mount(request(capped, small, sp), timeout=60)
        big_when_small_done = len(reads_of(keyvault, big_prefix))
        worker.join(120)
    finally:
        keyvault.set_latency(0)
    assert len(done) == 1 and len(done[0].files) == 120
    # Served in turn: the small mount's three reads came before most of the big backlog
    # (a first-come pool serves all 120 first).
    assert big_when_small_done < 60, big_when_small_done


def test_a_mount_without_a_deadline_gets_the_default_budget(
    capped: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]
) -> None:
    name = uid("stall")
    keyvault.put_secret(VAULT, name, "v")
    keyvault.set_faults(Fault("stall", count=10, path=name, seconds=40))
    try:
        err = failure(
            capped, request(capped, [{"objectName": name, "objectType": "secret"}], sp), timeout=None
        )
    finally:
        keyvault.set_faults()
    assert err.code() is grpc.StatusCode.UNAVAILABLE, err
    assert name in str(err.details())
