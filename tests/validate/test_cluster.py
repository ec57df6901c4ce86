"""`kvmount validate --cluster`: the classes the API server holds, one namespace or all."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml

from kvmount.cli import main
from tests.peers.kube import KubeAPIServer


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
        "class": f"{broken_ns}/{broken}",
        "line": 0,
        "field": "spec.parameters.objects[0].objectType",
        "severity": "error",
        "message": "'certificate' is not one of secret, key, cert",
    } in report
    assert not [r for r in report if r["class"].startswith(f"{clean_ns}/")]


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
