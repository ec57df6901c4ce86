"""A generic v1alpha1 provider as strict as upstream's end-to-end mock (test/e2eprovider).

Upstream's driver suite (test/bats/e2e-provider.bats) runs against a mock
provider that lives in a Go module of its own, which the module proxy does not
serve; this is the project's own, written from what that mock checks:

* every call must carry the HTTP/2 ``:authority`` ``localhost`` (what Go's gRPC
  and upstream's driver since v1.6.0 send on a unix socket); anything else is
  refused with UNKNOWN, as the mock's interceptor does (``strict_authority=False`` lets
  drivers before v1.6.0 in, which send the socket's path: bench/api_load.py runs v1.5.6);
* a Mount must carry JSON attributes, secrets and permission, a target path and
  an ``objects`` attribute (``array:`` of YAML documents with ``objectName``);
* with audiences configured, the attribute
  ``csi.storage.k8s.io/serviceAccount.tokens`` must hold a token for each;
* objects ``foo`` (``secret``) and ``fookey`` (a PEM public key) are served at
  version ``v1``; once rotation is switched on, a pod seen before gets
  ``rotated`` at ``v2``.

A control endpoint on 127.0.0.1 switches it as the mock's HTTP port does:
``GET /rotation?rotated=true|false`` and
``GET /validate-token-requests?audience=a,b``.

    with E2EProvider(socket_path) as provider:
        provider.control("/rotation?rotated=true")

Runnable on its own: ``python -m tests.peers.e2e_provider --endpoint unix:///x/e2e-provider.sock``.
"""

from __future__ import annotations

import argparse
import http.server
import json
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import yaml

from kvmount.base import unix_grpc
from kvmount.proto import v1alpha1_pb2 as pb
from kvmount.proto import v1alpha1_pb2_grpc as pb_grpc

NAME = "e2e-provider"
SERVICE = "v1alpha1.CSIDriverProvider"
POD_UID = "csi.storage.k8s.io/pod.uid"
TOKENS = "csi.storage.k8s.io/serviceAccount.tokens"
AUTHORITY = "localhost"
# The values upstream's suite expects (SECRET_VALUE, KEY_VALUE_CONTAINS).
SECRETS = {
    "foo": b"secret",
    "fookey": b"-----BEGIN PUBLIC KEY-----\nThis is mock key\n-----END PUBLIC KEY-----",
}
ROTATED = b"rotated"


class E2EProviderServicer(pb_grpc.CSIDriverProviderServicer):
    def __init__(self, strict_authority: bool = True) -> None:
        self.strict_authority = strict_authority
        self.rotation = False
        self.audiences: list[str] = []
        self.authorities: list[str] = []  # every :authority a call carried, refused or not
        self.mounts: list[pb.MountRequest] = []
        self._seen_pods: set[str] = set()
        self._lock = threading.Lock()

    def _check_authority(self, context: grpc.ServicerContext) -> None:
        # grpcio hands a servicer no public view of :authority; its call details hold it.
        # Without them the call is refused, so a grpcio that changes this fails loudly.
        details = getattr(getattr(context, "_rpc_event", None), "call_details", None)
        host = getattr(details, "host", None)
        authority = host.decode(errors="replace") if isinstance(host, bytes) else "<unreadable>"
        with self._lock:
            self.authorities.append(authority)
        if self.strict_authority and authority != AUTHORITY:
            context.abort(grpc.StatusCode.UNKNOWN, f"want authority {AUTHORITY}, got [{authority}]")

    def Version(self, request: pb.VersionRequest, context: grpc.ServicerContext) -> pb.VersionResponse:
        self._check_authority(context)
        return pb.VersionResponse(
            version="v1alpha1", runtime_name="kvmount-e2e-provider", runtime_version="0"
        )

    def Mount(self, request: pb.MountRequest, context: grpc.ServicerContext) -> pb.MountResponse:
        self._check_authority(context)
        try:
            attributes = json.loads(request.attributes)
            json.loads(request.secrets)
            json.loads(request.permission)
        except ValueError as err:
            context.abort(grpc.StatusCode.UNKNOWN, f"failed to unmarshal the request: {err}")
        if not request.target_path:
            context.abort(grpc.StatusCode.UNKNOWN, "missing target path")
        names = self._object_names(attributes.get("objects") or "", context)
        with self._lock:
            self.mounts.append(request)
            audiences, rotation = list(self.audiences), self.rotation
            seen = attributes.get(POD_UID, "") in self._seen_pods
        if audiences:
            self._check_tokens(audiences, attributes.get(TOKENS) or "", context)
        response = pb.MountResponse()
        for name in names:
            rotated = rotation and seen
            response.files.append(pb.File(path=name, contents=ROTATED if rotated else SECRETS.get(name, b"")))
            response.object_version.append(
                pb.ObjectVersion(id=f"secret/{name}", version="v2" if rotated else "v1")
            )
        with self._lock:
            self._seen_pods.add(attributes.get(POD_UID, ""))
        return response

    @staticmethod
    def _object_names(objects: str, context: grpc.ServicerContext) -> list[str]:
        if not objects:
            context.abort(grpc.StatusCode.UNKNOWN, "objects is not set")
        try:
            array = (yaml.safe_load(objects) or {}).get("array") or []
            return [str(yaml.safe_load(item)["objectName"]) for item in array]
        except (yaml.YAMLError, AttributeError, TypeError, KeyError) as err:
            context.abort(grpc.StatusCode.UNKNOWN, f"failed to yaml unmarshal objects: {err}")
        raise AssertionError("unreachable: abort raises")

    @staticmethod
    def _check_tokens(audiences: list[str], tokens: str, context: grpc.ServicerContext) -> None:
        if not tokens:
            context.abort(
                grpc.StatusCode.UNKNOWN, "failed to validate token: service account tokens is not set"
            )
        try:
            by_audience = json.loads(tokens)
        except ValueError:
            context.abort(grpc.StatusCode.UNKNOWN, "failed to validate token: tokens are not JSON")
        for audience in audiences:
            if audience not in by_audience:
                context.abort(
                    grpc.StatusCode.UNKNOWN,
                    f"failed to validate token: service account token for audience {audience} is not set",
                )


class _Control(http.server.BaseHTTPRequestHandler):
    servicer: E2EProviderServicer

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        with self.servicer._lock:
            if url.path == "/rotation":
                self.servicer.rotation = query.get("rotated") == "true"
            elif url.path == "/validate-token-requests":
                self.servicer.audiences = [a for a in query.get("audience", "").split(",") if a.strip()]
            else:
                self.send_error(404)
                return
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the tests' output stays the tests'


class E2EProvider:
    """The provider on ``socket`` (served as NAME by a driver looking in its directory)."""

    def __init__(self, socket: Path, strict_authority: bool = True) -> None:
        self.socket = socket
        self.servicer = E2EProviderServicer(strict_authority)
        self._server: grpc.Server | None = None
        handler = type("Control", (_Control,), {"servicer": self.servicer})
        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._http_thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def control(self, path_and_query: str) -> None:
        with urllib.request.urlopen(self.control_url + path_and_query, timeout=10) as response:
            assert response.status == 200

    def start(self) -> E2EProvider:
        self._server = unix_grpc.serve(f"unix://{self.socket}", self._register)
        self._http_thread.start()
        return self

    def _register(self, server: grpc.Server) -> None:
        # As generic handlers: grpcio's registered methods (what the generated
        # add_..._to_server also sets up) reach the servicer without the :authority.
        methods = {
            "Version": grpc.unary_unary_rpc_method_handler(
                self.servicer.Version,
                request_deserializer=pb.VersionRequest.FromString,
                response_serializer=pb.VersionResponse.SerializeToString,
            ),
            "Mount": grpc.unary_unary_rpc_method_handler(
                self.servicer.Mount,
                request_deserializer=pb.MountRequest.FromString,
                response_serializer=pb.MountResponse.SerializeToString,
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()
            self._server = None
        self._http.shutdown()
        self._http.server_close()

    def __enter__(self) -> E2EProvider:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="a v1alpha1 provider as strict as upstream's e2e mock")
    parser.add_argument("--endpoint", required=True, help="unix:///path/e2e-provider.sock")
    args = parser.parse_args()
    provider = E2EProvider(Path(unix_grpc.socket_path(args.endpoint))).start()
    print(f"control endpoint {provider.control_url}", flush=True)
    assert provider._server is not None
    unix_grpc.run_until_signalled(provider._server)
    provider.stop()


if __name__ == "__main__":
    main()
