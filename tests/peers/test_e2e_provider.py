"""The strict e2e provider (tests/peers/e2e_provider.py), and kvmount's provider client against it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from kvmount.csi.provider_client import ProviderClients, ProviderError
from kvmount.proto import v1alpha1_pb2 as pb
from kvmount.proto import v1alpha1_pb2_grpc as pb_grpc
from tests.peers.e2e_provider import NAME, ROTATED, SECRETS, TOKENS, E2EProvider


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[E2EProvider]:
    with E2EProvider(tmp_path / f"{NAME}.sock") as started:
        yield started


def request(pod_uid: str = "uid-1", **extra: str) -> pb.MountRequest:
    objects = yaml.safe_dump({"array": [yaml.safe_dump({"objectName": n}) for n in ("foo", "fookey")]})
    attributes = {"objects": objects, "csi.storage.k8s.io/pod.uid": pod_uid, **extra}
    return pb.MountRequest(
        attributes=json.dumps(attributes), secrets="null", target_path="/t", permission="420"
    )


def test_kvmount_client_says_localhost_and_is_served(provider: E2EProvider) -> None:
    clients = ProviderClients([str(provider.socket.parent)], 4 << 20)
    try:
        response = clients.mount(NAME, request(), timeout=10)
        assert clients.version(NAME) == "kvmount-e2e-provider 0"
    finally:
        clients.close()
    assert {f.path: f.contents for f in response.files} == SECRETS
    assert [(v.id, v.version) for v in response.object_version] == [
        ("secret/foo", "v1"),
        ("secret/fookey", "v1"),
    ]
    assert set(provider.servicer.authorities) == {"localhost"}


def test_a_socket_path_authority_is_refused(provider: E2EProvider) -> None:
    """grpcio's own default on a unix socket (the path), as kvmount sent it before."""
    with grpc.insecure_channel(f"unix://{provider.socket}") as channel, pytest.raises(grpc.RpcError) as info:
        pb_grpc.CSIDriverProviderStub(channel).Mount(request(), timeout=10)
    assert info.value.code() is grpc.StatusCode.UNKNOWN
    assert "want authority localhost" in str(info.value.details())
    assert provider.servicer.mounts == []


def test_without_the_strict_authority_a_socket_path_is_served(tmp_path: Path) -> None:
    """What bench/api_load.py runs upstream's v1.5.6 against (it sends the socket's path)."""
    with (
        E2EProvider(tmp_path / f"{NAME}.sock", strict_authority=False) as lenient,
        grpc.insecure_channel(f"unix://{lenient.socket}") as channel,
    ):
        response = pb_grpc.CSIDriverProviderStub(channel).Mount(request(), timeout=10)
        assert {f.path: f.contents for f in response.files} == SECRETS
        assert lenient.servicer.authorities != ["localhost"]  # the path, not refused


def test_token_audiences_and_rotation_through_the_control_endpoint(provider: E2EProvider) -> None:
    clients = ProviderClients([str(provider.socket.parent)], 4 << 20)
    try:
        provider.control("/validate-token-requests?audience=aud-a,aud-b")
        with pytest.raises(ProviderError, match="service account tokens is not set"):
            clients.mount(NAME, request(), timeout=10)
        with pytest.raises(ProviderError, match="token for audience aud-b is not set"):
            clients.mount(NAME, request(**{TOKENS: json.dumps({"aud-a": {"token": "t"}})}), timeout=10)
        tokens = json.dumps({"aud-a": {"token": "t"}, "aud-b": {"token": "t"}})
        first = clients.mount(NAME, request(**{TOKENS: tokens}), timeout=10)
        assert first.files[0].contents == b"secret"

        provider.control("/rotation?rotated=true")
        again = clients.mount(NAME, request(**{TOKENS: tokens}), timeout=10)
        assert (again.files[0].contents, again.object_version[0].version) == (ROTATED, "v2")
        # A pod never seen before gets the first values, as upstream's mock.
        fresh = clients.mount(NAME, request("uid-2", **{TOKENS: tokens}), timeout=10)
        assert fresh.files[0].contents == b"secret"
        provider.control("/rotation?rotated=false")
        assert clients.mount(NAME, request(**{TOKENS: tokens}), timeout=10).files[0].contents == b"secret"
    finally:
        clients.close()


def test_a_mount_without_objects_is_refused(provider: E2EProvider) -> None:
    clients = ProviderClients([str(provider.socket.parent)], 4 << 20)
    bare = pb.MountRequest(attributes="{}", secrets="null", target_path="/t", permission="420")
    try:
        with pytest.raises(ProviderError, match="objects is not set"):
            clients.mount(NAME, bare, timeout=10)
    finally:
        clients.close()
