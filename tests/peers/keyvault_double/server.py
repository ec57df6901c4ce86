"""The double's server: its four listeners, the request log, latency and outages, routing
each request by listener and Host to Key Vault, Azure AD, IMDS, NMI or the control API."""

from __future__ import annotations

import json
import os
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

from cryptography import x509

from tests.peers.keyvault_double.base import DISCOVERY_HOSTS, Json, Response, json_response
from tests.peers.keyvault_double.faults import BODY_FAULTS, DropConnection, Fault, Faults, InjectedFault
from tests.peers.keyvault_double.identity import AadClient, Identity
from tests.peers.keyvault_double.listeners import Handler, Listener, make_tls
from tests.peers.keyvault_double.store import VaultStore
from tests.peers.keyvault_double.vault_api import KeyVaultApi


class DoubleServer:
    """The listeners and shared state; KeyVaultDouble wraps it for tests."""

    def __init__(
        self,
        state_dir: Path,
        port: int = 0,
        imds_port: int = 0,
        nmi_port: int = 0,
        tenant: str = "tenant",
        extra_hosts: tuple[str, ...] = (),
    ) -> None:
        self.state_dir = state_dir
        self.tenant = tenant
        state_dir.mkdir(parents=True, exist_ok=True)
        tls = make_tls(extra_hosts)
        self.ca_path = state_dir / "ca.pem"
        self.ca_path.write_bytes(tls.ca_pem)
        cert_file = state_dir / "server.pem"
        cert_file.write_bytes(tls.cert_pem + tls.key_pem)
        os.chmod(cert_file, 0o600)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert_file))
        self.store = VaultStore(lambda: self.port)
        self.api = KeyVaultApi(self.store)
        self.identity = Identity(lambda: self.port, tenant)
        self.log_lock = threading.Lock()
        self.log: list[Json] = []
        self.latency_ms = 0
        self.outage = 0
        self.faults = Faults()
        self.https = Listener(("127.0.0.1", port), self, "https", ctx)
        self.imds = Listener(("127.0.0.1", imds_port), self, "imds", None)
        self.nmi = Listener(("127.0.0.1", nmi_port), self, "nmi", None)
        self.proxy = Listener(("127.0.0.1", 0), self, "proxy", None)
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return int(self.https.server_address[1])

    def start(self) -> None:
        for srv in (self.https, self.imds, self.nmi, self.proxy):
            t = threading.Thread(target=srv.serve_forever, name=f"kv-double-{srv.role}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        for srv in (self.https, self.imds, self.nmi, self.proxy):
            srv.shutdown()
            srv.server_close()

    def ready_info(self) -> Json:
        return {
            "port": self.port,
            "imds_port": int(self.imds.server_address[1]),
            "nmi_port": int(self.nmi.server_address[1]),
            "proxy_port": int(self.proxy.server_address[1]),
            "ca": str(self.ca_path),
            "tenant": self.tenant,
            "pid": os.getpid(),
        }

    # -- routing

    def tunnel_target(self, role: str, authority: str) -> tuple[str, int] | None:
        """Where the proxy tunnels CONNECT ``authority`` (host:port): the TLS port, or nowhere."""
        host, _, port = authority.lower().rpartition(":")
        if role != "proxy" or host not in DISCOVERY_HOSTS or port != "443":
            return None
        self.record({"time": time.time(), "host": authority, "method": "CONNECT", "service": "proxy"})
        return "127.0.0.1", self.port

    def record(self, entry: Json) -> None:
        with self.log_lock:
            self.log.append(entry)

    def route(self, role: str, h: Handler, raw: bytes) -> Response:
        split = urllib.parse.urlsplit(h.path)
        path = split.path
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(split.query, keep_blank_values=True).items()}
        host = (h.headers.get("Host") or "").lower()
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if path.startswith("/_double/"):
            return self._control(h.command, path, query, raw)
        auth = h.headers.get("Authorization") or ""
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        entry: Json = {
            "time": time.time(),
            "host": host,
            "method": h.command,
            "path": path,
            "query": query,
            "token": token,
            "user_agent": h.headers.get("User-Agent"),
        }
        if role == "imds" and path.startswith("/metadata/identity/oauth2/token"):
            entry["service"] = "imds"
            entry["metadata_header"] = h.headers.get("Metadata")
            client = query.get("client_id", "")
            response = self._faulted(entry, path, client, partial(self.identity.imds, h.headers, query))
        elif role == "nmi" and path.rstrip("/") == "/host/token":
            entry["service"] = "nmi"
            entry["podns"], entry["podname"] = h.headers.get("podns"), h.headers.get("podname")
            client = f"{entry['podns']}/{entry['podname']}"
            response = self._faulted(entry, path, client, partial(self.identity.nmi, h.headers, query))
        elif role == "https" and (hostname == "login.localhost" or hostname in DISCOVERY_HOSTS):
            entry["service"] = "aad"
            form = urllib.parse.parse_qs(raw.decode(errors="replace")) if h.command == "POST" else {}
            client = form.get("client_id", [""])[-1]
            answer = partial(self.identity.aad, h.command, path, query, raw, entry)
            response = self._faulted(entry, path, client, answer)
        elif role == "https" and hostname.endswith(".vault.localhost"):
            entry["service"] = "keyvault"
            entry["vault"] = hostname.split(".", 1)[0]
            if token is not None:
                with self.identity.lock:
                    entry["identity"] = self.identity.issued.get(token)
            answer = partial(self._keyvault, h, entry["vault"], path, query, raw, token)
            response = self._faulted(entry, path, "", answer)
        else:
            entry["service"] = "unknown"
            response = json_response(
                404, {"error": {"code": "NotFound", "message": f"No such host or path {host}{path}"}}
            )
        entry["status"] = response[0]
        self.record(entry)
        return response

    def _faulted(self, entry: Json, path: str, client: str, answer: Callable[[], Response]) -> Response:
        """``answer()``, unless an injected fault of the entry's service takes the request."""
        fault = self.faults.take(str(entry["service"]), path, client)
        if fault is not None and fault.kind not in BODY_FAULTS:
            entry["fault"] = fault.kind
            entry["status"] = fault.status if fault.kind == "status" else 0
            if fault.kind != "status":  # acted out on the socket: route() records no answer
                self.record(entry)
            return Faults.act(fault)
        response = answer()
        if fault is not None:  # the real answer, its body made hostile (see faults.body_fault)
            entry["fault"], entry["status"] = fault.kind, response[0]
            self.record(entry)
            raise InjectedFault(fault, response)
        return response

    def _keyvault(
        self, h: Handler, vault: str, path: str, query: dict[str, str], raw: bytes, token: str | None
    ) -> Response:
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        request_id = str(uuid.uuid4())
        headers = {"x-ms-request-id": request_id, "x-ms-keyvault-service-version": "1.9.2686.1"}
        outage = self.outage
        if outage < 0:
            raise DropConnection()
        if outage:
            return json_response(
                outage,
                {"error": {"code": "ServiceUnavailable", "message": "The double is simulating an outage."}},
                headers,
            )
        if token is None:
            challenge = (
                f'Bearer authorization="https://login.localhost:{self.port}/{self.tenant}", '
                f'resource="https://vault.localhost:{self.port}"'
            )
            return json_response(
                401,
                {
                    "error": {
                        "code": "Unauthorized",
                        "message": "AKV10000: Request is missing a Bearer or PoP token.",
                    }
                },
                {**headers, "WWW-Authenticate": challenge},
            )
        return self.api.call(vault, h.command, path, query, raw, headers)

    # -- control API

    def _control(self, method: str, path: str, query: dict[str, str], raw: bytes) -> Response:
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return json_response(400, {"error": "body is not JSON"})
        what = path[len("/_double/") :]
        if what.startswith("vault/"):
            vault, _, rest = what[len("vault/") :].partition("/")
            q = dict(query)
            q.setdefault("api-version", "7.4")
            return self.api.call(vault, method, "/" + rest, q, raw, {})
        if method == "GET" and what == "requests":
            with self.log_lock:
                return json_response(200, list(self.log))
        if method == "POST" and what == "reset-log":
            with self.log_lock:
                self.log.clear()
            return json_response(200, {})
        if method == "POST" and what == "latency":
            self.latency_ms = int(body.get("ms", 0))
            return json_response(200, {"ms": self.latency_ms})
        if method == "POST" and what == "faults":
            self.faults.set([Fault(**f) for f in body.get("faults", [])])
            return json_response(200, {})
        if method == "POST" and what == "outage":
            self.outage = int(body.get("status", 0))
            return json_response(200, {"status": self.outage})
        if method == "POST" and what == "aad-clients":
            cert = x509.load_pem_x509_certificate(body["cert_pem"].encode()) if body.get("cert_pem") else None
            client = AadClient(str(body["client_id"]), body.get("secret"), cert, body.get("federated"))
            with self.identity.lock:
                self.identity.clients[client.client_id] = client
            return json_response(200, {"client_id": client.client_id})
        if method == "POST" and what == "nmi":
            with self.identity.lock:
                if body.get("deny"):
                    self.identity.denied_pods.add((body["deny"][0], body["deny"][1]))
                if body.get("allow"):
                    self.identity.denied_pods.discard((body["allow"][0], body["allow"][1]))
                if body.get("client_id"):
                    self.identity.pod_client_id = str(body["client_id"])
            return json_response(200, {})
        if method == "POST" and what == "deny":
            with self.store.lock:
                denied = self.store.vault(str(body["vault"])).denied
                key = (str(body["kind"]), str(body["name"]).lower())
                (denied.add if body.get("deny", True) else denied.discard)(key)
            return json_response(200, {})
        if method == "POST" and what == "next-link":
            with self.store.lock:
                self.store.next_link_base = str(body.get("base", ""))
            return json_response(200, {})
        if method == "GET" and what == "info":
            return json_response(200, self.ready_info())
        return json_response(404, {"error": f"unknown control path {path}"})
