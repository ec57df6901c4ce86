"""`kvmount registrar`: node-driver-registrar's job, with its flags.

It asks the driver on ``--csi-address`` for its name (GetPluginInfo), then
serves kubelet's plugin registration for it in ``--plugin-registration-path``,
pointing kubelet at ``--kubelet-registration-path`` (the same socket as the
host sees it). The serving is the driver's own (driver/registration.py): the
registrar is that, in a container of its own. /healthz answers 200 while the
registration socket is in place, as the registrar's does.
"""

from __future__ import annotations

import argparse
import logging

from kvmount.base import upstream_flags
from kvmount.base.endpoints import Route
from kvmount.base.flags import GoFlagParser
from kvmount.base.logs import JsonShape
from kvmount.driver.registration import RegistrationServer
from kvmount.proto import csi_pb2 as csi
from kvmount.proto import csi_pb2_grpc as csi_grpc
from kvmount.sidecars.common import (
    DEFAULT_CSI_ADDRESS,
    add_health_arguments,
    health_address,
    serve_until_signalled,
    timeout,
    wait_for_driver,
)

log = logging.getLogger(__name__)
PARSER = GoFlagParser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    upstream_flags.add_arguments(parser, pprof_port=0)
    parser.add_argument(
        "--csi-address",
        default=DEFAULT_CSI_ADDRESS,
        help=f"the driver's CSI socket as this container sees it (default {DEFAULT_CSI_ADDRESS})",
    )
    parser.add_argument(
        "--kubelet-registration-path",
        default="",
        help="the driver's CSI socket as kubelet sees it (required)",
    )
    parser.add_argument(
        "--plugin-registration-path",
        default="/registration",
        help="kubelet's plugin registry directory as this container sees it (default /registration)",
    )
    parser.add_argument(
        "--timeout", type=timeout, default=1.0, help="timeout of each call to the driver (default 1s)"
    )
    add_health_arguments(parser, default_port=0)
    ignored = parser.add_argument_group("node-driver-registrar flags accepted and ignored")
    # It always serves registration (the registrar's default mode).
    ignored.add_argument("--mode", default=None, help="always registration")
    ignored.add_argument("--connection-timeout", default=None, help="deprecated upstream too")


def run(args: argparse.Namespace) -> int:
    exit_code = upstream_flags.start(args, "registrar", JsonShape.KLOG)
    if exit_code is not None:
        return exit_code
    if not args.kubelet_registration_path:
        log.error("--kubelet-registration-path is required: the driver's socket path as kubelet sees it")
        return 2
    for name in ("mode", "connection_timeout"):
        if getattr(args, name) is not None:
            log.warning("flag accepted and ignored", extra={"flag": name.replace("_", "-")})
    info = wait_for_driver(
        args.csi_address,
        lambda channel: csi_grpc.IdentityStub(channel).GetPluginInfo(
            csi.GetPluginInfoRequest(), timeout=args.timeout
        ),
    )
    log.info("driver found", extra={"driver": info.name, "csi_address": args.csi_address})
    try:
        registration = RegistrationServer(
            args.plugin_registration_path, info.name, args.kubelet_registration_path
        ).start()
    except (OSError, ValueError, RuntimeError) as err:
        log.error(
            "cannot serve kubelet plugin registration",
            extra={"directory": args.plugin_registration_path, "error": str(err)},
        )
        return 1

    def healthz() -> tuple[int, bytes, str]:
        if registration.socket.is_socket():
            return 200, b"ok\n", "text/plain"
        return 500, b"registration socket missing\n", "text/plain"

    routes: dict[str, Route] = {"/healthz": healthz}
    return serve_until_signalled(health_address(args), routes, on_stop=registration.stop)
