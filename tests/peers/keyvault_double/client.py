"""The test-facing side: the control-API client and the double in this process
(KeyVaultDouble) or in a child process (KeyVaultDoubleProcess)."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import ssl
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, cast

from tests.peers.keyvault_double.base import PKCS12, Json
from tests.peers.keyvault_double.faults import Fault
from tests.peers.keyvault_double.server import DoubleServer
from tests.support import start_daemon, stop_process, until_ready

# The child runs ``python -m tests.peers.keyvault_double``, which needs the repository on its path.
_REPO = Path(__file__).resolve().parents[3]


class _ControlClient:
    """Control-API helpers shared by the in-process and subprocess doubles."""

    port: int
    imds_port: int
    nmi_port: int
    proxy_port: int
    ca_path: Path
    tenant: str

    def url_for(self, vault: str) -> str:
        return f"https://{vault}.vault.localhost:{self.port}"

    @property
    def authority(self) -> str:
        return f"https://login.localhost:{self.port}"

    @property
    def resource(self) -> str:
        return f"https://vault.localhost:{self.port}"

    @property
    def scope(self) -> str:
        return f"{self.resource}/.default"

    @property
    def imds_url(self) -> str:
        return f"http://127.0.0.1:{self.imds_port}"

    @property
    def nmi_url(self) -> str:
        return f"http://127.0.0.1:{self.nmi_port}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def env(self) -> dict[str, str]:
        """Environment for SDK clients in this or a child process."""
        return {
            "REQUESTS_CA_BUNDLE": str(self.ca_path),
            "SSL_CERT_FILE": str(self.ca_path),
            "AZURE_POD_IDENTITY_AUTHORITY_HOST": self.imds_url,
        }

    def go_env(self) -> dict[str, str]:
        """env() for a Go program (SSL_CERT_FILE) whose MSAL asks AAD instance discovery.

        Only the discovery host goes through the proxy; loopback and *.localhost
        (the vaults, login.localhost) are reached directly. Python clients must
        not get these: requests would proxy the plain-HTTP IMDS and NMI calls.
        """
        return {**self.env(), "HTTPS_PROXY": self.proxy_url, "NO_PROXY": "localhost,127.0.0.1"}

    def write_cloud_env(self, path: str | os.PathLike[str]) -> str:
        """An AzureStackCloud environment file (cloudEnvFileName) pointing at this double."""
        doc = {
            "name": "AzureStackCloud",
            "activeDirectoryEndpoint": f"{self.authority}/",
            "keyVaultDNSSuffix": f"vault.localhost:{self.port}",
        }
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
        return os.fspath(path)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"https://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            raw = err.read()
            raise RuntimeError(f"{method} {path} -> {err.code}: {raw.decode(errors='replace')}") from err
        return json.loads(raw) if raw else None

    def requests(self) -> list[Json]:
        return cast(list[Json], self._call("GET", "/_double/requests"))

    def reset_log(self) -> None:
        self._call("POST", "/_double/reset-log", {})

    def set_latency(self, ms: int) -> None:
        self._call("POST", "/_double/latency", {"ms": ms})

    def set_faults(self, *faults: Fault) -> None:
        """Replace the injected faults (none: clear them); see Fault."""
        self._call("POST", "/_double/faults", {"faults": [dataclasses.asdict(f) for f in faults]})

    def set_outage(self, status: int) -> None:
        """Vault requests fail with status (0 clears, -1 drops connections)."""
        self._call("POST", "/_double/outage", {"status": status})

    def register_aad_client(
        self,
        client_id: str,
        secret: str | None = None,
        cert_pem: str | bytes | None = None,
        federated: list[str] | None = None,
    ) -> None:
        pem = cert_pem.decode() if isinstance(cert_pem, bytes) else cert_pem
        body = {"client_id": client_id, "secret": secret, "cert_pem": pem, "federated": federated}
        self._call("POST", "/_double/aad-clients", body)

    def deny_pod(self, namespace: str, name: str) -> None:
        self._call("POST", "/_double/nmi", {"deny": [namespace, name]})

    def allow_pod(self, namespace: str, name: str) -> None:
        self._call("POST", "/_double/nmi", {"allow": [namespace, name]})

    def deny_object(self, vault: str, kind: str, name: str, deny: bool = True) -> None:
        """Reads of one object (kind: secrets, keys, certificates) answer 403 AccessDenied, as
        without get permission; deny=False restores access."""
        self._call("POST", "/_double/deny", {"vault": vault, "kind": kind, "name": name, "deny": deny})

    def deny_list(self, vault: str, kind: str, deny: bool = True) -> None:
        """Listing a type (kind: secrets, keys, certificates) answers 403 AccessDenied, as an access
        policy without list permission; deny=False restores it."""
        self.deny_object(vault, kind, "", deny)

    def set_next_link_base(self, base: str = "") -> None:
        """Listings' nextLinks lead to ``base`` (scheme://host:port) instead of the vault; "" restores."""
        self._call("POST", "/_double/next-link", {"base": base})

    def set_pod_client_id(self, client_id: str) -> None:
        self._call("POST", "/_double/nmi", {"client_id": client_id})

    def vault_call(self, vault: str, method: str, path: str, body: Any = None) -> Any:
        """The data plane without auth, latency, outage or logging (for seeding)."""
        return self._call(method, f"/_double/vault/{vault}{path}", body)

    def put_secret(
        self,
        vault: str,
        name: str,
        value: str,
        content_type: str | None = None,
        enabled: bool = True,
        tags: dict[str, str] | None = None,
    ) -> Json:
        body: Json = {"value": value, "attributes": {"enabled": enabled}}
        if content_type is not None:
            body["contentType"] = content_type
        if tags is not None:
            body["tags"] = tags
        return cast(Json, self.vault_call(vault, "PUT", f"/secrets/{name}", body))

    def create_key(
        self, vault: str, name: str, kty: str = "RSA", size: int | None = None, curve: str | None = None
    ) -> Json:
        body: Json = {"kty": kty}
        if size is not None:
            body["key_size"] = size
        if curve is not None:
            body["crv"] = curve
        return cast(Json, self.vault_call(vault, "POST", f"/keys/{name}/create", body))

    def import_certificate(
        self, vault: str, name: str, data: bytes, content_type: str = PKCS12, password: str | None = None
    ) -> Json:
        """data: PFX bytes or PEM bytes (key + chain)."""
        body: Json = {
            "value": base64.b64encode(data).decode(),
            "policy": {"secret_props": {"contentType": content_type}},
        }
        if password is not None:
            body["pwd"] = password
        return cast(Json, self.vault_call(vault, "POST", f"/certificates/{name}/import", body))

    def update(self, vault: str, kind: str, name: str, version: str, body: Json) -> Json:
        return cast(Json, self.vault_call(vault, "PATCH", f"/{kind}/{name}/{version}", body))


class KeyVaultDouble(_ControlClient):
    """The double running in this process (server threads)."""

    def __init__(
        self,
        state_dir: str | Path | None = None,
        port: int = 0,
        imds_port: int = 0,
        nmi_port: int = 0,
        tenant: str = "tenant",
    ) -> None:
        self._tmp = None if state_dir else tempfile.TemporaryDirectory(prefix="kv-double-")
        self.state_dir = Path(state_dir) if state_dir else Path(cast(Any, self._tmp).name)
        self._ports = (port, imds_port, nmi_port)
        self.tenant = tenant
        self._server: DoubleServer | None = None

    def start(self) -> KeyVaultDouble:
        port, imds_port, nmi_port = self._ports
        self._server = DoubleServer(self.state_dir, port, imds_port, nmi_port, self.tenant)
        self._server.start()
        info = self._server.ready_info()
        self.port, self.imds_port, self.nmi_port = info["port"], info["imds_port"], info["nmi_port"]
        self.proxy_port = info["proxy_port"]
        self.ca_path = self._server.ca_path
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> KeyVaultDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def spawn(
        state_dir: str | Path,
        port: int = 0,
        imds_port: int = 0,
        nmi_port: int = 0,
        tenant: str = "tenant",
        timeout: float = 30.0,
    ) -> KeyVaultDoubleProcess:
        return KeyVaultDoubleProcess(Path(state_dir), port, imds_port, nmi_port, tenant, timeout)


class KeyVaultDoubleProcess(_ControlClient):
    """The double as a child process (CLI), for tests that need it out of process."""

    def __init__(
        self, state_dir: Path, port: int, imds_port: int, nmi_port: int, tenant: str, timeout: float
    ) -> None:
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        ready = state_dir / "ready.json"
        ready.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m", "tests.peers.keyvault_double",
            "--state-dir", str(state_dir),
            "--port", str(port),
            "--imds-port", str(imds_port),
            "--nmi-port", str(nmi_port),
            "--tenant", tenant,
        ]  # fmt: skip
        path = os.pathsep.join(p for p in (str(_REPO), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": path}
        daemon = start_daemon("keyvault double", cmd, state_dir / "double.log", env=env)
        self.process = daemon.process
        try:
            until_ready(ready.exists, timeout=timeout, what=f"the double's {ready}", daemons=[daemon])
        except BaseException:
            self.stop()
            raise
        info = json.loads(ready.read_text())
        self.port, self.imds_port, self.nmi_port = info["port"], info["imds_port"], info["nmi_port"]
        self.proxy_port = info["proxy_port"]
        self.ca_path = Path(info["ca"])
        self.tenant = info["tenant"]

    def stop(self) -> None:
        stop_process(self.process, timeout=10)
