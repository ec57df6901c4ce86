"""A v1alpha1 provider for the driver tests: a real gRPC server on a unix socket.

By default it answers a Mount with one file per ``file.<path>`` attribute
(content = the attribute's value, mode = the request's permission); tests
change ``behaviour`` to make it fail or misbehave. Runnable on its own for
the demo script: ``python -m tests.driver.provider_double --endpoint unix:///x/azure.sock``.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import dataclass, field

import grpc

from kvmount.base import unix_grpc
from kvmount.csi.provider_client import STALE_METADATA
from kvmount.proto import v1alpha1_pb2 as pb
from kvmount.proto import v1alpha1_pb2_grpc as pb_grpc

FILE_PREFIX = "file."


@dataclass
class Behaviour:
    abort: tuple[grpc.StatusCode, str] | None = None
    error_code: str = ""
    extra_files: list[pb.File] = field(default_factory=list)
    delay: float = 0.0
    # Sent as kvmount's provider sends it when it served stale content (csi/provider_client.py).
    stale_note: str = ""


class ProviderDouble(pb_grpc.CSIDriverProviderServicer):
    def __init__(self) -> None:
        self.behaviour = Behaviour()
        self.requests: list[pb.MountRequest] = []
        self._lock = threading.Lock()

    def Version(self, request: pb.VersionRequest, context: grpc.ServicerContext) -> pb.VersionResponse:
        return pb.VersionResponse(version="v1alpha1", runtime_name="provider-double", runtime_version="0")

    def Mount(self, request: pb.MountRequest, context: grpc.ServicerContext) -> pb.MountResponse:
        with self._lock:
            self.requests.append(request)
            behaviour = self.behaviour
        if behaviour.delay:
            time.sleep(behaviour.delay)
        if behaviour.abort is not None:
            context.abort(*behaviour.abort)
        if behaviour.error_code:
            return pb.MountResponse(error=pb.Error(code=behaviour.error_code))
        attributes = json.loads(request.attributes)
        mode = json.loads(request.permission)
        files = [
            pb.File(path=k[len(FILE_PREFIX) :], mode=mode, contents=v.encode())
            for k, v in sorted(attributes.items())
            if k.startswith(FILE_PREFIX)
        ]
        files += behaviour.extra_files
        versions = [pb.ObjectVersion(id=f.path, version=str(len(f.contents))) for f in files]
        if behaviour.stale_note:
            context.set_trailing_metadata(((STALE_METADATA, behaviour.stale_note),))
        return pb.MountResponse(object_version=versions, files=files)


def serve(endpoint: str) -> tuple[grpc.Server, ProviderDouble]:
    double = ProviderDouble()
    server = unix_grpc.serve(endpoint, lambda s: pb_grpc.add_CSIDriverProviderServicer_to_server(double, s))
    return server, double


def main() -> None:
    parser = argparse.ArgumentParser(description="v1alpha1 provider double")
    parser.add_argument("--endpoint", required=True)
    args = parser.parse_args()
    server, _ = serve(args.endpoint)
    unix_grpc.run_until_signalled(server)


if __name__ == "__main__":
    main()
