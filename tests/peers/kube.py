"""A real Kubernetes API server for tests: etcd plus kube-apiserver on loopback.

Both binaries come from scripts/peers/kube-apiserver.sh (etcd from Debian,
kube-apiserver built from the k8s.io/kubernetes Go module and cached under
$KVMOUNT_CACHE/bin). No controller-manager, scheduler or kubelet run: objects
are stored and served, nothing reconciles them (Pods stay Pending, namespaces
get no "default" ServiceAccount).

Security is set up like a cluster's, so code under test is exercised as it
would be against one:

* TLS: a throwaway CA signs the serving certificate for 127.0.0.1/localhost.
* Authentication: a static token file holding one admin token (user "admin",
  group system:masters), plus ServiceAccount tokens (TokenRequest API, signed
  with a throwaway RSA key) for least-privilege identities such as the driver,
  and client certificates that ``server.client_ca`` issues (user = CN, groups = O).
* Authorization: RBAC. The admin is in system:masters and may do anything; a
  ServiceAccount may do only what Roles bound to it allow, so a test can prove
  the driver's RBAC manifest is sufficient.
* Admission: defaults, minus ServiceAccount (no controller creates the default
  ServiceAccount that it would insist on).

    with KubeAPIServer(workdir) as server:
        server.kubeconfig              # admin kubeconfig (Path, self-contained)
        server.api_client()            # kubernetes.client.ApiClient as admin
        server.apply_yaml("crd.yaml")  # server-side apply; waits for CRDs
        token = server.service_account_token("ns", "driver")
        server.write_kubeconfig(path, token)

Run ``python -m tests.peers.kube`` to keep one up by hand.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import dynamic
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from tests.certs import client_ca, server_tls
from tests.support import Daemon, eventually, free_port, start_daemon, until_ready

CACHE = Path(os.environ.get("KVMOUNT_CACHE", Path.home() / ".cache" / "kvmount"))
APISERVER = CACHE / "bin" / "kube-apiserver"
FIELD_MANAGER = "kvmount-tests"
# Every request audited without bodies, when its response starts (a watch: the moment it is
# open) and when it completes: tests count requests, one per audit ID.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
"""


def binaries() -> tuple[str, str] | None:
    """(etcd, kube-apiserver) paths when both are installed, else None."""
    etcd = shutil.which("etcd")
    if etcd is None or not os.access(APISERVER, os.X_OK):
        return None
    return etcd, str(APISERVER)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.crt, apiserver.crt, apiserver.key): a CA and a serving cert it signed."""
    tls = server_tls("kube-apiserver", ["localhost", "kubernetes.default.svc"], days=2)
    ca_path, cert_path, key_path = (
        directory / "ca.crt",
        directory / "apiserver.crt",
        directory / "apiserver.key",
    )
    ca_path.write_bytes(tls.ca_pem)
    cert_path.write_bytes(tls.cert_pem)
    key_path.write_bytes(tls.key_pem)
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


def _service_account_keys(directory: Path) -> tuple[Path, Path]:
    """(sa.key, sa.pub): the key pair that signs and verifies ServiceAccount tokens."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = directory / "sa.key", directory / "sa.pub"
    private.write_bytes(_pem_key(key))
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


class KubeAPIServer:
    """etcd + kube-apiserver in ``workdir`` (certificates, data, logs, kubeconfig)."""

    issuer = "https://kubernetes.default.svc"

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.kubeconfig = self.workdir / "kubeconfig"
        self.audit_log = self.workdir / "audit.log"
        self.ca_file = self.workdir / "ca.crt"
        # Signs ServiceAccount tokens; kube-controller-manager's token controller needs it too.
        self.service_account_key = self.workdir / "sa.key"
        self.admin_token = secrets.token_urlsafe(32)
        # Signs client certificates the API server accepts (user = CN, groups = O).
        self.client_ca = client_ca("kube-apiserver clients")
        self.port = 0
        self.etcd_url = ""
        self._daemons: list[Daemon] = []
        self._argv: dict[str, list[str]] = {}
        self._client: k8s.ApiClient | None = None
        self._dynamic: dynamic.DynamicClient | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # -------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 120) -> KubeAPIServer:
        found = binaries()
        if found is None:
            raise RuntimeError("etcd or kube-apiserver missing: run scripts/peers/kube-apiserver.sh")
        etcd, apiserver = found
        self.workdir.mkdir(parents=True, exist_ok=True)
        client_port, peer_port, self.port = free_port(), free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        try:
            self._spawn(
                "etcd",
                [
                    etcd, "--name", "default", "--data-dir", str(self.workdir / "etcd"),
                    "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
                    "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                    "--initial-cluster", f"default={peer_url}",
                ],
            )  # fmt: skip
            ca, cert, key = _certificates(self.workdir)
            sa_key, sa_pub = _service_account_keys(self.workdir)
            tokens = self.workdir / "tokens.csv"
            tokens.write_text(f'{self.admin_token},admin,admin-uid,"system:masters"\n')
            tokens.chmod(0o600)
            client_ca_file = self.workdir / "client-ca.crt"
            client_ca_file.write_bytes(self.client_ca.pem())
            audit_policy = self.workdir / "audit-policy.yaml"
            audit_policy.write_text(AUDIT_POLICY)
            self._spawn(
                "kube-apiserver",
                [
                    apiserver, "--etcd-servers", self.etcd_url,
                    "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
                    "--secure-port", str(self.port),
                    "--tls-cert-file", str(cert), "--tls-private-key-file", str(key),
                    "--token-auth-file", str(tokens), "--authorization-mode", "RBAC",
                    "--client-ca-file", str(client_ca_file),
                    "--service-account-issuer", self.issuer,
                    "--service-account-key-file", str(sa_pub),
                    "--service-account-signing-key-file", str(sa_key),
                    "--service-cluster-ip-range", "10.96.0.0/24",
                    "--disable-admission-plugins", "ServiceAccount",
                    "--enable-priority-and-fairness=false",
                    # The "kubernetes" Service endpoints may not point at loopback.
                    "--endpoint-reconciler-type", "none",
                "--allow-privileged=true",  # CSI node plugins run privileged
                # Every request once, at Metadata level: tests count what a component costs.
                "--audit-policy-file", str(audit_policy), "--audit-log-path", str(self.audit_log),
                "--audit-log-format", "json", "--audit-log-mode", "blocking",
                ],
            )  # fmt: skip
            self.write_kubeconfig(self.kubeconfig, self.admin_token, user="admin")
            self._wait_ready(ca, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd: SIGTERM, wait, SIGKILL if need be."""
        if self._client is not None:
            self._client.close()  # type: ignore[no-untyped-call]
            self._client, self._dynamic = None, None
        for daemon in reversed(self._daemons):
            daemon.stop()
        self._daemons.clear()

    def __enter__(self) -> KubeAPIServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def restart_apiserver(self, timeout: float = 120, while_down: Callable[[], None] | None = None) -> None:
        """Kill kube-apiserver (etcd keeps the data) and start it again on the same port:
        watches break, clients must come back on their own. ``while_down`` runs in between
        (e.g. ``delete_from_etcd``)."""
        for daemon in self._daemons:
            if daemon.name == "kube-apiserver":
                daemon.process.kill()  # open watches would hold a graceful stop for a minute
                daemon.process.wait(timeout=30)
                self._daemons.remove(daemon)
                break
        if while_down is not None:
            while_down()
        self._spawn("kube-apiserver", self._argv["kube-apiserver"])
        self._wait_ready(self.ca_file, timeout)

    def delete_from_etcd(self, key: str) -> int:
        """Delete ``key`` (e.g. /registry/configmaps/NS/NAME) in etcd itself, through etcd's
        JSON gateway, behind kube-apiserver's back: it never sees a watch event for it."""
        body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
        request = urllib.request.Request(f"{self.etcd_url}/v3/kv/deleterange", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(json.loads(response.read()).get("deleted") or 0)

    def _spawn(self, name: str, argv: list[str]) -> None:
        self._argv[name] = argv
        self._daemons.append(start_daemon(name, argv, self.workdir / f"{name}.log"))

    def _wait_ready(self, ca: Path, timeout: float) -> None:
        context = ssl.create_default_context(cafile=str(ca))
        request = urllib.request.Request(
            f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"}
        )

        def ready() -> bool:
            try:
                with urllib.request.urlopen(request, context=context, timeout=5) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        until_ready(ready, timeout=timeout, what="kube-apiserver ready (/readyz)", daemons=self._daemons)

    # -------------------------------------------------------------- clients

    def write_kubeconfig(self, path: Path, token: str, user: str = "user") -> Path:
        """A self-contained kubeconfig (CA embedded) that authenticates with ``token``."""
        ca = base64.b64encode(self.ca_file.read_bytes()).decode() if self.ca_file.exists() else ""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "kvmount-test", "cluster": {"server": self.url, "certificate-authority-data": ca}}
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": user, "context": {"cluster": "kvmount-test", "user": user}}],
            "current-context": user,
        }
        path = Path(path)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def api_client(self, kubeconfig: Path | None = None) -> k8s.ApiClient:
        """A new kubernetes ApiClient from ``kubeconfig`` (default: the admin's). Close it when done."""
        made: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig or self.kubeconfig)
        )
        return made

    @property
    def admin(self) -> k8s.ApiClient:
        """A shared admin ApiClient, closed by stop()."""
        if self._client is None:
            self._client = self.api_client()
        return self._client

    @property
    def dynamic(self) -> dynamic.DynamicClient:
        """A shared admin DynamicClient (discovery cache kept in the workdir)."""
        if self._dynamic is None:
            self._dynamic = dynamic.DynamicClient(  # type: ignore[no-untyped-call]
                self.admin, cache_file=str(self.workdir / "discovery.json")
            )
        return self._dynamic

    def service_account_token(
        self,
        namespace: str,
        name: str,
        audiences: Iterable[str] | None = None,
        expiration_seconds: int = 3600,
    ) -> str:
        """A bound token for ServiceAccount ``namespace/name`` (created if missing) via TokenRequest.

        The namespace must exist. Without ``audiences`` the token is for the API
        server itself (audience = the issuer).
        """
        core = k8s.CoreV1Api(self.admin)
        try:
            core.create_namespaced_service_account(
                namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name))
            )
        except k8s.ApiException as e:
            if e.status != 409:
                raise
        spec = k8s.V1TokenRequestSpec(
            audiences=list(audiences) if audiences is not None else [self.issuer],
            expiration_seconds=expiration_seconds,
        )
        request = core.create_namespaced_service_account_token(
            name, namespace, k8s.AuthenticationV1TokenRequest(spec=spec)
        )
        if request.status is None or not request.status.token:
            raise RuntimeError(f"TokenRequest for {namespace}/{name} returned no token")
        return request.status.token

    # -------------------------------------------------------------- audit

    def audit_mark(self) -> int:
        """Where the audit log ends now: ``requests(user, since=mark)`` counts what comes after."""
        return self.audit_log.stat().st_size if self.audit_log.exists() else 0

    def requests(self, user: str, since: int = 0, timeout: float = 30) -> list[tuple[str, str, str]]:
        """(verb, resource[/subresource], name) of ``user``'s requests logged after ``since``.

        A request's audit event is written as its response completes, which can be a moment after
        the client has the response: an admin GET of a unique name is sent last and waited for,
        so every earlier request of the caller is in the log by then.
        """
        marker = f"audit-mark-{secrets.token_hex(6)}"
        try:
            k8s.CoreV1Api(self.admin).read_namespace(marker)
        except k8s.ApiException as err:
            if err.status != 404:
                raise

        def logged() -> list[dict[str, Any]] | None:
            with open(self.audit_log, "rb") as log:
                log.seek(since)
                events = [json.loads(line) for line in log if line.strip()]
            return events if any(marker in e.get("requestURI", "") for e in events) else None

        events = eventually(logged, timeout=timeout, what=f"the audit event of {marker}")
        found, seen = [], set()
        for event in events:
            if event.get("user", {}).get("username") != user or event.get("auditID") in seen:
                continue
            seen.add(event.get("auditID"))
            ref = event.get("objectRef", {})
            resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            found.append((str(event.get("verb")), resource, str(ref.get("name", ""))))
        return found

    # -------------------------------------------------------------- objects

    def apply_yaml(self, path: str | Path, namespace: str | None = None) -> list[dict[str, Any]]:
        """Server-side apply every object in the (multi-document) YAML file, in order.

        Idempotent (force-applies as field manager "kvmount-tests"). Namespaced
        objects without metadata.namespace go to ``namespace`` or "default".
        After a CustomResourceDefinition, waits until it is Established and its
        kind is discoverable, so later documents may be its custom resources.
        Returns the objects as the server stored them.
        """
        documents = yaml.safe_load_all(Path(path).read_text())
        return [self.apply(doc, namespace) for doc in documents if doc]

    def apply(self, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """Server-side apply one object (see apply_yaml)."""
        resource = self.dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        ns = None
        if resource.namespaced:
            ns = obj.get("metadata", {}).get("namespace") or namespace or "default"
        applied = self.dynamic.server_side_apply(  # type: ignore[no-untyped-call]
            resource, body=obj, namespace=ns, field_manager=FIELD_MANAGER, force_conflicts=True
        )
        stored: dict[str, Any] = applied.to_dict()
        if obj["kind"] == "CustomResourceDefinition" and obj["apiVersion"].startswith(
            "apiextensions.k8s.io/"
        ):
            self.wait_established(obj["metadata"]["name"])
        return stored

    def wait_established(self, crd_name: str, timeout: float = 60) -> None:
        """Wait until the CRD is Established and its kind appears in discovery."""
        crds = self.dynamic.resources.get(
            api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
        )
        deadline = time.monotonic() + timeout

        def established() -> dict[str, Any] | None:
            crd: dict[str, Any] = crds.get(name=crd_name).to_dict()
            conditions = crd.get("status", {}).get("conditions") or []
            return (
                crd if any(c["type"] == "Established" and c["status"] == "True" for c in conditions) else None
            )

        crd = eventually(established, timeout=timeout, what=f"CRD {crd_name} Established")
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        version = next(v["name"] for v in crd["spec"]["versions"] if v.get("served"))

        def discovered() -> bool:
            try:
                self.dynamic.resources.get(api_version=f"{group}/{version}", kind=kind)
                return True
            except ResourceNotFoundError:
                return False

        left = max(0.0, deadline - time.monotonic())
        eventually(discovered, timeout=left, what=f"{kind} ({group}/{version}) in discovery")


def main() -> None:
    """Run a server until interrupted; print how to reach it."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kvmount-kube-") as tmp, KubeAPIServer(Path(tmp)) as server:
        print(f"export KUBECONFIG={server.kubeconfig}  # {server.url}; Ctrl-C stops", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
