"""What both sidecars share: their health endpoint flags, a wait on the CSI socket, the run loop."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import grpc

from kvmount.base import unix_grpc
from kvmount.base.endpoints import Route, serve_http
from kvmount.base.flags import go_duration, go_port, listen_address

log = logging.getLogger(__name__)
T = TypeVar("T")

# The default address of the driver's socket in both sidecars (their `--csi-address`).
DEFAULT_CSI_ADDRESS = "/run/csi/socket"


def add_health_arguments(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument(
        "--health-port",
        type=go_port,
        default=default_port,
        help=f"TCP port of /healthz on all interfaces (default {default_port or 'none'}); "
        "--http-endpoint wins",
    )
    parser.add_argument(
        "--http-endpoint",
        type=listen_address,
        default="",
        help="host:port of /healthz (e.g. 0.0.0.0:9808); empty: --health-port",
    )


def health_address(args: argparse.Namespace) -> str | None:
    """Where /healthz is served, or None: --http-endpoint, else --health-port (0 or empty: nowhere)."""
    if args.http_endpoint:
        return str(args.http_endpoint)
    if args.health_port:
        return f":{args.health_port}"
    return None


def timeout(value: str) -> float:
    seconds = go_duration(value)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{value!r}: a timeout must be more than 0s")
    return seconds


def wait_for_driver(address: str, call: Callable[[grpc.Channel], T]) -> T:
    """The answer of one call on the driver's socket, retried every second until the driver
    serves it (the sidecar may start first, as in a pod)."""
    with unix_grpc.dial(address) as channel:
        while True:
            try:
                return call(channel)
            except grpc.RpcError as err:
                log.info(
                    "waiting for the CSI driver", extra={"csi_address": address, "error": err.code().name}
                )
                time.sleep(1.0)


def serve_until_signalled(
    address: str | None, routes: dict[str, Route], on_stop: Callable[[], None] | None = None
) -> int:
    """Serve the routes (if an address is given) until SIGTERM or SIGINT."""
    try:
        http = serve_http(address, routes) if address else None
    except (OSError, ValueError) as err:
        log.error("cannot serve /healthz", extra={"address": address, "error": str(err)})
        return 1
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    stopping.wait()
    if on_stop is not None:
        on_stop()
    if http is not None:
        http.shutdown()
    log.info("stopped")
    return 0
