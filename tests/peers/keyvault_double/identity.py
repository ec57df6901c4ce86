"""Who may get a token: the Azure AD double (instance discovery, OpenID configuration, the
client-credentials token endpoint with secrets, certificates and federated assertions), the
managed identity endpoint (IMDS) and aad-pod-identity's NMI, and the tokens they issue."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets as pysecrets
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from tests.peers.keyvault_double.base import (
    Json,
    Response,
    b64u,
    json_response,
    unb64u,
    unix_now,
)

DEFAULT_MI_CLIENT_ID = "00000000-0000-0000-0000-00000000a11d"
DEFAULT_POD_CLIENT_ID = "00000000-0000-0000-0000-000000000b0d"


@dataclass
class AadClient:
    client_id: str
    secret: str | None = None
    cert: x509.Certificate | None = None
    # Workload identity: the service account token subjects federated with this client
    # ("system:serviceaccount:NS:NAME"); None trusts any assertion.
    federated: list[str] | None = None


def _jwt_subject(assertion: str) -> str:
    """The ``sub`` claim of a JWT, unverified (the double trusts the API server's signature)."""
    try:
        return str(json.loads(unb64u(assertion.split(".")[1])).get("sub", ""))
    except (IndexError, ValueError, AttributeError):
        return ""


def _jws_verify(assertion: str, cert: x509.Certificate, audience: str) -> str | None:
    """None when the client assertion is signed by cert's key for audience; else why not."""
    try:
        h64, p64, s64 = assertion.split(".")
        header = json.loads(unb64u(h64))
        payload = json.loads(unb64u(p64))
        sig = unb64u(s64)
    except (ValueError, TypeError):
        return "malformed assertion"
    der = cert.public_bytes(serialization.Encoding.DER)
    # MSAL keeps the base64 padding on thumbprints; compare without it.
    if "x5t#S256" in header and str(header["x5t#S256"]).rstrip("=") != b64u(hashlib.sha256(der).digest()):
        return "x5t#S256 does not match the registered certificate"
    if "x5t" in header and str(header["x5t"]).rstrip("=") != b64u(hashlib.sha1(der).digest()):
        return "x5t does not match the registered certificate"
    if "x5t" not in header and "x5t#S256" not in header:
        return "assertion header has no x5t or x5t#S256"
    signed = f"{h64}.{p64}".encode()
    alg = str(header.get("alg", ""))
    hash_alg: hashes.HashAlgorithm = {
        "256": hashes.SHA256(),
        "384": hashes.SHA384(),
        "512": hashes.SHA512(),
    }.get(alg[2:], hashes.SHA256())
    public = cert.public_key()
    try:
        if alg.startswith("RS") and isinstance(public, rsa.RSAPublicKey):
            public.verify(sig, signed, padding.PKCS1v15(), hash_alg)
        elif alg.startswith("PS") and isinstance(public, rsa.RSAPublicKey):
            public.verify(sig, signed, padding.PSS(padding.MGF1(hash_alg), padding.PSS.AUTO), hash_alg)
        elif alg.startswith("ES") and isinstance(public, ec.EllipticCurvePublicKey):
            half = len(sig) // 2
            r, s = int.from_bytes(sig[:half], "big"), int.from_bytes(sig[half:], "big")
            public.verify(utils.encode_dss_signature(r, s), signed, ec.ECDSA(hash_alg))
        else:
            return f"unsupported alg {alg}"
    except InvalidSignature:
        return "signature does not verify with the registered certificate"
    if payload.get("aud") != audience:
        return f"aud {payload.get('aud')!r} is not the token endpoint"
    if float(payload.get("exp", 0)) < time.time():
        return "assertion expired"
    return None


class Identity:
    """The identities the double knows and the endpoints that hand out their tokens."""

    def __init__(self, port_ref: Callable[[], int], tenant: str) -> None:
        self._port = port_ref
        self.tenant = tenant
        self.lock = threading.Lock()
        self.clients: dict[str, AadClient] = {}
        self.denied_pods: set[tuple[str, str]] = set()
        self.pod_client_id = DEFAULT_POD_CLIENT_ID
        self.issued: dict[str, str] = {}  # token -> the identity it was issued to

    def issue(self, subject: str, audience: str, tenant: str, lifetime: int = 3600) -> str:
        now = unix_now()
        header = b64u(json.dumps({"typ": "JWT", "alg": "none", "kid": "double"}).encode())
        claims = {
            "aud": audience,
            "iss": f"https://sts.localhost/{tenant}/",
            "tid": tenant,
            "appid": subject,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
        }
        # JWT-shaped so consumers that peek at claims work; the signature is filler.
        token = f"{header}.{b64u(json.dumps(claims).encode())}.{b64u(pysecrets.token_bytes(32))}"
        with self.lock:
            self.issued[token] = subject
        return token

    # -- Azure AD

    def aad(self, method: str, path: str, query: dict[str, str], raw: bytes, entry: Json) -> Response:
        parts = path.strip("/").split("/")
        base = f"https://login.localhost:{self._port()}"
        if method == "GET" and parts == ["common", "discovery", "instance"]:
            return self._instance_discovery(query)
        if (
            method == "GET"
            and len(parts) >= 3
            and parts[1:]
            in (
                ["v2.0", ".well-known", "openid-configuration"],
                [".well-known", "openid-configuration"],
            )
        ):
            t = parts[0]
            return json_response(
                200,
                {
                    "token_endpoint": f"{base}/{t}/oauth2/v2.0/token",
                    "token_endpoint_auth_methods_supported": [
                        "client_secret_post",
                        "private_key_jwt",
                        "client_secret_basic",
                    ],
                    "jwks_uri": f"{base}/{t}/discovery/v2.0/keys",
                    "response_modes_supported": ["query", "fragment", "form_post"],
                    "subject_types_supported": ["pairwise"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                    "scopes_supported": ["openid", "profile", "email", "offline_access"],
                    "issuer": f"{base}/{t}/v2.0",
                    "request_uri_parameter_supported": False,
                    "userinfo_endpoint": f"{base}/oidc/userinfo",
                    "authorization_endpoint": f"{base}/{t}/oauth2/v2.0/authorize",
                    "device_authorization_endpoint": f"{base}/{t}/oauth2/v2.0/devicecode",
                    "http_logout_supported": True,
                    "frontchannel_logout_supported": True,
                    "end_session_endpoint": f"{base}/{t}/oauth2/v2.0/logout",
                    "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid"],
                    "tenant_region_scope": "NA",
                    "cloud_instance_name": "login.localhost",
                    "cloud_graph_host_name": "graph.localhost",
                    "msgraph_host": "graph.localhost",
                },
            )
        if method == "POST" and len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
            form = {k: v[-1] for k, v in urllib.parse.parse_qs(raw.decode(), keep_blank_values=True).items()}
            entry["tenant"] = parts[0]
            entry["form"] = {
                k: form[k]
                for k in (
                    "client_id",
                    "grant_type",
                    "scope",
                    "client_assertion_type",
                    "client_assertion",
                    "claims",
                )
                if k in form
            }
            entry["form"]["client_secret_present"] = "client_secret" in form
            return self._aad_token(form, f"{base}/{parts[0]}/oauth2/v2.0/token", parts[0])
        return json_response(
            404, {"error": "not_found", "error_description": f"AADSTS90000: no route {path}"}
        )

    def _instance_discovery(self, query: dict[str, str]) -> Response:
        """AAD's answer to "may I trust this authority?": yes for the double's own host only."""
        endpoint = urllib.parse.urlsplit(query.get("authorization_endpoint", ""))
        host, tenant = endpoint.netloc.lower(), endpoint.path.strip("/").split("/")[0]
        if endpoint.scheme != "https" or host != f"login.localhost:{self._port()}" or not tenant:
            return self._aad_error(
                400, "invalid_instance", 50049, "Unknown or invalid instance. (authorization_endpoint)"
            )
        return json_response(
            200,
            {
                "tenant_discovery_endpoint": f"https://{host}/{tenant}/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
            },
        )

    @staticmethod
    def _aad_error(status: int, error: str, code: int, description: str) -> Response:
        return json_response(
            status,
            {
                "error": error,
                "error_description": f"AADSTS{code}: {description}",
                "error_codes": [code],
                "timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
                "trace_id": str(uuid.uuid4()),
                "correlation_id": str(uuid.uuid4()),
            },
        )

    def _aad_token(self, form: dict[str, str], endpoint: str, tenant: str) -> Response:
        if form.get("grant_type") != "client_credentials":
            return self._aad_error(
                400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
            )
        client_id = form.get("client_id", "")
        scope = form.get("scope", "")
        if not client_id:
            return self._aad_error(
                400, "invalid_request", 900144, "The request body must contain 'client_id'."
            )
        if not scope:
            return self._aad_error(400, "invalid_request", 90014, "The request body must contain 'scope'.")
        with self.lock:
            client = self.clients.get(client_id)
        secret = form.get("client_secret")
        assertion = form.get("client_assertion")
        if (
            client is not None
            and client.secret is not None
            and secret is not None
            and secret != client.secret
        ):
            return self._aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        if client is not None and client.secret is not None and secret is None and client.cert is None:
            return self._aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        if secret is None and assertion is None:
            return self._aad_error(
                400,
                "invalid_client",
                7000218,
                "The request body must contain 'client_assertion' or 'client_secret'.",
            )
        if assertion is not None and client is not None and client.federated is not None:
            subject = _jwt_subject(assertion)
            if subject not in client.federated:
                return self._aad_error(
                    400,
                    "invalid_request",
                    70021,
                    f"No matching federated identity record found for presented assertion subject "
                    f"'{subject}'.",
                )
        if assertion is not None and client is not None and client.cert is not None:
            why = _jws_verify(assertion, client.cert, endpoint)
            if why is not None:
                return self._aad_error(
                    400, "invalid_client", 700027, f"Client assertion failed signature validation: {why}"
                )
        audience = scope.split()[0].removesuffix("/.default")
        token = self.issue(client_id, audience, tenant)
        return json_response(
            200, {"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600, "access_token": token}
        )

    # -- IMDS and NMI

    def imds(self, headers: Message, query: dict[str, str]) -> Response:
        if (headers.get("Metadata") or "").lower() != "true":
            return json_response(
                400,
                {"error": "invalid_request", "error_description": "Required metadata header not specified"},
            )
        resource = query.get("resource")
        if not query.get("api-version"):
            return json_response(
                400,
                {
                    "error": "invalid_request",
                    "error_description": "Required query variable 'api-version' is missing",
                },
            )
        if not resource:
            return json_response(
                400,
                {
                    "error": "invalid_request",
                    "error_description": "Required query variable 'resource' is missing",
                },
            )
        client_id = query.get("client_id") or DEFAULT_MI_CLIENT_ID
        token = self.issue(client_id, resource, self.tenant, 86399)
        now = unix_now()
        # Real IMDS sends the numbers as strings.
        return json_response(
            200,
            {
                "access_token": token,
                "client_id": client_id,
                "expires_in": "86399",
                "expires_on": str(now + 86399),
                "ext_expires_in": "86399",
                "not_before": str(now),
                "resource": resource,
                "token_type": "Bearer",
            },
        )

    def nmi(self, headers: Message, query: dict[str, str]) -> Response:
        ns, name = headers.get("podns"), headers.get("podname")
        if not ns or not name:
            return (
                400,
                {"Content-Type": "text/plain; charset=utf-8"},
                b"missing podname and podns from request\n",
            )
        resource = query.get("resource")
        if not resource:
            return 400, {"Content-Type": "text/plain; charset=utf-8"}, b"parameter resource cannot be empty\n"
        with self.lock:
            denied = (ns, name) in self.denied_pods
            client_id = query.get("clientid") or query.get("client_id") or self.pod_client_id
        if denied:
            body = f"no azure identity found for request clientID {client_id}\n".encode()
            return 403, {"Content-Type": "text/plain; charset=utf-8"}, body
        token = self.issue(client_id, resource, self.tenant)
        now = unix_now()
        return json_response(
            200,
            {
                "token": {
                    "access_token": token,
                    "refresh_token": "",
                    "expires_in": 3599,
                    "expires_on": now + 3599,
                    "not_before": now,
                    "resource": resource,
                    "token_type": "Bearer",
                },
                "clientid": client_id,
            },
        )
