"""`kvmount validate --cluster`: the classes and SecretSyncs the API server holds, one namespace or all."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kvmount.cli import main
from tests.conftest import CRDS
from tests.peers.kube import KubeAPIServer, binaries
from tests.support import peer_missing, starts_process


def _class(server: KubeAPIServer, namespace: str, object_type: str) -> str:
    name = f"spc-{uuid.uuid4().hex[:6]}"
    objects = yaml.safe_dump({"array": [yaml.safe_dump({"objectName": "db", "objectType": object_type})]})
    server.apply(
        {
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClass",
            "metadata": {"name": name},
            "spec": {
                "provider": "azure",
                "parameters": {
                    "keyvaultName": "my-vault",
                    "useVMManagedIdentity": "true",
                    "objects": objects,
                },
            },
        },
        namespace,
    )
    return name


def test_cluster_classes(secrets_store_api: KubeAPIServer, capsys: pytest.CaptureFixture[str]) -> None:
    server = secrets_store_api
    broken_ns, clean_ns = f"ns-{uuid.uuid4().hex[:8]}", f"ns-{uuid.uuid4().hex[:8]}"
    for ns in (broken_ns, clean_ns):
        server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    _class(server, broken_ns, "secret")
    broken = _class(server, broken_ns, "certificate")
    _class(server, clean_ns, "key")
    kubeconfig = str(server.kubeconfig)

    assert main(["validate", "--cluster", "--namespace", broken_ns, "--kubeconfig", kubeconfig]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{broken_ns}/{broken}: error: spec.parameters.objects[0].objectType: "
        "'certificate' is not one of secret, key, cert"
    ]
    assert main(["validate", "--cluster", "-n", clean_ns, "--kubeconfig", kubeconfig]) == 0
    assert capsys.readouterr().out == ""

    main(["validate", "--cluster", "--kubeconfig", kubeconfig, "--output", "json"])
    report = json.loads(capsys.readouterr().out)
    assert {
        "kind": "SecretProviderClass",
        "class": f"{broken_ns}/{broken}",
        "line": 0,
        "field": "spec.parameters.objects[0].objectType",
        "severity": "error",
        "message": "'certificate' is not one of secret, key, cert",
    } in report
    assert not [r for r in report if r.get("class", "").startswith(f"{clean_ns}/")]


def secret_sync(server: KubeAPIServer, namespace: str, class_name: str, source_path: str) -> str:
    name = f"sync-{uuid.uuid4().hex[:6]}"
    server.apply(
        {
            "apiVersion": "secret-sync.x-k8s.io/v1alpha1",
            "kind": "SecretSync",
            "metadata": {"name": name},
            "spec": {
                "secretProviderClassName": class_name,
                "serviceAccountName": "app",
                "secretObject": {"type": "Opaque", "data": [{"sourcePath": source_path, "targetKey": "k"}]},
            },
        },
        namespace,
    )
    return name


def test_cluster_secret_syncs(secrets_store_api: KubeAPIServer, capsys: pytest.CaptureFixture[str]) -> None:
    """A SecretSync's checks as `validate -f` runs them, its sourcePaths against its class's files."""
    server = secrets_store_api
    ns = f"ns-{uuid.uuid4().hex[:8]}"
    server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    spc = _class(server, ns, "secret")  # writes the file db
    good = secret_sync(server, ns, spc, "db")
    typo = secret_sync(server, ns, spc, "dbb")
    secret_sync(server, ns, "not-in-the-cluster", "anything")  # not checked: its class is unknown
    kubeconfig = str(server.kubeconfig)

    assert main(["validate", "--cluster", "-n", ns, "--kubeconfig", kubeconfig]) == 1
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"SecretSync {ns}/{typo}: error: spec.secretObject.data[0].sourcePath: 'dbb' "), (
        line
    )
    assert "(files: db)" in line, line

    # Every namespace (-A), in JSON: "kind" and "secretSync" name it; "class" stays the classes'.
    assert main(["validate", "--cluster", "--kubeconfig", kubeconfig, "--output", "json"]) == 1
    report = [r for r in json.loads(capsys.readouterr().out) if r.get("secretSync", "").startswith(f"{ns}/")]
    assert [(r["kind"], r["secretSync"], r["field"], r["line"]) for r in report] == [
        ("SecretSync", f"{ns}/{typo}", "spec.secretObject.data[0].sourcePath", 0)
    ]
    assert "class" not in report[0] and good not in json.dumps(report)


@pytest.fixture(scope="module")
@starts_process
def api_without_secret_sync(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    """An API server with the driver's CRDs and not the sync controller's (a SecretSync is a 404)."""
    if binaries() is None:
        peer_missing("etcd or kube-apiserver not installed: run scripts/peers/kube-apiserver.sh")
    server = KubeAPIServer(tmp_path_factory.mktemp("no-secretsync")).start()
    try:
        server.apply_yaml(CRDS / "secretproviderclasses.yaml")
        yield server
    finally:
        server.stop()


def test_a_cluster_without_secret_syncs_is_not_an_error(
    api_without_secret_sync: KubeAPIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server = api_without_secret_sync
    ns = f"ns-{uuid.uuid4().hex[:8]}"
    server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    broken = _class(server, ns, "certificate")
    kubeconfig = str(server.kubeconfig)
    for scope in (["-n", ns], []):
        assert main(["validate", "--cluster", *scope, "--kubeconfig", kubeconfig]) == 1
        out, err = capsys.readouterr()
        assert out.startswith(f"{ns}/{broken}: error: spec.parameters.objects[0].objectType:"), out
        assert err == ""


def test_unreachable_api_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--cluster", "--kubeconfig", "/nonexistent/kubeconfig"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kvmount validate: ") and "Traceback" not in err


def test_one_class_with_an_oversize_number_does_not_abort_the_others(
    secrets_store_api: KubeAPIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """objectVersionHistory of 5,000 digits once hit int()'s limit and ended the whole run."""
    server = secrets_store_api
    ns = f"ns-{uuid.uuid4().hex[:8]}"
    server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    big = f"spc-{uuid.uuid4().hex[:6]}"
    objects = (
        "array:\n  - |\n    objectName: db\n    objectType: secret\n    objectVersionHistory: " + "9" * 5000
    )
    server.apply(
        {
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClass",
            "metadata": {"name": big},
            "spec": {
                "provider": "azure",
                "parameters": {
                    "keyvaultName": "my-vault",
                    "useVMManagedIdentity": "true",
                    "objects": objects,
                },
            },
        },
        ns,
    )
    other = _class(server, ns, "certificate")

    assert main(["validate", "--cluster", "-n", ns, "--kubeconfig", str(server.kubeconfig)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any(
        line.startswith(f"{ns}/{big}: error: spec.parameters.objects[0].objectVersionHistory: ")
        and "too long for a whole number" in line
        for line in out
    ), out
    assert any(line.startswith(f"{ns}/{other}: error:") for line in out), out


def test_secret_syncs_the_user_may_not_list_leave_the_classes_checked(
    secrets_store_api: KubeAPIServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A user whose Role lists classes and not SecretSyncs: the classes are checked all the same."""
    server = secrets_store_api
    ns = f"ns-{uuid.uuid4().hex[:8]}"
    server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    broken = _class(server, ns, "certificate")
    rule = {"apiGroups": ["secrets-store.csi.x-k8s.io"], "resources": ["secretproviderclasses"]}
    server.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "classes"},
            "rules": [{**rule, "verbs": ["list"]}],
        },
        ns,
    )
    server.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "classes"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "classes"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}],
        },
        ns,
    )
    kubeconfig = server.write_kubeconfig(tmp_path / "reader", server.service_account_token(ns, "reader"))
    assert main(["validate", "--cluster", "-n", ns, "--kubeconfig", str(kubeconfig)]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"{ns}/{broken}: error: spec.parameters.objects[0].objectType:"), out
    assert err == f"kvmount validate: SecretSyncs in namespace {ns} not checked: you may not list them\n"


def test_a_user_who_may_not_list_classes_is_told_so(
    secrets_store_api: KubeAPIServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    server = secrets_store_api
    ns = f"ns-{uuid.uuid4().hex[:8]}"
    server.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kubeconfig = server.write_kubeconfig(tmp_path / "nobody", server.service_account_token(ns, "nobody"))
    assert main(["validate", "--cluster", "-n", ns, "--kubeconfig", str(kubeconfig)]) == 2
    err = capsys.readouterr().err
    refused = f"SecretProviderClasses in namespace {ns}: the kubeconfig's user may not list it (HTTP 403)"
    assert err.startswith(f"kvmount validate: {refused}"), err
    assert "driver" not in err
