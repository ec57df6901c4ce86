"""Serving and dialling gRPC on unix sockets, shared by the provider and driver."""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
from collections.abc import Callable
from concurrent import futures

import grpc

log = logging.getLogger(__name__)

# How long SIGTERM waits for in-flight calls before closing the server.
DRAIN_SECONDS = 30.0


def socket_path(endpoint: str) -> str:
    """The filesystem path of a ``unix://`` endpoint (``unix:///tmp/x.sock`` or a bare path)."""
    if endpoint.startswith("unix://"):
        path = endpoint[len("unix://") :]
    elif "://" in endpoint:
        raise ValueError(f"endpoint {endpoint!r}: only unix:// endpoints are supported")
    else:
        path = endpoint
    if not path:
        raise ValueError(f"endpoint {endpoint!r} names no socket path")
    return path


def _remove_stale(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ValueError(f"{path} exists and is not a socket; refusing to replace it")
    os.unlink(path)


def serve(
    endpoint: str,
    register: Callable[[grpc.Server], None],
    *,
    max_workers: int = 16,
    options: list[tuple[str, int]] | None = None,
) -> grpc.Server:
    """Start a gRPC server on a unix socket created under umask 077.

    A stale socket left by a crashed process is replaced; the parent
    directory is created if missing.
    """
    path = socket_path(endpoint)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    _remove_stale(path)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=options)
    register(server)
    old = os.umask(0o077)
    try:
        server.add_insecure_port(f"unix://{path}")
        server.start()
    finally:
        os.umask(old)
    log.info("serving gRPC", extra={"endpoint": f"unix://{path}"})
    return server


def run_until_signalled(server: grpc.Server, on_stop: Callable[[], None] | None = None) -> None:
    """Block until SIGTERM or SIGINT, then drain in-flight calls and stop."""
    stopping = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        log.info("signal received, draining", extra={"signal": signal.Signals(signum).name})
        stopping.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    stopping.wait()
    if on_stop is not None:
        on_stop()
    server.stop(DRAIN_SECONDS).wait()
    log.info("stopped")


# grpcio names a unix socket's path as the HTTP/2 :authority; Go's gRPC (upstream's
# driver since v1.6.0, its sidecars) says "localhost", and servers may refuse a path
# (ASP.NET Core does, and upstream's e2e provider checks it).
AUTHORITY = ("grpc.default_authority", "localhost")


def dial(endpoint: str, options: list[tuple[str, str | int]] | None = None) -> grpc.Channel:
    """A channel to a unix socket endpoint, with the authority Go's clients send."""
    return grpc.insecure_channel(f"unix://{socket_path(endpoint)}", options=[AUTHORITY, *(options or [])])
