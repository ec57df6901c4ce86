"""`kvmount sync-controller`: Secrets from SecretSync objects, with no pod mounting anything.

Flag names and meanings follow upstream's secrets-store-sync-controller; the
poll interval defaults to the driver's rotation interval (upstream: 12h).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from types import FrameType

from kvmount import __version__
from kvmount.base.endpoints import metrics_route, ok_route, serve_http
from kvmount.base.flags import GoFlagParser, add_bool, go_duration, go_int, listen_address, message_size
from kvmount.base.logs import JsonShape, setup_logging
from kvmount.csi.provider_client import ProviderClients
from kvmount.kube.api_store import KubeStore
from kvmount.kube.errors import StoreError
from kvmount.synccontroller.controller import Controller
from kvmount.synccontroller.leader import Leadership
from kvmount.synccontroller.reconcile import Identity, Reconciler

log = logging.getLogger(__name__)
PARSER = GoFlagParser

LEASE_NAME = "29f1d54e.secret-sync.x-k8s.io"  # upstream's election id, so mixed replicas never both lead
EVENT_SOURCE = "secrets-store-sync-controller"
MIN_INTERVAL = 10.0
# A clean stop waits this long for the sync at hand and the Lease's release.
STOP_SECONDS = 35.0


def _address(value: str) -> str:
    return value if value == "0" else listen_address(value)  # "0": off, as upstream


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", default="", help="kubeconfig file (default: in-cluster)")
    parser.add_argument("--provider-volume", default="/provider", help="directory of the providers' sockets")
    parser.add_argument(
        "--token-request-audience",
        default="",
        help="comma-separated audiences of the service account tokens handed to the provider "
        "(workload identity: api://AzureADTokenExchange)",
    )
    parser.add_argument(
        "--rotation-poll-interval",
        type=go_duration,
        default=120.0,
        help=f"how often every SecretSync is synced again (at least {MIN_INTERVAL:.0f}s)",
    )
    parser.add_argument(
        "--max-call-recv-msg-size",
        type=message_size,
        default=4 << 20,
        help="largest provider response, in bytes",
    )
    parser.add_argument(
        "--metrics-bind-address", type=_address, default=":8085", help="metrics address ('' or 0: off)"
    )
    parser.add_argument(
        "--health-probe-bind-address", type=_address, default=":8081", help="/healthz and /readyz address"
    )
    add_bool(parser, "--leader-elect", False, "elect one active replica through a Lease")
    parser.add_argument("--leader-election-namespace", default="", help="namespace of the Lease")
    parser.add_argument(
        "--leader-elect-lease-duration", type=go_duration, default=15.0, help="lease duration"
    )
    parser.add_argument(
        "--leader-elect-renew-deadline", type=go_duration, default=10.0, help="renew deadline"
    )
    parser.add_argument("--leader-elect-retry-period", type=go_duration, default=2.0, help="retry period")
    parser.add_argument(
        "--secret-sync-controller-name",
        default="",
        help="handle only SecretSyncs whose spec.secretSyncControllerName is this or empty (default: all)",
    )
    parser.add_argument("--workers", type=go_int, default=4, help="SecretSyncs synced at once")
    parser.add_argument(
        "--mount-timeout", type=go_duration, default=60.0, help="time given to one provider Mount"
    )
    add_bool(parser, "--log-format-json", False, "log as JSON lines")
    parser.add_argument("--version", action="store_true", help="print the version and exit")


def _namespace(args: argparse.Namespace) -> str:
    if args.leader_election_namespace:
        return str(args.leader_election_namespace)
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return "default"


def _check(args: argparse.Namespace) -> str | None:
    if args.rotation_poll_interval < MIN_INTERVAL:
        return f"--rotation-poll-interval must be at least {MIN_INTERVAL:.0f}s"
    if args.workers < 1:
        return "--workers must be at least 1"
    if args.mount_timeout <= 0:
        return "--mount-timeout must be positive"
    return None


def run(args: argparse.Namespace) -> int:
    if args.version:
        print(f"kvmount sync-controller {__version__}")
        return 0
    setup_logging(json_shape=JsonShape.DRIVER if args.log_format_json else None)
    problem = _check(args)
    if problem:
        print(f"kvmount sync-controller: {problem}", file=sys.stderr)
        return 2
    identity = Identity(
        os.environ.get("SYNC_CONTROLLER_POD_NAME", socket.gethostname()),
        os.environ.get("SYNC_CONTROLLER_POD_UID", ""),
    )
    store = KubeStore(args.kubeconfig, component=EVENT_SOURCE, node=identity.pod_name)
    try:
        # Configured now (it reads the kubeconfig, or the pod's service account): there is nothing
        # to do without the API server, and a bad configuration is the operator's to fix.
        store.rest()
    except StoreError as err:
        print(f"kvmount sync-controller: {err}", file=sys.stderr)
        return 2
    providers = ProviderClients([args.provider_volume], args.max_call_recv_msg_size)
    audiences = [a.strip() for a in args.token_request_audience.split(",") if a.strip()]
    reconciler = Reconciler(store, providers, audiences, identity, args.mount_timeout)

    controller = Controller(
        reconciler, store.rest, args.rotation_poll_interval, args.workers, args.secret_sync_controller_name
    )
    stop = threading.Event()
    signalled = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signalled.set()
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    servers = []
    if args.health_probe_bind_address not in ("", "0"):
        servers.append(
            serve_http(args.health_probe_bind_address, {"/healthz": ok_route(), "/readyz": ok_route()})
        )
    if args.metrics_bind_address not in ("", "0"):
        servers.append(serve_http(args.metrics_bind_address, {"/metrics": metrics_route()}))

    runner: threading.Thread
    if args.leader_elect:
        try:
            leadership = Leadership(
                store.rest,
                _namespace(args),
                LEASE_NAME,
                f"{identity.pod_name}_{os.getpid()}",
                int(args.leader_elect_lease_duration),
                int(args.leader_elect_renew_deadline),
                int(args.leader_elect_retry_period),
            )
        except ValueError as err:
            print(f"kvmount sync-controller: {err}", file=sys.stderr)
            return 2
        controller.leading = reconciler.leading = leadership.leading
        runner = threading.Thread(target=leadership.run, args=(controller.run, stop), daemon=True)
    else:
        runner = threading.Thread(target=controller.run, args=(stop,), daemon=True)
    runner.start()
    stop.wait()
    for server in servers:
        server.shutdown()
    # Workers finish the sync at hand (and the elector then releases the Lease); after a lost
    # Lease nothing is waited for.
    runner.join(timeout=STOP_SECONDS if signalled.is_set() else 0)
    if not signalled.is_set():
        log.error("stopping: the lease was lost or could not be renewed")
        return 1
    log.info("stopped")
    return 0
