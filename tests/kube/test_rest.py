"""kube/rest.py and kube/kubeconfig.py: every way a kubeconfig or a pod's service account says who
we are, proven against the real API server (tokens, token files that change, client certificates,
CA file or data, insecure), and the errors of what is not supported or broken."""

from __future__ import annotations

import base64
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvmount.kube import kubeconfig
from kvmount.kube.api_store import KubeStore
from kvmount.kube.errors import StoreUnavailable
from kvmount.kube.rest import ApiError, RestClient, Unreachable, path
from tests.certs import server_tls
from tests.peers.kube import KubeAPIServer

NAMESPACES = path("v1", "namespaces")


def write(file: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    file.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return file


def client(file: Path) -> RestClient:
    return RestClient(kubeconfig.from_kubeconfig([str(file)]))


def ca_data(server: KubeAPIServer) -> str:
    return base64.b64encode(server.ca_file.read_bytes()).decode()


def test_token_and_ca_data(kube_apiserver: KubeAPIServer) -> None:
    rest = client(kube_apiserver.kubeconfig)  # the peer's own: token, certificate-authority-data
    names = [n["metadata"]["name"] for n in rest.get(NAMESPACES)["items"]]
    assert "kube-system" in names


def test_token_file_is_read_again_when_it_changes(kube_apiserver: KubeAPIServer, tmp_path: Path) -> None:
    """As a bound service account token that kubelet rotates: the next request sends the new one."""
    (tmp_path / "token").write_text("not-a-valid-token\n")
    cluster = {"server": kube_apiserver.url, "certificate-authority": str(kube_apiserver.ca_file)}
    rest = client(write(tmp_path / "config", cluster, {"tokenFile": "token"}))  # relative to the file
    with pytest.raises(ApiError) as info:
        rest.get(NAMESPACES)
    assert (info.value.status, info.value.reason) == (401, "Unauthorized")
    (tmp_path / "token.new").write_text(kube_apiserver.admin_token)
    (tmp_path / "token.new").replace(tmp_path / "token")
    assert rest.get(NAMESPACES)["items"]


def test_client_certificate_files_and_data(kube_apiserver: KubeAPIServer, tmp_path: Path) -> None:
    cert, key = kube_apiserver.client_ca.issue("cert-user", ["system:masters"])
    (tmp_path / "client.crt").write_bytes(cert)
    (tmp_path / "client.key").write_bytes(key)
    cluster = {"server": kube_apiserver.url, "certificate-authority-data": ca_data(kube_apiserver)}
    as_files = {"client-certificate": "client.crt", "client-key": "client.key"}
    as_data = {
        "client-certificate-data": base64.b64encode(cert).decode(),
        "client-key-data": base64.b64encode(key).decode(),
    }
    for user in (as_files, as_data):
        rest = client(write(tmp_path / "config", cluster, user))
        assert rest.get(NAMESPACES)["items"]
    # Not vacuous: without the certificate the same server refuses.
    with pytest.raises(ApiError) as info:
        client(write(tmp_path / "config", cluster, {})).get(NAMESPACES)
    assert info.value.status in (401, 403)


def test_a_named_ca_is_the_only_one_trusted(kube_apiserver: KubeAPIServer, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.crt"
    other.write_bytes(server_tls("elsewhere", ["localhost"]).ca_pem)
    cluster = {"server": kube_apiserver.url, "certificate-authority": str(other)}
    rest = client(write(tmp_path / "config", cluster, {"token": kube_apiserver.admin_token}))
    with pytest.raises(Unreachable):
        rest.get(NAMESPACES)
    insecure = {"server": kube_apiserver.url, "insecure-skip-tls-verify": True}
    rest = client(write(tmp_path / "config", insecure, {"token": kube_apiserver.admin_token}))
    assert rest.get(NAMESPACES)["items"]


def test_tls_server_name(kube_apiserver: KubeAPIServer, tmp_path: Path) -> None:
    """The name checked against the server's certificate (and sent as SNI) instead of the URL's host."""
    user = {"token": kube_apiserver.admin_token}
    for name, works in (("kubernetes.default.svc", True), ("elsewhere.example", False)):
        cluster = {
            "server": kube_apiserver.url,
            "certificate-authority-data": ca_data(kube_apiserver),
            "tls-server-name": name,
        }
        rest = client(write(tmp_path / "config", cluster, user))
        if works:
            assert rest.get(NAMESPACES)["items"]
        else:
            with pytest.raises(Unreachable):
                rest.get(NAMESPACES)


def test_errors_carry_the_servers_status_message(kube_apiserver: KubeAPIServer) -> None:
    rest = client(kube_apiserver.kubeconfig)
    with pytest.raises(ApiError) as info:
        rest.get(path("v1", "secrets", "default", "no-such-secret"))
    assert (info.value.status, info.value.reason) == (404, "Not Found")
    assert info.value.message == 'secrets "no-such-secret" not found'


def test_create_patch_replace_delete_and_watch(kube_apiserver: KubeAPIServer) -> None:
    rest = client(kube_apiserver.kubeconfig)
    ns = f"rest-{uuid.uuid4().hex[:8]}"
    rest.create(NAMESPACES, {"metadata": {"name": ns}})
    maps = path("v1", "configmaps", ns)
    made = rest.create(maps, {"metadata": {"name": "a"}, "data": {"k": "1"}})
    seen: list[tuple[str, str]] = []
    started = threading.Event()

    def watch() -> None:
        started.set()
        for event in rest.watch(maps, 5, resource_version=made["metadata"]["resourceVersion"]):
            seen.append((event["type"], event["object"]["data"]["k"]))

    watcher = threading.Thread(target=watch)
    watcher.start()
    started.wait(5)
    patched = rest.patch(path("v1", "configmaps", ns, "a"), {"data": {"k": "2"}})
    stale = {**made, "data": {"k": "3"}}
    with pytest.raises(ApiError) as info:
        rest.replace(path("v1", "configmaps", ns, "a"), stale)  # made's resourceVersion is stale
    assert info.value.status == 409
    rest.replace(path("v1", "configmaps", ns, "a"), {**patched, "data": {"k": "3"}})
    rest.delete(path("v1", "configmaps", ns, "a"))
    watcher.join(15)  # the server ends the watch after its timeoutSeconds (5)
    assert not watcher.is_alive()
    assert seen == [("MODIFIED", "2"), ("MODIFIED", "3"), ("DELETED", "3")]
    rest.delete(path("v1", "namespaces", name=ns))


UNSUPPORTED = [
    ("exec", {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "kubelogin"}}),
    ("auth-provider", {"auth-provider": {"name": "oidc"}}),
    ("username", {"username": "admin", "password": "x"}),
]


@pytest.mark.parametrize(("field", "user"), UNSUPPORTED, ids=[u[0] for u in UNSUPPORTED])
def test_unsupported_users_fail_naming_the_field(tmp_path: Path, field: str, user: dict[str, Any]) -> None:
    file = write(tmp_path / "config", {"server": "https://127.0.0.1:1"}, user)
    with pytest.raises(StoreUnavailable) as info:
        KubeStore(str(file)).rest()
    message = str(info.value)
    assert message.startswith("cannot configure the Kubernetes API client: kubeconfig ")
    assert f"user 'u': {field} credentials are not supported here" in message
    assert "\n" not in message


BROKEN: list[tuple[str, str, str]] = [
    ("not yaml", "clusters: [", "is not valid YAML"),
    ("no current context", "apiVersion: v1\nkind: Config\n", "no current-context"),
    (
        "unknown context",
        "current-context: nope\ncontexts: []\n",
        "current-context 'nope' is not among its contexts",
    ),
    (
        "no server",
        "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "clusters: [{name: c, cluster: {}}]\n",
        "cluster 'c': server must be a non-empty string",
    ),
    (
        "bad ca data",
        "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "clusters: [{name: c, cluster: {server: 'https://h', certificate-authority-data: '!!'}}]\n",
        "certificate-authority-data is not base64",
    ),
    (
        "missing token file",
        "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
        "users: [{name: u, user: {tokenFile: gone}}]\n",
        "cannot read the token file",
    ),
    (
        "certificate without key",
        "current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
        "users: [{name: u, user: {client-certificate-data: 'YQ=='}}]\n",
        "needs both its certificate and its key",
    ),
]


@pytest.mark.parametrize(("case", "text", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_kubeconfigs(tmp_path: Path, case: str, text: str, expected: str) -> None:
    file = tmp_path / "config"
    file.write_text(text)
    with pytest.raises(StoreUnavailable) as info:
        KubeStore(str(file)).rest()
    assert expected in str(info.value)


def test_kubeconfig_env_lists_files_merged_first_wins(kube_apiserver: KubeAPIServer, tmp_path: Path) -> None:
    other = write(tmp_path / "other", {"server": "https://127.0.0.1:1"}, {"token": "other"})
    env = {"KUBECONFIG": f"{tmp_path / 'missing'}:{kube_apiserver.kubeconfig}:{other}"}
    connection = kubeconfig.load("", env)
    assert connection.server == kube_apiserver.url
    assert RestClient(connection).get(NAMESPACES)["items"]


def test_in_cluster(kube_apiserver: KubeAPIServer, tmp_path: Path) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes(kube_apiserver.ca_file.read_bytes())
    (account / "token").write_text(kube_apiserver.admin_token)
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(kube_apiserver.port)}
    assert RestClient(kubeconfig.in_cluster(env, str(account))).get(NAMESPACES)["items"]
    with pytest.raises(kubeconfig.ConfigError) as info:
        kubeconfig.load("", {})
    assert "KUBERNETES_SERVICE_HOST/PORT are not set" in str(info.value)
    (account / "token").unlink()
    with pytest.raises(kubeconfig.ConfigError, match="cannot read the token file"):
        kubeconfig.in_cluster(env, str(account))


DEEP_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "depths.test.kvmount.io"},
    "spec": {
        "group": "test.kvmount.io",
        "scope": "Namespaced",
        "names": {"kind": "Depth", "plural": "depths", "singular": "depth", "listKind": "DepthList"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                        },
                    }
                },
            }
        ],
    },
}


def test_an_answer_nested_past_the_recursion_limit_is_an_invalid_answer(
    kube_apiserver: KubeAPIServer,
) -> None:
    """The API server keeps (and answers) a custom resource nested deeper than Python's json
    recurses: that answer is an InvalidJSONResponse, as any other undecodable one, not a crash."""
    kube_apiserver.apply(DEEP_CRD)
    kube_apiserver.wait_established(DEEP_CRD["metadata"]["name"])
    depth = 5000
    body = '{"apiVersion": "test.kvmount.io/v1", "kind": "Depth", "metadata": {"name": "deep"}, "spec": '
    body += '{"a": ' * depth + "1" + "}" * depth + "}"
    rest = client(kube_apiserver.kubeconfig)
    where = path("test.kvmount.io/v1", "depths", "default", "deep")
    # json.dumps recurses too: the body goes as text, through the client's own pool.
    answer = rest._manager().request(
        "POST",
        rest._url(path("test.kvmount.io/v1", "depths", "default"), None),
        body=body.encode(),
        headers=rest._headers("application/json"),
    )
    assert answer.status in (200, 201, 409), answer.data[:300]
    with pytest.raises(Unreachable, match="InvalidJSONResponse"):
        rest.get(where)
