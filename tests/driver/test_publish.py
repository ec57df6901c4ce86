"""NodePublishVolume / NodeUnpublishVolume over the driver's real unix socket, real tmpfs."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import stat
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from kvmount.proto import csi_pb2 as csi
from kvmount.proto import v1alpha1_pb2 as pb
from kvmount.volume import mounts
from tests.driver.conftest import PROVIDER, Driver, make_pod
from tests.driver.provider_double import ProviderDouble

TOKENS = '{"api://AzureADTokenExchange":{"token":"sa-token-value","expirationTimestamp":"x"}}'
SECRET = "node-publish-secret-value"


@dataclass
class Failure:
    code: grpc.StatusCode
    details: str


def publish_fails(driver: Driver, request: csi.NodePublishVolumeRequest) -> Failure:
    with pytest.raises(grpc.RpcError) as info:
        driver.node.NodePublishVolume(request, timeout=30)
    return Failure(info.value.code(), str(info.value.details()))


def assert_clean(target: Path) -> None:
    assert not mounts.is_mounted(str(target))
    assert not target.exists(), f"{target} left behind: {os.listdir(target)}"


def test_publish_writes_files_status_and_state(
    driver: Driver, provider: ProviderDouble, kubelet_dir: Path
) -> None:
    driver.write_class("app", {"file.username": "admin", "file.tls/ca.crt": "CA", "keyvaultName": "kv1"})
    pod = make_pod(kubelet_dir)
    request = pod.publish_request(
        "app",
        secrets={"clientid": "id", "clientsecret": SECRET},
        attributes={"csi.storage.k8s.io/serviceAccount.tokens": TOKENS},
    )
    driver.node.NodePublishVolume(request, timeout=30)

    target = pod.target
    assert mounts.is_mounted(str(target))
    assert (target / "username").read_text() == "admin"
    assert (target / "tls" / "ca.crt").read_text() == "CA"
    assert os.readlink(target / "username") == "..data/username"
    assert stat.S_IMODE(os.stat(target / "username").st_mode) == 0o644

    # What the provider got, as upstream sends it.
    (sent,) = provider.requests
    attributes = json.loads(sent.attributes)
    assert attributes["keyvaultName"] == "kv1"
    assert attributes["csi.storage.k8s.io/pod.name"] == pod.name
    assert attributes["csi.storage.k8s.io/pod.uid"] == pod.uid
    assert attributes["csi.storage.k8s.io/serviceAccount.tokens"] == TOKENS
    assert json.loads(sent.secrets) == {"clientid": "id", "clientsecret": SECRET}
    assert sent.permission == "420"
    assert sent.target_path == str(target)

    status_file = driver.state_dir / "podstatuses" / "default" / f"{pod.name}-default-app.json"
    status = json.loads(status_file.read_text())
    assert status["metadata"]["labels"] == {"internal.secrets-store.csi.k8s.io/node-name": "test-node"}
    assert status["metadata"]["ownerReferences"][0]["uid"] == pod.uid
    assert status["status"] == {
        "podName": pod.name,
        "secretProviderClassName": "app",
        "mounted": True,
        "targetPath": str(target),
        "objects": [{"id": "tls/ca.crt", "version": "2"}, {"id": "username", "version": "5"}],
    }

    # Volume state: enough to re-publish, and neither the secret nor the token.
    state_files = list((driver.state_dir / "volumes").glob("*.json"))
    states = [json.loads(p.read_text()) for p in state_files]
    (state,) = [s for s in states if s["target_path"] == str(target)]
    assert state["class_name"] == "app" and state["provider"] == PROVIDER
    for path in [*state_files, status_file]:
        text = path.read_text()
        assert SECRET not in text and "sa-token-value" not in text
    assert SECRET not in driver.log.read_text() and "sa-token-value" not in driver.log.read_text()

    driver.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=30)
    assert_clean(target)
    assert not status_file.exists()
    assert not any(json.loads(p.read_text())["target_path"] == str(target) for p in state_files if p.exists())


def test_publish_is_idempotent_and_unpublish_too(
    driver: Driver, provider: ProviderDouble, kubelet_dir: Path
) -> None:
    driver.write_class("idem", {"file.a": "1"})
    pod = make_pod(kubelet_dir)
    request = pod.publish_request("idem")
    driver.node.NodePublishVolume(request, timeout=30)
    driver.node.NodePublishVolume(request, timeout=30)
    assert len(provider.requests) == 1, "a second publish of a live volume must not re-fetch"
    assert (pod.target / "a").read_text() == "1"
    for _ in range(2):
        driver.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=30)
        assert_clean(pod.target)


def test_secret_tokens_come_from_request_secrets_first(
    driver: Driver, provider: ProviderDouble, kubelet_dir: Path
) -> None:
    driver.write_class("tok", {"file.a": "1"})
    pod = make_pod(kubelet_dir)
    request = pod.publish_request(
        "tok", secrets={"csi.storage.k8s.io/serviceAccount.tokens": TOKENS}, attributes={}
    )
    driver.node.NodePublishVolume(request, timeout=30)
    (sent,) = provider.requests
    assert json.loads(sent.attributes)["csi.storage.k8s.io/serviceAccount.tokens"] == TOKENS
    assert sent.secrets == "null", "the tokens are not part of the node-publish secret"
    driver.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=30)


def test_class_missing(driver: Driver, provider: ProviderDouble, kubelet_dir: Path) -> None:
    pod = make_pod(kubelet_dir)
    err = publish_fails(driver, pod.publish_request("nope"))
    assert err.code is grpc.StatusCode.NOT_FOUND
    # upstream's words first (kubelet's FailedMount carries them; alerts match them), then the fix
    assert err.details.startswith("failed to get secretproviderclass default/nope, error: ")
    assert "SecretProviderClass default/nope not found" in err.details
    assert_clean(pod.target)
    assert provider.requests == []


def test_class_in_another_namespace(driver: Driver, provider: ProviderDouble, kubelet_dir: Path) -> None:
    driver.write_class("elsewhere", {"file.a": "1"}, namespace="other")
    pod = make_pod(kubelet_dir, namespace="default")
    err = publish_fails(driver, pod.publish_request("elsewhere"))
    assert err.code is grpc.StatusCode.NOT_FOUND
    assert "default/elsewhere" in err.details and "pod's namespace (default)" in err.details
    assert_clean(pod.target)


def test_unknown_provider(driver: Driver, kubelet_dir: Path) -> None:
    driver.write_class("unknown", {"file.a": "1"}, provider="vault")
    pod = make_pod(kubelet_dir)
    err = publish_fails(driver, pod.publish_request("unknown"))
    assert err.code is grpc.StatusCode.FAILED_PRECONDITION
    assert err.details.startswith("failed to mount secrets store objects for pod default/")
    assert "default/unknown" in err.details and "provider 'vault' not found" in err.details
    assert "vault.sock" in err.details
    assert_clean(pod.target)


def test_invalid_provider_name(driver: Driver, kubelet_dir: Path) -> None:
    driver.write_class("badname", {"file.a": "1"}, provider="../double")
    pod = make_pod(kubelet_dir)
    err = publish_fails(driver, pod.publish_request("badname"))
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "provider name '../double' is invalid" in err.details
    assert_clean(pod.target)


def test_provider_socket_down(driver: Driver, kubelet_dir: Path) -> None:
    import socket

    dead = driver.provider_dir / "dead.sock"
    if not dead.exists():
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(dead))
        s.close()  # the socket file stays, nobody listens: connection refused
    driver.write_class("down", {"file.a": "1"}, provider="dead")
    pod = make_pod(kubelet_dir)
    err = publish_fails(driver, pod.publish_request("down"))
    assert err.code is grpc.StatusCode.UNAVAILABLE
    assert "default/down" in err.details and "provider 'dead' is not answering" in err.details
    assert_clean(pod.target)


def test_provider_error_status(driver: Driver, provider: ProviderDouble, kubelet_dir: Path) -> None:
    provider.behaviour.abort = (grpc.StatusCode.PERMISSION_DENIED, "keyvault kv1: access denied to secret a")
    driver.write_class("denied", {"file.a": "1"})
    pod = make_pod(kubelet_dir)
    err = publish_fails(driver, pod.publish_request("denied"))
    assert err.code is grpc.StatusCode.PERMISSION_DENIED
    assert "default/denied" in err.details and "access denied to secret a" in err.details
    assert "provider 'double'" in err.details
    assert_clean(pod.target)


def test_provider_error_code(driver: Driver, provider: ProviderDouble, kubelet_dir: Path) -> None:
    provider.behaviour.error_code = "KeyVaultThrottled"
    driver.write_class("coded", {"file.a": "1"})
    pod = make_pod(kubelet_dir)
    err = publish_fails(driver, pod.publish_request("coded"))
    assert err.code is grpc.StatusCode.UNKNOWN
    assert "mount request failed with provider error code KeyVaultThrottled" in err.details
    assert err.details.startswith("failed to mount secrets store objects for pod default/")
    assert "default/coded" in err.details
    assert_clean(pod.target)


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "a/../../b", "./a", "a//b", "..data/x", ""])
def test_provider_path_traversal(
    driver: Driver, provider: ProviderDouble, kubelet_dir: Path, path: str
) -> None:
    provider.behaviour.extra_files = [pb.File(path=path, mode=0o644, contents=b"x")]
    driver.write_class("evil", {"file.a": "1"})
    pod = make_pod(kubelet_dir)
    err = publish_fails(driver, pod.publish_request("evil"))
    assert err.code is grpc.StatusCode.INTERNAL
    assert "unusable file list" in err.details and "default/evil" in err.details
    assert_clean(pod.target)
    assert not (kubelet_dir / "escape").exists() and not (pod.target.parent / "escape").exists()


def test_readonly_false(driver: Driver, provider: ProviderDouble, kubelet_dir: Path) -> None:
    driver.write_class("rw", {"file.a": "1"})
    pod = make_pod(kubelet_dir)
    err = publish_fails(driver, pod.publish_request("rw", readonly=False))
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.details.startswith("Readonly is not true in request")
    assert_clean(pod.target)


@pytest.mark.parametrize(
    "key",
    ["csi.storage.k8s.io/pod.name", "csi.storage.k8s.io/pod.namespace", "csi.storage.k8s.io/pod.uid"],
)
def test_missing_pod_info(driver: Driver, provider: ProviderDouble, kubelet_dir: Path, key: str) -> None:
    driver.write_class("podinfo", {"file.a": "1"})
    pod = make_pod(kubelet_dir)
    request = pod.publish_request("podinfo")
    del request.volume_context[key]
    err = publish_fails(driver, request)
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert key in err.details and "podInfoOnMount" in err.details
    assert_clean(pod.target)


def test_missing_class_attribute(driver: Driver, kubelet_dir: Path) -> None:
    pod = make_pod(kubelet_dir)
    request = pod.publish_request("x")
    del request.volume_context["secretProviderClass"]
    err = publish_fails(driver, request)
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.details.startswith("secretProviderClass is not set")
    assert_clean(pod.target)


def test_invalid_class_parameters(driver: Driver, kubelet_dir: Path) -> None:
    (driver.classes_dir / "bad.yaml").write_text(
        "kind: SecretProviderClass\nmetadata: {name: badparams}\n"
        "spec: {provider: double, parameters: {usePodIdentity: false}}\n"
    )
    pod = make_pod(kubelet_dir)
    err = publish_fails(driver, pod.publish_request("badparams"))
    assert err.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "spec.parameters.usePodIdentity must be a string" in err.details
    assert_clean(pod.target)


def test_concurrent_publish_and_unpublish(
    driver: Driver, provider: ProviderDouble, kubelet_dir: Path
) -> None:
    provider.behaviour.delay = 0.05
    driver.write_class("many", {"file.a": "shared"})
    pods = [make_pod(kubelet_dir, name=f"p{i}") for i in range(12)]

    def cycle(pod_index: int) -> None:
        pod = pods[pod_index]
        for _ in range(3):
            driver.node.NodePublishVolume(pod.publish_request("many"), timeout=60)
            assert (pod.target / "a").read_text() == "shared"
            driver.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=60)
            assert not pod.target.exists()

    with concurrent.futures.ThreadPoolExecutor(len(pods)) as pool:
        list(pool.map(cycle, range(len(pods))))
    assert not [p for p in mounts.mount_points() if p.startswith(str(kubelet_dir))]


def test_volume_mount_group(driver: Driver, provider: ProviderDouble, kubelet_dir: Path) -> None:
    driver.write_class("grouped", {"file.a": "1", "file.d/b": "2"})
    pod = make_pod(kubelet_dir)
    request = pod.publish_request("grouped")
    request.volume_capability.mount.volume_mount_group = "2345"
    driver.node.NodePublishVolume(request, timeout=30)
    assert os.stat(pod.target / "a").st_gid == 2345
    assert os.stat(pod.target / "d" / "b").st_gid == 2345
    driver.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=30)

    request.volume_capability.mount.volume_mount_group = "staff"
    err = publish_fails(driver, request)
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT and "volume_mount_group" in err.details
    assert_clean(pod.target)


def test_metrics_and_health(driver: Driver, provider: ProviderDouble, kubelet_dir: Path) -> None:
    driver.write_class("counted", {"file.a": SECRET})
    pod = make_pod(kubelet_dir)
    driver.node.NodePublishVolume(pod.publish_request("counted", secrets={"k": SECRET}), timeout=30)
    driver.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=30)
    publish_fails(driver, make_pod(kubelet_dir).publish_request("no-such-class"))
    base = f"http://127.0.0.1:{driver.metrics_port}"
    with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
        assert response.status == 200
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert re.search(r'node_publish_total\{os_type="linux",provider="double"\} [1-9]', text)
    assert re.search(
        r'node_publish_error_total\{error_type="SecretProviderClassNotFound",os_type="linux",'
        r'provider=""\} [1-9]',
        text,
    )
    assert re.search(r'node_unpublish_total\{os_type="linux"\} [1-9]', text)
    assert 'csi_operations_seconds_count{grpc_code="OK",method="NodePublishVolume"}' in text
    assert SECRET not in text


def test_publish_without_a_deadline_gets_the_default_budget(
    driver: Driver, provider: ProviderDouble, kubelet_dir: Path
) -> None:
    """A caller that sets no gRPC deadline (grpcurl, a custom CO) still gets its volume."""
    driver.write_class("app", {"file.username": "admin", "keyvaultName": "kv1"})
    pod = make_pod(kubelet_dir)
    driver.node.NodePublishVolume(pod.publish_request("app"))  # no timeout
    assert (pod.target / "username").read_text() == "admin"
    driver.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=30)
    assert_clean(pod.target)
