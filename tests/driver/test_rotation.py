"""Rotation, Secret sync, events and metrics, with every part real: the API server,
`kvmount driver` under the deploy/ RBAC, `kvmount provider`, the Key Vault double
and tmpfs mounts. Pods exist in the API (nothing runs them); a test publishes
their volumes as kubelet would."""

from __future__ import annotations

import base64
import os
import re
import secrets
import signal
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from kubernetes import client as _client

from kvmount.csi import kubelet
from kvmount.csi.provider_client import ProviderClients
from kvmount.driver.publish import Publisher
from kvmount.driver.request import VolumeRequest
from kvmount.driver.rotation import REFRESH_ANNOTATION, Rotator
from kvmount.driver.volumes import VolumeRegistry
from kvmount.kube.api_store import KubeStore
from kvmount.secretsync.writer import SecretSync
from kvmount.volume.target import KubeletRoot
from tests.driver.conftest import Driver, Pod, await_socket, start_driver, stop_driver
from tests.peers.keyvault_double import KeyVaultDouble
from tests.peers.kube import KubeAPIServer
from tests.support import eventually, start_daemon, starts_process

k8s: Any = _client  # the client's partial annotations do not cover dict bodies
REPO = Path(__file__).resolve().parents[2]
GROUP = "secrets-store.csi.x-k8s.io"
VAULT = "kvtest"
INTERVAL = 2.0
VOLUME = "secrets-store-inline"


@dataclass
class Stack:
    kube: KubeAPIServer
    kv: KeyVaultDouble
    providers: Path
    driver_kubeconfig: Path
    cloud_env: Path
    provider_log: Path


@pytest.fixture(scope="module")
@starts_process
def stack(
    kube_apiserver: KubeAPIServer, keyvault: KeyVaultDouble, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("rotation")
    for path in [
        *sorted((REPO / "deploy" / "crds").glob("*.yaml")),
        REPO / "deploy" / "driver" / "csidriver.yaml",
    ]:
        kube_apiserver.apply_yaml(path)
    kube_apiserver.apply_yaml(REPO / "deploy" / "driver" / "rbac.yaml")
    # The driver talks to the API as its own ServiceAccount, so deploy/'s RBAC is what is tested.
    token = kube_apiserver.service_account_token("kube-system", "secrets-store-csi-driver")
    kubeconfig = kube_apiserver.write_kubeconfig(base / "driver.kubeconfig", token)
    providers = base / "providers"
    providers.mkdir()
    sock, log = providers / "azure.sock", base / "provider.log"
    cmd = [
        sys.executable, "-m", "kvmount.cli", "provider", f"--endpoint=unix://{sock}",
        "--healthz-port=0", "--prometheus-port=0", f"--cloud-env-dirs={base}",
        # Shorter than the rotation interval: each round reads Key Vault anew.
        "--coalesce-seconds=1",
    ]  # fmt: skip
    provider = start_daemon("provider", cmd, log, env={**os.environ, **keyvault.env()})
    try:
        await_socket(sock, provider)
        yield Stack(
            kube_apiserver,
            keyvault,
            providers,
            kubeconfig,
            Path(keyvault.write_cloud_env(base / "cloud.json")),
            log,
        )
    finally:
        provider.stop(timeout=40)


def kube_driver(stack: Stack, base: Path, *extra: str) -> Driver:
    base.mkdir(exist_ok=True)
    return start_driver(
        base, stack.providers, f"--kubeconfig={stack.driver_kubeconfig}", "--standalone-classes-dir=", *extra
    )


@pytest.fixture
@starts_process
def rotating(stack: Stack, tmp_path: Path) -> Iterator[Driver]:
    driver = kube_driver(
        stack, tmp_path / "drv", "--enable-secret-rotation", f"--rotation-poll-interval={INTERVAL}s"
    )
    yield driver
    stop_driver(driver)
    print(driver.log.read_text())  # shown when the test failed


class Namespace:
    """A fresh namespace with a service principal's Secret, a class and pods that use them."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.api = stack.kube.admin
        self.core = k8s.CoreV1Api(self.api)
        self.name = f"rot-{uuid.uuid4().hex[:8]}"
        self.core.create_namespace({"metadata": {"name": self.name}})
        # No controller makes the default ServiceAccount; TokenRequest for pods needs it.
        self.core.create_namespaced_service_account(self.name, {"metadata": {"name": "default"}})
        self.client_id = f"app-{secrets.token_hex(4)}"
        self.client_secret = f"sp-{secrets.token_hex(12)}"
        stack.kv.register_aad_client(self.client_id, secret=self.client_secret)
        self.core.create_namespaced_secret(
            self.name,
            {
                "metadata": {"name": "sp"},
                "stringData": {"clientid": self.client_id, "clientsecret": self.client_secret},
            },
        )

    def create_class(
        self, name: str, objects: list[dict[str, str]], secret_objects: list[Any] | None = None
    ) -> None:
        spec: dict[str, Any] = {
            "provider": "azure",
            "parameters": {
                "keyvaultName": VAULT,
                "tenantId": self.stack.kv.tenant,
                "cloudName": "AzureStackCloud",
                "cloudEnvFileName": str(self.stack.cloud_env),
                "objects": yaml.safe_dump({"array": [yaml.safe_dump(o) for o in objects]}),
            },
        }
        if secret_objects:
            spec["secretObjects"] = secret_objects
        body = {"apiVersion": f"{GROUP}/v1", "kind": "SecretProviderClass", "metadata": {"name": name}}
        k8s.CustomObjectsApi(self.api).create_namespaced_custom_object(
            GROUP, "v1", self.name, "secretproviderclasses", {**body, "spec": spec}
        )

    def create_pod(self, kubelet_dir: Path, name: str, class_name: str) -> Pod:
        volume = {
            "name": VOLUME,
            "csi": {
                "driver": "secrets-store.csi.k8s.io",
                "readOnly": True,
                "volumeAttributes": {"secretProviderClass": class_name},
                "nodePublishSecretRef": {"name": "sp"},
            },
        }
        made = self.core.create_namespaced_pod(
            self.name,
            {
                "metadata": {"name": name},
                "spec": {
                    "nodeName": "test-node",
                    # Admission would set it in a cluster; TokenRequest checks it.
                    "serviceAccountName": "default",
                    "containers": [{"name": "c", "image": "busybox"}],
                    "volumes": [volume],
                },
            },
        )
        uid = str(made.metadata.uid)
        pod = Pod(name, self.name, uid, Path(kubelet.target_path(str(kubelet_dir), uid, VOLUME)))
        pod.target.parent.mkdir(parents=True)
        return pod

    def mounted(self, driver: Driver, kubelet_dir: Path, value: str) -> tuple[str, Pod]:
        """A new Key Vault secret holding ``value``, class "kv" naming it, pod "web" with it mounted."""
        name = f"s-{secrets.token_hex(4)}"
        self.stack.kv.put_secret(VAULT, name, value)
        self.create_class("kv", [{"objectName": name, "objectType": "secret"}])
        pod = self.create_pod(kubelet_dir, "web", "kv")
        self.publish(driver, pod, "kv")
        return name, pod

    def publish(self, driver: Driver, pod: Pod, class_name: str) -> None:
        node_secret = {"clientid": self.client_id, "clientsecret": self.client_secret}
        driver.node.NodePublishVolume(pod.publish_request(class_name, secrets=node_secret), timeout=60)

    def secret(self, name: str) -> Any:
        return self.core.read_namespaced_secret(name, self.name)

    def events(self, pod: str, reason: str) -> list[Any]:
        found = self.core.list_namespaced_event(self.name).items
        return [e for e in found if e.involved_object.name == pod and e.reason == reason]


def metrics(driver: Driver) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{driver.metrics_port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def test_new_version_rotates_file_status_and_synced_secret(
    stack: Stack, rotating: Driver, kubelet_dir: Path
) -> None:
    ns = Namespace(stack)
    name = f"rot-{secrets.token_hex(4)}"
    stack.kv.put_secret(VAULT, name, "version one")
    ns.create_class(
        "kv",
        [{"objectName": name, "objectType": "secret", "objectAlias": "db"}],
        [
            {
                "secretName": "db-creds",
                "type": "Opaque",
                "labels": {"team": "a"},
                "data": [{"objectName": "db", "key": "password"}],
            }
        ],
    )
    pod = ns.create_pod(kubelet_dir, "web", "kv")
    ns.publish(rotating, pod, "kv")
    assert (pod.target / "db").read_text() == "version one"
    synced = ns.secret("db-creds")
    assert base64.b64decode(synced.data["password"]) == b"version one"
    assert synced.metadata.labels == {"secrets-store.csi.k8s.io/managed": "true", "team": "a"}
    (owner,) = synced.metadata.owner_references
    assert (owner.kind, owner.name) == ("SecretProviderClassPodStatus", f"web-{ns.name}-kv")

    stack.kv.put_secret(VAULT, name, "version two")
    eventually(lambda: read(pod.target / "db") == "version two", timeout=INTERVAL + 3, what="file rotated")
    eventually(
        lambda: base64.b64decode(ns.secret("db-creds").data["password"]) == b"version two",
        timeout=INTERVAL + 3,
        what="synced Secret rotated",
    )
    status = k8s.CustomObjectsApi(ns.api).get_namespaced_custom_object(
        GROUP, "v1", ns.name, "secretproviderclasspodstatuses", f"web-{ns.name}-kv"
    )
    ((object_id, version),) = [(o["id"], o["version"]) for o in status["status"]["objects"]]
    assert object_id == f"secret/{name}"
    assert version == stack.kv.vault_call(VAULT, "GET", f"/secrets/{name}")["id"].rsplit("/", 1)[1]
    eventually(lambda: bool(ns.events("web", "MountRotationComplete")), timeout=10, what="rotation event")
    text = metrics(rotating)
    assert re.search(
        r'rotation_reconcile_total\{os_type="linux",provider="azure",rotated="true"\} [1-9]', text
    )
    assert re.search(r'sync_k8s_secret_total\{error_type="",os_type="linux",provider="azure"\} [1-9]', text)
    assert 'rotation_reconcile_duration_sec_count{os_type="linux",provider="azure"}' in text
    everything = rotating.log.read_text() + text + stack.provider_log.read_text()
    assert "version two" not in everything and ns.client_secret not in everything
    rotating.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=30)


def test_key_vault_outage_keeps_content_and_recovers(
    stack: Stack, rotating: Driver, kubelet_dir: Path
) -> None:
    ns = Namespace(stack)
    name, pod = ns.mounted(rotating, kubelet_dir, "before")
    try:
        stack.kv.set_outage(503)
        stack.kv.put_secret(VAULT, name, "during")  # seeding bypasses the outage
        eventually(
            lambda: bool(ns.events("web", "MountRotationFailed")),
            timeout=3 * INTERVAL + 5,
            what="failure event",
        )
        assert (pod.target / name).read_text() == "before"
        (event,) = ns.events("web", "MountRotationFailed")[:1]
        assert "previous content is kept" in event.message and event.type == "Warning"
        assert re.search(
            r'rotation_reconcile_error_total\{error_type="\w+",os_type="linux",provider="azure"\} [1-9]',
            metrics(rotating),
        )
    finally:
        stack.kv.set_outage(0)
    eventually(
        lambda: read(pod.target / name) == "during", timeout=INTERVAL + 3, what="recovery after the outage"
    )
    rotating.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=30)


def test_unmanaged_secret_is_left_untouched(stack: Stack, rotating: Driver, kubelet_dir: Path) -> None:
    ns = Namespace(stack)
    name = f"um-{secrets.token_hex(4)}"
    stack.kv.put_secret(VAULT, name, "from key vault")
    ns.core.create_namespaced_secret(
        ns.name, {"metadata": {"name": "theirs"}, "stringData": {"password": "mine"}}
    )
    before = ns.secret("theirs")
    ns.create_class(
        "kv",
        [{"objectName": name, "objectType": "secret", "objectAlias": "db"}],
        [{"secretName": "theirs", "type": "Opaque", "data": [{"objectName": "db", "key": "password"}]}],
    )
    pod = ns.create_pod(kubelet_dir, "web", "kv")
    ns.publish(rotating, pod, "kv")
    assert (pod.target / "db").read_text() == "from key vault"  # the mount itself succeeds
    eventually(lambda: bool(ns.events("web", "FailedToCreateSecret")), timeout=10, what="sync refused event")
    (event,) = ns.events("web", "FailedToCreateSecret")[:1]
    assert "theirs" in event.message and "from key vault" not in event.message
    after = ns.secret("theirs")
    assert after.metadata.resource_version == before.metadata.resource_version
    assert after.data == before.data and not after.metadata.owner_references
    assert re.search(
        r'sync_k8s_secret_total\{error_type="SecretNotManaged",os_type="linux",provider="azure"\} [1-9]',
        metrics(rotating),
    )
    rotating.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=30)


def test_refresh_on_demand_by_annotation(stack: Stack, tmp_path: Path, kubelet_dir: Path) -> None:
    """Periodic rotation off: a new value of the pod's refresh annotation fetches at once."""
    driver = kube_driver(stack, tmp_path / "drv")
    try:
        ns = Namespace(stack)
        name, pod = ns.mounted(driver, kubelet_dir, "first")
        stack.kv.put_secret(VAULT, name, "second")
        time.sleep(1.5)
        assert (pod.target / name).read_text() == "first"  # no periodic rotation
        ns.core.patch_namespaced_pod("web", ns.name, {"metadata": {"annotations": {REFRESH_ANNOTATION: "1"}}})
        eventually(lambda: read(pod.target / name) == "second", timeout=10, what="refresh on demand")
        # The same value again does nothing; a new one refreshes again.
        stack.kv.put_secret(VAULT, name, "third")
        ns.core.patch_namespaced_pod("web", ns.name, {"metadata": {"labels": {"touched": "yes"}}})
        time.sleep(1.5)
        assert (pod.target / name).read_text() == "second"
        ns.core.patch_namespaced_pod("web", ns.name, {"metadata": {"annotations": {REFRESH_ANNOTATION: "2"}}})
        eventually(lambda: read(pod.target / name) == "third", timeout=10, what="second refresh")
        driver.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=30)
    finally:
        stop_driver(driver)


def test_restart_mid_rotation_keeps_rotating_and_never_tears(
    stack: Stack, tmp_path: Path, kubelet_dir: Path
) -> None:
    """SIGKILL while a rotation waits on a slow Key Vault, the state directory lost too: the new
    driver recovers the volume from its pod status and the mount, and rotates it; a reader
    never sees a partial or mixed set of files."""
    base = tmp_path / "drv"
    args = ("--enable-secret-rotation", f"--rotation-poll-interval={INTERVAL}s")
    driver = kube_driver(stack, base, *args)
    ns = Namespace(stack)
    names = [f"rs-{secrets.token_hex(4)}" for _ in range(2)]
    for n in names:
        stack.kv.put_secret(VAULT, n, f"{n} v1 " + "x" * 4096)
    ns.create_class("kv", [{"objectName": n, "objectType": "secret"} for n in names])
    pod = ns.create_pod(kubelet_dir, "web", "kv")
    ns.publish(driver, pod, "kv")
    torn: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            data = pod.target / "..data"
            try:
                version = os.readlink(data)
                contents = [(pod.target / version / n).read_text() for n in names]
            except OSError:
                continue  # a version removed between readlink and read: the next read sees the new one
            marks = {c.split(" ")[1] for c in contents}
            if len(marks) != 1 or any(not c.endswith("x" * 4096) for c in contents):
                torn.append(repr([c[:40] for c in contents]))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        stack.kv.set_latency(1500)
        for n in names:
            stack.kv.put_secret(VAULT, n, f"{n} v2 " + "x" * 4096)
        # Wait until a rotation is in flight (Key Vault is slow), then kill the driver.
        eventually(
            lambda: any(r.get("service") == "keyvault" for r in stack.kv.requests()[-5:]),
            timeout=INTERVAL + 5,
            what="rotation started",
        )
        driver.proc.send_signal(signal.SIGKILL)
        driver.proc.wait(timeout=10)
        driver.channel.close()
        stack.kv.set_latency(0)
        for state in (base / "state" / "volumes").glob("*.json"):
            state.unlink()
        for n in names:
            stack.kv.put_secret(VAULT, n, f"{n} v3 " + "x" * 4096)
        driver = kube_driver(stack, base, *args)
        eventually(
            lambda: all(read(pod.target / n).startswith(f"{n} v3 ") for n in names),
            timeout=2 * INTERVAL + 5,
            what="rotation after restart",
        )
        assert "recovered volume from its pod status" in driver.log.read_text()
    finally:
        stack.kv.set_latency(0)
        done.set()
        thread.join()
        driver.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=30)
        stop_driver(driver)
    assert torn == []


def in_process_publisher(stack: Stack, state: Path, kubelet_dir: Path) -> tuple[KubeStore, Publisher]:
    """The driver's publish flow in this process, on node test-node, as the driver's account."""
    store = KubeStore(str(stack.driver_kubeconfig), node="test-node")
    providers = ProviderClients([str(stack.providers)], 4 << 20)
    publisher = Publisher(
        store,
        providers,
        VolumeRegistry(str(state)),
        "test-node",
        8 << 20,
        3600.0,
        SecretSync(store.rest, pods=store.get_pod),
        kubelet_root=KubeletRoot(str(kubelet_dir)),
    )
    return store, publisher


def test_pods_sharing_a_class_cost_one_read_per_object_per_round(
    stack: Stack, tmp_path: Path, kubelet_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """P pods, one class, one identity: a rotation round reads each object once, not P times."""
    ns = Namespace(stack)
    names = [f"sh-{secrets.token_hex(4)}" for _ in range(3)]
    for n in names:
        stack.kv.put_secret(VAULT, n, f"{n} one")
    ns.create_class("kv", [{"objectName": n, "objectType": "secret"} for n in names])
    pods = [ns.create_pod(kubelet_dir, f"web-{i}", "kv") for i in range(5)]
    monkeypatch.setenv("KUBECONFIG", str(stack.driver_kubeconfig))
    store, publisher = in_process_publisher(stack, tmp_path / "state", kubelet_dir)
    rotator = Rotator(publisher, store, "test-node", 3600.0)
    node_secret = {"clientid": ns.client_id, "clientsecret": ns.client_secret}
    try:
        for pod in pods:
            request = pod.publish_request("kv", secrets=node_secret)
            publisher.publish(
                VolumeRequest(
                    request.volume_id, request.target_path, dict(request.volume_context), node_secret
                )
            )
        for round_number, value in enumerate(["two", "three"]):
            for n in names:
                stack.kv.put_secret(VAULT, n, f"{n} {value}")
            time.sleep(1.2)  # past the provider's coalescing window: every round reads anew
            stack.kv.reset_log()
            rotator.round()
            reads = [
                r for r in stack.kv.requests()
                if r.get("service") == "keyvault" and r["method"] == "GET" and "/secrets/" in str(r["path"])
            ]  # fmt: skip
            assert len(reads) == len(names), f"round {round_number}: {[r['path'] for r in reads]}"
            assert all((p.target / n).read_text() == f"{n} {value}" for p in pods for n in names)
    finally:
        for pod in pods:
            publisher.unpublish("v", str(pod.target))
        publisher.providers.close()


def test_failed_mount_is_an_event_on_the_pod(stack: Stack, rotating: Driver, kubelet_dir: Path) -> None:
    ns = Namespace(stack)
    pod = ns.create_pod(kubelet_dir, "web", "missing")
    with pytest.raises(grpc.RpcError) as info:
        ns.publish(rotating, pod, "missing")
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert not pod.target.exists()
    (event,) = ns.events("web", "FailedToMount")
    assert event.type == "Warning" and f"SecretProviderClass {ns.name}/missing not found" in event.message
    assert event.source.component == "csi-secrets-store-driver" and event.involved_object.uid == pod.uid
