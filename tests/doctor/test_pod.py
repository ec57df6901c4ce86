"""`kvmount doctor --pod`: for each cause of a stuck pod, one FAIL line naming the cause and the fix.

Against a real kube-apiserver of this module's own (it starts without the CRDs
and the CSIDriver, so their absence is a cause too; cluster-scoped objects such
as CSINodes stay private) and the Key Vault double.
"""

from __future__ import annotations

import contextlib
import io
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvmount.cli import main
from tests.doctor.test_access import VAULT, row
from tests.peers.keyvault_double import KeyVaultDouble
from tests.peers.kube import KubeAPIServer, binaries
from tests.support import peer_missing, starts_process

ROOT = Path(__file__).resolve().parents[2]
DRIVER = "secrets-store.csi.k8s.io"
NODE = "node-1"


@dataclass
class Cluster:
    server: KubeAPIServer
    bare: list[str]  # doctor's rows before the CRDs and the CSIDriver were installed
    cloud_env: str

    def doctor(self, capsys: pytest.CaptureFixture[str], *args: str, expect: int | None = 1) -> list[str]:
        """doctor's rows; ``expect``: its exit status (1: a check failed), None: not checked."""
        code = main(["doctor", "--kubeconfig", str(self.server.kubeconfig), *args])
        lines = capsys.readouterr().out.splitlines()
        assert expect is None or code == expect, lines
        return lines

    def namespace(self) -> str:
        name = f"ns-{uuid.uuid4().hex[:8]}"
        self.server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return name

    def pod(self, namespace: str, volume: dict[str, Any] | None, node: str = NODE, account: str = "") -> str:
        name = f"pod-{uuid.uuid4().hex[:6]}"
        spec: dict[str, Any] = {"containers": [{"name": "app", "image": "busybox"}]}
        if node:
            spec["nodeName"] = node
        if account:
            spec["serviceAccountName"] = account
        if volume is not None:
            spec["volumes"] = [{"name": "secrets", "csi": volume}]
            spec["containers"][0]["volumeMounts"] = [{"name": "secrets", "mountPath": "/mnt/secrets"}]
        self.server.apply(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}, namespace
        )
        return f"{namespace}/{name}"

    def spc(self, namespace: str, objects: list[dict[str, Any]], **params: Any) -> str:
        name = f"spc-{uuid.uuid4().hex[:6]}"
        spec: dict[str, Any] = {
            "provider": "azure",
            "parameters": {
                "keyvaultName": VAULT,
                "tenantID": "tenant",
                "cloudName": "AzureStackCloud",
                "cloudEnvFileName": str(self.cloud_env),
                "objects": yaml.safe_dump({"array": [yaml.safe_dump(o) for o in objects]}),
                **{k: v for k, v in params.items() if k != "secretObjects"},
            },
        }
        if "secretObjects" in params:
            spec["secretObjects"] = params["secretObjects"]
        self.server.apply(
            {
                "apiVersion": "secrets-store.csi.x-k8s.io/v1",
                "kind": "SecretProviderClass",
                "metadata": {"name": name},
                "spec": spec,
            },
            namespace,
        )
        return name


def volume(class_name: str, secret: str = "", driver: str = DRIVER) -> dict[str, Any]:
    made: dict[str, Any] = {
        "driver": driver,
        "readOnly": True,
        "volumeAttributes": {"secretProviderClass": class_name},
    }
    if secret:
        made["nodePublishSecretRef"] = {"name": secret}
    return made


@pytest.fixture(scope="module")
@starts_process
def cluster(tmp_path_factory: pytest.TempPathFactory, keyvault: KeyVaultDouble) -> Iterator[Cluster]:
    if binaries() is None:
        reason = "etcd or kube-apiserver not installed: run scripts/peers/kube-apiserver.sh"
        peer_missing(reason)
    workdir = tmp_path_factory.mktemp("doctor-kube")
    server = KubeAPIServer(workdir).start()
    try:
        made = Cluster(server, [], keyvault.write_cloud_env(workdir / "cloud.json"))
        ns = made.namespace()
        bare = made.pod(ns, None)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["doctor", "--kubeconfig", str(server.kubeconfig), "--pod", bare]) == 1
        made.bare = out.getvalue().splitlines()
        for path in sorted((ROOT / "deploy" / "crds").glob("*.yaml")):
            server.apply_yaml(path)
        server.apply_yaml(ROOT / "deploy" / "driver" / "csidriver.yaml")
        server.apply_yaml(ROOT / "deploy" / "driver" / "rbac.yaml")
        server.apply(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "CSINode",
                "metadata": {"name": NODE},
                "spec": {"drivers": [{"name": DRIVER, "nodeID": NODE}]},
            }
        )
        yield made
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _identities_from_the_double(kv_env: KeyVaultDouble) -> None:
    """Tokens come from the double (IMDS for managed identity too), never from a real endpoint."""


def fail_line(lines: list[str], needle: str) -> str:
    """The one FAIL row (the first for "CRD") whose check column contains ``needle``: cause -> fix."""
    line = row(lines, needle, first=needle == "CRD")
    assert line.startswith("FAIL "), line
    assert " -> " in line, f"no fix named: {line}"
    return line


# ---------------------------------------------------------------- causes, one test each


def test_cause_crds_not_installed(cluster: Cluster) -> None:
    line = fail_line(cluster.bare, "CRD")  # the first CRD row; the pod statuses' follows it
    assert "secretproviderclasses.secrets-store.csi.x-k8s.io is not installed" in line
    assert line.endswith("-> kubectl apply -f deploy/crds/")


def test_cause_csidriver_missing(cluster: Cluster) -> None:
    line = fail_line(cluster.bare, "CSIDriver")
    assert "no CSIDriver object secrets-store.csi.k8s.io" in line
    assert "-> kubectl apply -f deploy/driver/csidriver.yaml" in line


def test_cause_pod_not_found(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    ns = cluster.namespace()
    lines = cluster.doctor(capsys, "--pod", f"{ns}/no-such-pod")
    assert f"pod {ns}/no-such-pod not found -> check the name" in fail_line(lines, "pod")


def test_cause_not_scheduled(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    ns = cluster.namespace()
    pod = cluster.pod(
        ns,
        volume(cluster.spc(ns, [{"objectName": "a", "objectType": "secret"}], useVMManagedIdentity="true")),
        node="",
    )
    lines = cluster.doctor(capsys, "--pod", pod)
    assert "not scheduled yet" in fail_line(lines, "node") and "-> see the scheduler's events" in fail_line(
        lines, "node"
    )


def test_cause_driver_not_registered_on_the_node(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = cluster.namespace()
    pod = cluster.pod(ns, volume("any"), node="node-without-driver")
    lines = cluster.doctor(capsys, "--pod", pod)
    line = fail_line(lines, "driver on node")
    assert "is not registered on node node-without-driver" in line
    assert "-> check the driver DaemonSet's pod on node-without-driver" in line


def test_cause_volume_names_a_driver_that_is_not_installed(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = cluster.namespace()
    pod = cluster.pod(ns, volume("any", driver="secrets-store.csi.k8s.com"))
    lines = cluster.doctor(capsys, "--pod", pod)
    line = fail_line(lines, "volume secrets")
    assert "uses CSI driver 'secrets-store.csi.k8s.com', which is not installed" in line
    assert "-> set driver: secrets-store.csi.k8s.io" in line


def test_cause_volume_without_class(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    ns = cluster.namespace()
    pod = cluster.pod(ns, {"driver": DRIVER, "readOnly": True})
    lines = cluster.doctor(capsys, "--pod", pod)
    assert "has no volumeAttributes.secretProviderClass -> name the class" in fail_line(
        lines, "volume secrets"
    )


def test_cause_class_in_another_namespace(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    ns, other = cluster.namespace(), cluster.namespace()
    name = cluster.spc(other, [{"objectName": "a", "objectType": "secret"}], useVMManagedIdentity="true")
    pod = cluster.pod(ns, volume(name))
    lines = cluster.doctor(capsys, "--pod", pod)
    line = fail_line(lines, "class")
    assert f"SecretProviderClass {ns}/{name} not found (it exists in namespace {other})" in line
    assert f"-> create it in namespace {ns}" in line


def test_cause_invalid_class(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    ns = cluster.namespace()
    name = cluster.spc(ns, [{"objectName": "a", "objectType": "secrets"}], useVMManagedIdentity="true")
    lines = cluster.doctor(capsys, "--pod", cluster.pod(ns, volume(name)))
    failing = [line for line in lines if line.startswith("FAIL")]
    assert len(failing) == 1, lines
    assert (
        f"SecretProviderClass {ns}/{name}: spec.parameters.objects[0].objectType: 'secrets' is not one of "
        in (failing[0])
    )


def test_cause_service_principal_without_node_publish_secret(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = cluster.namespace()
    name = cluster.spc(ns, [{"objectName": "a", "objectType": "secret"}])
    lines = cluster.doctor(capsys, "--pod", cluster.pod(ns, volume(name)))
    line = fail_line(lines, "identity")
    assert "uses a service principal, but volume secrets has no nodePublishSecretRef" in line
    assert "-> add nodePublishSecretRef naming a Secret with clientid and clientsecret" in line


def test_cause_node_publish_secret_missing(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    ns = cluster.namespace()
    name = cluster.spc(ns, [{"objectName": "a", "objectType": "secret"}])
    lines = cluster.doctor(capsys, "--pod", cluster.pod(ns, volume(name, secret="kv-creds")))
    line = fail_line(lines, "identity")
    assert f"Secret {ns}/kv-creds (nodePublishSecretRef) not found" in line
    assert f"-> create Secret kv-creds in namespace {ns} with clientid and clientsecret" in line


def test_cause_node_publish_secret_without_client_secret(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = cluster.namespace()
    cluster.server.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "kv-creds"},
            "stringData": {"ClientID": "x"},
        },
        ns,
    )
    name = cluster.spc(ns, [{"objectName": "a", "objectType": "secret"}])
    lines = cluster.doctor(capsys, "--pod", cluster.pod(ns, volume(name, secret="kv-creds")))
    line = fail_line(lines, "identity")
    assert f"Secret {ns}/kv-creds (nodePublishSecretRef) has no clientsecret -> add clientsecret" in line


def test_cause_workload_identity_service_account_missing(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = cluster.namespace()
    name = cluster.spc(ns, [{"objectName": "a", "objectType": "secret"}], clientID="client")
    lines = cluster.doctor(capsys, "--pod", cluster.pod(ns, volume(name), account="app"))
    line = fail_line(lines, "identity")
    assert f"ServiceAccount {ns}/app (the pod's serviceAccountName) not found" in line
    assert "-> create it and federate it with the class's clientID" in line


def test_cause_csidriver_requests_no_workload_identity_token(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    other = "secrets-store-notoken.csi.k8s.io"
    cluster.server.apply(
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "CSIDriver",
            "metadata": {"name": other},
            "spec": {"attachRequired": False, "podInfoOnMount": True, "volumeLifecycleModes": ["Ephemeral"]},
        }
    )
    cluster.server.apply(
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "CSINode",
            "metadata": {"name": "node-notoken"},
            "spec": {"drivers": [{"name": other, "nodeID": "node-notoken"}]},
        }
    )
    ns = cluster.namespace()
    name = cluster.spc(ns, [{"objectName": "a", "objectType": "secret"}], clientID="client")
    pod = cluster.pod(ns, volume(name, driver=other), node="node-notoken")
    lines = cluster.doctor(capsys, "--pod", pod, "--driver-name", other)
    line = fail_line(lines, "identity")
    assert (
        f"uses workload identity, but CSIDriver {other} requests no token for api://AzureADTokenExchange"
        in line
    )
    assert "-> add tokenRequests: [{audience: api://AzureADTokenExchange}] to the CSIDriver" in line


def test_cause_driver_may_not_sync_secrets(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    ns = cluster.namespace()
    name = cluster.spc(
        ns,
        [{"objectName": "a", "objectType": "secret"}],
        useVMManagedIdentity="true",
        secretObjects=[{"secretName": "a", "type": "Opaque", "data": [{"objectName": "a", "key": "a"}]}],
    )
    pod = cluster.pod(ns, volume(name))
    lines = cluster.doctor(capsys, "--pod", pod, "--driver-account", "kube-system/not-the-driver")
    line = fail_line(lines, "sync RBAC")
    assert f"ServiceAccount kube-system/not-the-driver may not get/create/update Secrets in {ns}" in line
    assert "-> kubectl apply -f deploy/driver/rbac.yaml" in line
    # deploy/driver/rbac.yaml is applied: the driver's own account may (RBAC reaches the authorizer
    # a moment after the binding is made, so this is polled).
    deadline = time.monotonic() + 30
    while True:
        lines = cluster.doctor(capsys, "--pod", pod, expect=None)
        if row(lines, "sync RBAC").startswith("ok ") or time.monotonic() > deadline:
            break
    assert row(lines, "sync RBAC").startswith("ok ")


def test_cause_key_vault_denies_and_lacks_objects(
    cluster: Cluster, kv_env: KeyVaultDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    """Everything in Kubernetes is right; Key Vault says 403 for one object and 404 for another."""
    ns, tag = cluster.namespace(), uuid.uuid4().hex[:8]
    client, password, value = f"sp-{tag}", f"pw-{uuid.uuid4().hex}", f"value-{uuid.uuid4().hex}"
    kv_env.register_aad_client(client, secret=password)
    kv_env.put_secret(VAULT, f"ok-{tag}", value)
    kv_env.put_secret(VAULT, f"denied-{tag}", value)
    kv_env.deny_object(VAULT, "secrets", f"denied-{tag}")
    cluster.server.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "kv-creds"},
            "stringData": {"clientid": client, "clientsecret": password},
        },
        ns,
    )
    objects = [{"objectName": f"{k}-{tag}", "objectType": "secret"} for k in ("ok", "denied", "missing")]
    name = cluster.spc(ns, objects, tenantID=kv_env.tenant)
    lines = cluster.doctor(capsys, "--pod", cluster.pod(ns, volume(name, secret="kv-creds")))
    assert f"service principal {client}" in row(lines, "identity")
    assert row(lines, f"ok-{tag}").startswith("ok ")
    denied = fail_line(lines, f"denied-{tag}")
    assert "forbidden (403): the identity lacks secrets/get" in denied and "-> grant secrets/get" in denied
    assert "not found (404)" in fail_line(lines, f"missing-{tag}")
    output = "\n".join(lines)
    assert value not in output and password not in output


def test_cause_workload_identity_not_federated(
    cluster: Cluster, kv_env: KeyVaultDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    """The token request works, but Azure AD refuses the exchange: no federated credential."""
    ns, tag = cluster.namespace(), uuid.uuid4().hex[:8]
    client = f"wi-{tag}"
    kv_env.register_aad_client(client, federated=["system:serviceaccount:elsewhere:app"])
    kv_env.put_secret(VAULT, f"s-{tag}", "v")
    cluster.server.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app"}}, ns)
    name = cluster.spc(
        ns, [{"objectName": f"s-{tag}", "objectType": "secret"}], clientID=client, tenantID=kv_env.tenant
    )
    pod = cluster.pod(ns, volume(name), account="app")
    lines = cluster.doctor(capsys, "--pod", pod)
    assert f"token of ServiceAccount {ns}/app" in row(lines, "identity")
    token = fail_line(lines, "token")
    assert "no token for" in token and "AADSTS70021" in token
    assert "-> federate the ServiceAccount with the client" in token

    # Federated: the same pod's token exchanges, and the object is read.
    kv_env.register_aad_client(client, federated=[f"system:serviceaccount:{ns}:app"])
    lines = cluster.doctor(capsys, "--pod", pod, expect=0)
    assert row(lines, "token").startswith("ok ")
    assert row(lines, f"s-{tag}").startswith("ok ")


def test_failed_mount_events_are_shown(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    ns = cluster.namespace()
    name = cluster.spc(ns, [{"objectName": "a", "objectType": "secret"}], useVMManagedIdentity="true")
    pod = cluster.pod(ns, volume(name))
    pod_name = pod.split("/")[1]
    cluster.server.apply(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{pod_name}.1"},
            "involvedObject": {"kind": "Pod", "name": pod_name, "namespace": ns},
            "reason": "FailedMount",
            "type": "Warning",
            "message": 'MountVolume.SetUp failed for volume "secrets" : rpc error: code = Unknown',
            "count": 3,
        },
        ns,
    )
    lines = cluster.doctor(capsys, "--pod", pod, expect=None)
    assert "FailedMount x3, last: MountVolume.SetUp failed for volume" in row(lines, "events")


def test_class_by_name_with_a_pod(
    cluster: Cluster, kv_env: KeyVaultDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    """`doctor --class NAME --pod NS/POD`: the class from the API server, the pod's own identity."""
    ns, tag = cluster.namespace(), uuid.uuid4().hex[:8]
    client = f"wi-{tag}"
    kv_env.register_aad_client(client, federated=[f"system:serviceaccount:{ns}:app"])
    kv_env.put_secret(VAULT, f"s-{tag}", f"value-{tag}")
    cluster.server.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app"}}, ns)
    objects = [
        {"objectName": f"s-{tag}", "objectType": "secret"},
        {"objectName": f"gone-{tag}", "objectType": "key"},
    ]
    name = cluster.spc(ns, objects, clientID=client, tenantID=kv_env.tenant)
    pod = cluster.pod(ns, volume(name), account="app")
    lines = cluster.doctor(capsys, "--class", name, "--pod", pod)
    assert row(lines, "class").startswith("ok ")
    assert f"workload-identity: client {client}" in row(lines, "identity")
    assert row(lines, "token").startswith("ok ")
    assert row(lines, f"s-{tag}").startswith("ok ")
    assert "not found (404)" in fail_line(lines, f"gone-{tag}")
    assert f"value-{tag}" not in "\n".join(lines)

    lines = cluster.doctor(capsys, "--class", "no-such-class", "--namespace", ns)
    assert f"SecretProviderClass {ns}/no-such-class not found -> create it in namespace {ns}" in fail_line(
        lines, "class"
    )
