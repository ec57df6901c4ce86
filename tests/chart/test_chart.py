"""charts/kvmount: lint, deploy/ rendered from it, and every object accepted by a real API server.

`helm install`, `helm upgrade` and `helm uninstall` run against an API server of
this module's own (the session one holds the same cluster-wide objects, applied
by other tests, which helm would refuse to adopt).
"""

from __future__ import annotations

import base64
import filecmp
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from kubernetes.client.exceptions import ApiException

from tests.chart.values import ALL_FEATURES, CHART, REPO, helm_template, template
from tests.compat.upstream import helm
from tests.peers.kube import KubeAPIServer, binaries
from tests.support import peer_missing


def run_helm(*args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELM_CACHE_HOME": "/nonexistent-cache", "HELM_CONFIG_HOME": "/nonexistent-config"}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run([str(helm()), *args], capture_output=True, text=True, timeout=300, env=env)


def test_lint_is_clean() -> None:
    for chart in (CHART, CHART / "charts" / "kvmount-driver"):
        done = run_helm("lint", "--strict", str(chart))
        assert done.returncode == 0, done.stdout + done.stderr


def test_deploy_is_the_render_of_the_chart(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(REPO / "scripts" / "render-manifests"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": f"{helm().parent}:{os.environ['PATH']}"},
    )
    assert done.returncode == 0, done.stderr
    rendered = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.yaml"))
    assert rendered, "render-manifests wrote nothing"
    drifted = [str(p) for p in rendered if not filecmp.cmp(tmp_path / p, REPO / "deploy" / p, shallow=False)]
    assert not drifted, f"deploy/ differs from charts/kvmount in {drifted}: run scripts/render-manifests"


@pytest.fixture(scope="module")
def own_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    if binaries() is None:
        reason = "etcd or kube-apiserver not installed: run scripts/peers/kube-apiserver.sh"
        peer_missing(reason)
    server = KubeAPIServer(tmp_path_factory.mktemp("chart-api")).start()
    try:
        yield server
    finally:
        server.stop()


def dry_run_create(api: KubeAPIServer, doc: dict[str, Any], namespace: str) -> None:
    resource = api.dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    ns = namespace if resource.namespaced else None
    body = {**doc, "metadata": {**doc["metadata"], **({"namespace": ns} if ns else {})}}
    resource.create(body=body, namespace=ns, dry_run="All")


# All features: the admission webhook in the sync controller's pods; ADMISSION_ALONE: its own Deployment.
ADMISSION_ALONE = {"admission": {"enabled": True}}


@pytest.mark.parametrize(
    "values", [{}, ALL_FEATURES, ADMISSION_ALONE], ids=["defaults", "all-features", "admission-alone"]
)
def test_every_rendered_object_passes_server_validation(
    own_api: KubeAPIServer, values: dict[str, Any]
) -> None:
    namespace = f"chart-{uuid.uuid4().hex[:8]}"
    own_api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    docs = helm_template(values, namespace=namespace, include_crds=True)
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert {c["metadata"]["name"] for c in crds} >= {
        "secretproviderclasses.secrets-store.csi.x-k8s.io",
        "secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io",
    }
    kinds = set()
    for doc in docs:
        kinds.add(doc["kind"])
        try:
            dry_run_create(own_api, doc, namespace)
        except ApiException as err:
            raise AssertionError(f"{doc['kind']} {doc['metadata']['name']}: {err.body}") from None
    assert {"DaemonSet", "CSIDriver", "ClusterRole", "ServiceAccount"} <= kinds
    if values is ALL_FEATURES:
        assert {"Deployment", "ValidatingAdmissionPolicy", "Role"} <= kinds
    if values:
        assert {"Deployment", "Service", "ValidatingWebhookConfiguration"} <= kinds


def _rendered_driver_args(values: dict[str, Any]) -> list[str]:
    (daemonset,) = [
        d for d in helm_template(values) if d["kind"] == "DaemonSet" and "driver" in d["metadata"]["name"]
    ]
    args: list[str] = daemonset["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_restart_values_become_the_drivers_flags() -> None:
    on = _rendered_driver_args(ALL_FEATURES)
    assert "--enable-workload-restart=true" in on
    assert "--workload-restart-min-interval=10m" in on
    off = _rendered_driver_args({})
    assert not [a for a in off if "workload-restart" in a]


def _rotation(rotation: dict[str, Any]) -> tuple[bool, dict[str, list[Any]]]:
    """requiresRepublish, and the rules of the driver's rotation roles, with rotation on."""
    values = {"secrets-store-csi-driver": {"enableSecretRotation": True, "rotation": rotation}}
    docs = helm_template(values)
    (driver,) = [d for d in docs if d["kind"] == "CSIDriver"]
    roles = {
        d["metadata"]["name"]: d["rules"]
        for d in docs
        if d["kind"] == "ClusterRole" and d["metadata"]["name"].startswith("secretproviderrotation")
    }
    return driver["spec"]["requiresRepublish"], roles


def test_one_rotation_path_sets_requires_republish_and_the_grants() -> None:
    """The driver's loop (default): no kubelet re-publish, and the driver may read what kubelet
    would pass; kubelet's: re-publish on, nothing granted (upstream's chart)."""
    republish, roles = _rotation({})
    assert republish is False
    (rules,) = roles.values()
    assert {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]} in rules
    assert any(r["resources"] == ["serviceaccounts/token"] for r in rules)  # the chart's tokenRequests
    assert _rotation({"path": "kubelet"}) == (True, {})
    assert _rotation({"path": "kubelet", "watchSecrets": True}) == (True, {})
    _, roles = _rotation({"watchSecrets": True})
    watch = roles["secretproviderrotationwatch-role"]
    assert watch == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]}]
    refused = template({"secrets-store-csi-driver": {"rotation": {"path": "both"}}})
    assert refused.returncode != 0 and "/rotation/path" in refused.stderr


def _rendered_provider_args(values: dict[str, Any]) -> list[str]:
    (daemonset,) = [
        d for d in helm_template(values) if d["kind"] == "DaemonSet" and "provider" in d["metadata"]["name"]
    ]
    args: list[str] = daemonset["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def _sync_controller_provider_args(values: dict[str, Any]) -> list[str]:
    (deployment,) = [
        d for d in helm_template({**values, "syncController": {"enabled": True}}) if d["kind"] == "Deployment"
    ]
    (container,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["args"][0] == "provider"
    ]
    args: list[str] = container["args"]
    return args


def test_stale_on_error_is_off_unless_set() -> None:
    assert not [a for a in _rendered_provider_args({}) if "stale" in a]
    assert not [a for a in _sync_controller_provider_args({}) if "stale" in a]
    stale = {"staleOnError": "15m", "staleCacheBytes": 8388608}
    flags = {"--serve-stale-on-error=15m", "--stale-cache-bytes=8388608"}
    assert flags <= set(_rendered_provider_args(stale))
    assert flags <= set(_sync_controller_provider_args(stale)), "the sync controller's provider too"
    refused = template({"staleOnError": "15 minutes"})
    assert refused.returncode != 0 and "staleOnError" in refused.stderr


def _admission(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        d["kind"]: d for d in helm_template(values) if d["metadata"]["name"].startswith("kvmount-admission")
    }


def test_the_admission_webhook_is_off_by_default_and_never_in_the_way() -> None:
    assert _admission({}) == {}
    docs = _admission({"admission": {"enabled": True}})
    assert set(docs) == {
        "Secret",
        "ServiceAccount",
        "Deployment",
        "Service",
        "ValidatingWebhookConfiguration",
    }
    hooks = docs["ValidatingWebhookConfiguration"]["webhooks"]
    assert [(h["rules"][0]["apiGroups"], h["rules"][0]["resources"]) for h in hooks] == [
        (["secrets-store.csi.x-k8s.io"], ["secretproviderclasses"]),
        (["secret-sync.x-k8s.io"], ["secretsyncs"]),
    ]
    for hook in hooks:
        assert (hook["failurePolicy"], hook["timeoutSeconds"], hook["sideEffects"]) == ("Ignore", 3, "None")
        assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
        assert hook["clientConfig"]["caBundle"] == hooks[0]["clientConfig"]["caBundle"]
    hook = hooks[0]
    # The caBundle is the CA that signed the served certificate, which names the Service.
    ca = x509.load_pem_x509_certificate(base64.b64decode(hook["clientConfig"]["caBundle"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(docs["Secret"]["data"]["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kvmount-admission.kube-system.svc" in names.get_values_for_type(x509.DNSName)
    [container] = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert (
        container["args"][:2] == ["admission", "--port=9443"] and "--deny-invalid=false" in container["args"]
    )
    denying = _admission({"admission": {"enabled": True, "denyInvalid": True}})
    assert "--deny-invalid=true" in denying["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]


def _pod_templates(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each Deployment's pod template, by the Deployment's name."""
    return {d["metadata"]["name"]: d["spec"]["template"] for d in docs if d["kind"] == "Deployment"}


def _admission_container(template: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The webhook's container of a pod template and the pod's volumes it mounts."""
    [container] = [c for c in template["spec"]["containers"] if c["name"] == "admission"]
    mounted = {m["name"] for m in container["volumeMounts"]}
    return container, [v for v in template["spec"]["volumes"] if v["name"] in mounted]


@pytest.mark.parametrize("sync_controller", [False, True], ids=["alone", "in-sync-controller"])
def test_the_admission_service_selects_the_pods_that_serve_it(sync_controller: bool) -> None:
    values = {
        "admission": {"enabled": True, "resources": {"requests": {"cpu": "5m", "memory": "40Mi"}}},
        "syncController": {"enabled": sync_controller},
    }
    docs = helm_template(values)
    [service] = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "kvmount-admission"]
    serving = {
        name
        for name, template in _pod_templates(docs).items()
        if service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    }
    with_webhook = {
        name
        for name, template in _pod_templates(docs).items()
        if any(c["name"] == "admission" for c in template["spec"]["containers"])
    }
    assert serving == with_webhook == {"kvmount-sync-controller" if sync_controller else "kvmount-admission"}
    [target] = [p["targetPort"] for p in service["spec"]["ports"]]
    pod = _pod_templates(docs)[serving.pop()]
    container, volumes = _admission_container(pod)
    assert [p["containerPort"] for p in container["ports"]] == [target]
    # The same container and pod security either way: those of its own Deployment.
    alone_pod = _pod_templates(helm_template({"admission": values["admission"]}))["kvmount-admission"]
    assert (container, volumes) == _admission_container(alone_pod)
    assert pod["spec"]["securityContext"] == alone_pod["spec"]["securityContext"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["args"] == [
        "admission",
        "--port=9443",
        "--tls-cert-file=/tls/tls.crt",
        "--tls-private-key-file=/tls/tls.key",
        "--deny-invalid=false",
    ]
    # admission.resources, merged into the chart's defaults as helm merges values.
    assert container["resources"] == {
        "requests": {"cpu": "5m", "memory": "40Mi"},
        "limits": {"memory": "96Mi"},
    }
    assert container["readinessProbe"]["httpGet"] == {"scheme": "HTTPS", "path": "/healthz", "port": 9443}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {v["name"]: v.get("secret", {}).get("secretName") for v in volumes} == {
        "admission-tls": "kvmount-admission-tls",
        "admission-no-token": None,  # an emptyDir over the service account token's path
    }
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {
        "/tls": "admission-tls",
        "/var/run/secrets/kubernetes.io/serviceaccount": "admission-no-token",
    }
    own = {d["kind"] for d in docs if d["metadata"]["name"] == "kvmount-admission"}
    assert ("Deployment" in own, "ServiceAccount" in own) == (not sync_controller, not sync_controller)


def test_the_admission_webhook_takes_cert_managers_certificate() -> None:
    docs = _admission({"admission": {"enabled": True, "certManager": True}})
    assert {"Issuer", "Certificate"} <= set(docs) and "Secret" not in docs
    config = docs["ValidatingWebhookConfiguration"]
    assert config["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "kube-system/kvmount-admission"
    }
    assert not [hook for hook in config["webhooks"] if "caBundle" in hook["clientConfig"]]
    assert docs["Certificate"]["spec"]["dnsNames"] == ["kvmount-admission.kube-system.svc"]


def names(api: KubeAPIServer, api_version: str, kind: str, namespace: str | None = None) -> list[str]:
    """kind/name of the objects of a kind that helm manages (in the namespace, if namespaced)."""
    resource = api.dynamic.resources.get(api_version=api_version, kind=kind)
    listed = resource.get(namespace=namespace, label_selector="app.kubernetes.io/managed-by=Helm").to_dict()
    return [f"{kind}/{item['metadata']['name']}" for item in listed["items"]]


def kvmount_objects(api: KubeAPIServer, namespace: str) -> list[str]:
    """Every object the chart makes (CRDs aside: helm leaves crds/ in place on uninstall)."""
    found = names(api, "apps/v1", "DaemonSet", namespace) + names(api, "apps/v1", "Deployment", namespace)
    found += names(api, "v1", "ServiceAccount", namespace)
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        found += names(api, "rbac.authorization.k8s.io/v1", kind)
    found += names(api, "storage.k8s.io/v1", "CSIDriver")
    return sorted(found)


def driver_args(api: KubeAPIServer, namespace: str) -> list[str]:
    resource = api.dynamic.resources.get(api_version="apps/v1", kind="DaemonSet")
    daemonset = resource.get(name="secrets-store-csi-driver", namespace=namespace).to_dict()
    args: list[str] = daemonset["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_install_upgrade_uninstall(own_api: KubeAPIServer, tmp_path: Path) -> None:
    namespace = f"kvmount-{uuid.uuid4().hex[:8]}"
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(ALL_FEATURES))
    kube = own_api.kubeconfig
    done = run_helm(
        "install",
        "kvm",
        str(CHART),
        "-n",
        namespace,
        "--create-namespace",
        "-f",
        str(values),
        kubeconfig=kube,
    )
    assert done.returncode == 0, done.stderr
    assert "--enable-secret-rotation=true" in driver_args(own_api, namespace)
    assert "ClusterRole/secretprovidersyncing-role" in kvmount_objects(own_api, namespace)

    # A changed value rolls the driver's pod template; syncSecret off takes its RBAC away.
    done = run_helm(
        "upgrade", "kvm", str(CHART), "-n", namespace, "-f", str(values),
        "--set", "secrets-store-csi-driver.rotationPollInterval=45s",
        "--set", "secrets-store-csi-driver.syncSecret.enabled=false",
        kubeconfig=kube,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--rotation-poll-interval=45s" in driver_args(own_api, namespace)
    assert "ClusterRole/secretprovidersyncing-role" not in kvmount_objects(own_api, namespace)

    done = run_helm("uninstall", "kvm", "-n", namespace, "--wait", kubeconfig=kube)
    assert done.returncode == 0, done.stderr
    assert kvmount_objects(own_api, namespace) == []


def test_a_misspelled_value_fails_install_naming_it(own_api: KubeAPIServer, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"secrets-store-csi-driver": {"syncSecret": {"enabeld": True}}}))
    done = run_helm(
        "install", "kvm", str(CHART), "-n", "default", "-f", str(values), kubeconfig=own_api.kubeconfig
    )
    assert done.returncode != 0
    assert "'enabeld' not allowed" in done.stderr and "secrets-store-csi-driver" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    listed = run_helm("list", "-A", "-q", kubeconfig=own_api.kubeconfig)
    assert "kvm" not in listed.stdout.split()
