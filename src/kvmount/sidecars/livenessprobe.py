"""`kvmount livenessprobe`: the livenessprobe sidecar's job, with its flags.

/healthz calls Probe on the driver's ``--csi-address`` within
``--probe-timeout``: 200 when the driver answers ready, 500 with the reason
otherwise, so kubelet's liveness probe on the driver's container restarts a
driver that stopped answering its socket.
"""

from __future__ import annotations

import argparse
import logging

import grpc

from kvmount.base import unix_grpc, upstream_flags
from kvmount.base.endpoints import Route
from kvmount.base.flags import GoFlagParser, listen_address
from kvmount.base.logs import JsonShape
from kvmount.proto import csi_pb2 as csi
from kvmount.proto import csi_pb2_grpc as csi_grpc
from kvmount.sidecars.common import (
    DEFAULT_CSI_ADDRESS,
    add_health_arguments,
    health_address,
    serve_until_signalled,
    timeout,
)

log = logging.getLogger(__name__)
PARSER = GoFlagParser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    upstream_flags.add_arguments(parser, pprof_port=0)
    parser.add_argument(
        "--csi-address",
        default=DEFAULT_CSI_ADDRESS,
        help=f"the driver's CSI socket (default {DEFAULT_CSI_ADDRESS})",
    )
    parser.add_argument(
        "--probe-timeout", type=timeout, default=1.0, help="timeout of each Probe call (default 1s)"
    )
    add_health_arguments(parser, default_port=9808)
    ignored = parser.add_argument_group("livenessprobe flags accepted and ignored")
    ignored.add_argument("--connection-timeout", default=None, help="deprecated upstream too")
    ignored.add_argument("--metrics-address", type=listen_address, default=None, help="no metrics of its own")
    ignored.add_argument("--metrics-path", default=None, help="no metrics of its own")


def probe_route(address: str, probe_timeout: float) -> Route:
    channel = unix_grpc.dial(address)
    identity = csi_grpc.IdentityStub(channel)

    def healthz() -> tuple[int, bytes, str]:
        try:
            answer = identity.Probe(csi.ProbeRequest(), timeout=probe_timeout)
        except grpc.RpcError as err:
            log.warning("driver probe failed", extra={"csi_address": address, "error": err.code().name})
            return 500, f"driver probe failed: {err.code().name}\n".encode(), "text/plain"
        # An unset `ready` means ready (CSI spec).
        if answer.HasField("ready") and not answer.ready.value:
            return 500, b"driver not ready\n", "text/plain"
        return 200, b"ok\n", "text/plain"

    return healthz


def run(args: argparse.Namespace) -> int:
    exit_code = upstream_flags.start(args, "livenessprobe", JsonShape.KLOG)
    if exit_code is not None:
        return exit_code
    address = health_address(args)
    if address is None:
        log.error("no /healthz address: give --http-endpoint=host:port or --health-port=PORT")
        return 2
    for name in ("connection_timeout", "metrics_address", "metrics_path"):
        if getattr(args, name) is not None:
            log.warning("flag accepted and ignored", extra={"flag": name.replace("_", "-")})
    log.info("serving /healthz", extra={"address": address, "csi_address": args.csi_address})
    return serve_until_signalled(address, {"/healthz": probe_route(args.csi_address, args.probe_timeout)})
