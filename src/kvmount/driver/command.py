"""`kvmount driver`: flags (upstream's names and defaults) and wiring."""

from __future__ import annotations

import argparse
import logging
import socket
import threading

from kvmount.base import unix_grpc, upstream_flags
from kvmount.base.endpoints import metrics_route, ok_route, serve_http
from kvmount.base.flags import (
    GoFlagParser,
    absolute_path,
    add_bool,
    go_duration,
    listen_address,
    message_size,
)
from kvmount.base.logs import JsonShape
from kvmount.csi.provider_client import ProviderClients
from kvmount.driver import csi
from kvmount.driver.publish import Publisher
from kvmount.driver.registration import DEFAULT_REGISTRY_DIR, RegistrationServer
from kvmount.driver.restart import Restarter
from kvmount.driver.rotation import Rotator
from kvmount.driver.volumes import VolumeRegistry
from kvmount.kube.api_store import KubeStore
from kvmount.kube.store import Store
from kvmount.secretsync.writer import SecretSync
from kvmount.volume.target import DEFAULT_KUBELET_ROOT, KubeletRoot, root_from_mounts

log = logging.getLogger(__name__)
PARSER = GoFlagParser

DEFAULT_ADDITIONAL_PROVIDER_PATHS = ["/etc/kubernetes/secrets-store-csi-providers"]
# Headroom over two full provider responses (old and new version side by side
# during a rewrite) for tmpfs page rounding of small files.
_TMPFS_HEADROOM = 4 << 20
# The shortest rotation or health check period accepted.
MIN_INTERVAL = 1.0


def _paths(value: str) -> list[str]:
    return [p for p in value.split(",") if p]


def _interval(value: str) -> float:
    """A period of a loop: 0 or less would make it spin (and the kubelet republish check too)."""
    seconds = go_duration(value)
    if seconds < MIN_INTERVAL:
        raise argparse.ArgumentTypeError(
            f"{value!r} is too short: a period must be at least {MIN_INTERVAL:g}s"
        )
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    upstream_flags.add_arguments(parser, pprof_port=6065)
    parser.add_argument("--endpoint", default="unix:///tmp/csi.sock", help="CSI endpoint (unix socket)")
    parser.add_argument("--drivername", default="secrets-store.csi.k8s.io", help="name of the driver")
    parser.add_argument("--nodeid", default="", help="node id (defaults to the host name)")
    parser.add_argument(
        "--provider-volume",
        default="/var/run/secrets-store-csi-providers",
        help="directory where providers serve <name>.sock",
    )
    parser.add_argument(
        "--additional-provider-volume-paths",
        type=_paths,
        action="extend",
        default=None,
        help="more provider socket directories, comma-separated "
        f"(default {DEFAULT_ADDITIONAL_PROVIDER_PATHS[0]})",
    )
    parser.add_argument(
        "--metrics-addr", type=listen_address, default=":8095", help="address of /metrics and /healthz"
    )
    add_bool(parser, "--enable-secret-rotation", False, "re-fetch mounted content periodically")
    parser.add_argument(
        "--rotation-poll-interval",
        type=_interval,
        default=120.0,
        help="rotation period (default 2m, at least 1s)",
    )
    parser.add_argument(
        "--min-rotation-poll-interval",
        type=_interval,
        default=10.0,
        help="the shortest rotation period a SecretProviderClass may set with the annotation "
        "kvmount.io/rotation-poll-interval; shorter ones are raised to it (default 10s, at least 1s)",
    )
    add_bool(
        parser,
        "--enable-workload-restart",
        False,
        "when rotation changes a pod's files, roll out its Deployment, StatefulSet or DaemonSet if it "
        'or its SecretProviderClass has the annotation kvmount.io/restart-on-rotation: "true"',
    )
    parser.add_argument(
        "--workload-restart-min-interval",
        type=_interval,
        default=300.0,
        help="least time between two rollouts of one workload (default 5m)",
    )
    parser.add_argument(
        "--max-call-recv-msg-size",
        type=message_size,
        default=4 << 20,
        help="largest provider response accepted, in bytes",
    )
    add_bool(parser, "--provider-health-check", False, "call Version on the providers periodically")
    parser.add_argument(
        "--provider-health-check-interval",
        type=_interval,
        default=120.0,
        help="provider health check period (default 2m, at least 1s)",
    )
    parser.add_argument(
        "--kubelet-registration-path",
        default="",
        help="register with kubelet itself, no node-driver-registrar: the CSI socket path as kubelet "
        "sees it (e.g. /var/lib/kubelet/plugins/csi-secrets-store/csi.sock); empty: a registrar does it",
    )
    parser.add_argument(
        "--plugin-registration-path",
        default=DEFAULT_REGISTRY_DIR,
        help=f"kubelet's plugin registry directory, as the driver sees it (default {DEFAULT_REGISTRY_DIR})",
    )
    parser.add_argument(
        "--kubeconfig", default="", help="kubeconfig file (default: in-cluster, or $KUBECONFIG)"
    )
    parser.add_argument(
        "--standalone-classes-dir",
        default="",
        help="standalone mode (no Kubernetes): read SecretProviderClasses from the YAML files in this "
        "directory and keep pod statuses as files under --state-dir",
    )
    parser.add_argument(
        "--state-dir",
        default="/run/kvmount/driver",
        help="per-volume state (no secrets), and pod statuses in standalone mode",
    )
    parser.add_argument(
        "--kubelet-root-dir",
        type=absolute_path,
        default=None,
        help="kubelet's --root-dir (upstream chart value kubeletRootDir): every target path must be a "
        "real directory below it (default: the parent of the one mount point named pods, as a pod of "
        f"upstream's chart has it, else {DEFAULT_KUBELET_ROOT})",
    )


def run(args: argparse.Namespace) -> int:
    exit_code = upstream_flags.start(args, "driver", JsonShape.DRIVER)
    if exit_code is not None:
        return exit_code
    node_id = args.nodeid or socket.gethostname()
    kubelet_root = args.kubelet_root_dir or root_from_mounts() or DEFAULT_KUBELET_ROOT
    if not args.nodeid:
        log.info("--nodeid not set, using the host name", extra={"node_id": node_id})
    store: Store
    api = syncer = None
    if args.standalone_classes_dir:
        # Here: its YAML parser is needed in standalone mode only.
        from kvmount.kube.file_store import FileStore

        store = FileStore(args.standalone_classes_dir, args.state_dir)
    else:
        store = api = KubeStore(args.kubeconfig, args.drivername, node_id)
        syncer = SecretSync(api.rest, pods=api.get_pod)
    additional = (
        DEFAULT_ADDITIONAL_PROVIDER_PATHS
        if args.additional_provider_volume_paths is None
        else args.additional_provider_volume_paths
    )
    providers = ProviderClients([args.provider_volume, *additional], args.max_call_recv_msg_size)
    publisher = Publisher(
        store,
        providers,
        VolumeRegistry(args.state_dir),
        node_id,
        tmpfs_size=2 * args.max_call_recv_msg_size + _TMPFS_HEADROOM,
        rotation_interval=args.rotation_poll_interval if args.enable_secret_rotation else None,
        syncer=syncer,
        kubelet_root=KubeletRoot(kubelet_root),
    )
    log.info(
        "starting",
        extra={
            "driver": args.drivername,
            "node_id": node_id,
            "mode": "standalone" if args.standalone_classes_dir else "kubernetes",
            "rotation": args.enable_secret_rotation,
            "kubelet_root": kubelet_root,
        },
    )
    try:
        server = unix_grpc.serve(
            args.endpoint, lambda s: csi.register(s, args.drivername, publisher, node_id)
        )
    except (OSError, ValueError, RuntimeError) as err:
        log.error("cannot serve", extra={"endpoint": args.endpoint, "error": str(err)})
        return 1
    registration = None
    if args.kubelet_registration_path:
        try:
            registration = RegistrationServer(
                args.plugin_registration_path, args.drivername, args.kubelet_registration_path
            ).start()
        except (OSError, ValueError, RuntimeError) as err:
            log.error(
                "cannot serve kubelet plugin registration",
                extra={"directory": args.plugin_registration_path, "error": str(err)},
            )
            server.stop(None)
            return 1
    http = None
    if args.metrics_addr:
        http = serve_http(args.metrics_addr, {"/metrics": metrics_route(), "/healthz": ok_route()})
    stop = threading.Event()
    if api is not None:
        # Pods, classes and pod statuses served from watches: an unchanged rotation poll
        # costs the API server nothing.
        api.start_watches(stop)
    restarter = None
    if args.enable_workload_restart:
        if api is None:
            log.warning("--enable-workload-restart needs the Kubernetes API; ignored in standalone mode")
        else:
            restarter = Restarter(api, publisher.registry, args.workload_restart_min_interval)
    Rotator(
        publisher,
        api,
        node_id,
        args.rotation_poll_interval,
        restarter=restarter,
        min_interval=args.min_rotation_poll_interval,
    ).start(stop, periodic=args.enable_secret_rotation)
    if args.provider_health_check:
        providers.run_health_checks(args.provider_health_check_interval, stop)

    def on_stop() -> None:
        stop.set()
        if registration is not None:
            registration.stop()
        if http is not None:
            http.shutdown()

    unix_grpc.run_until_signalled(server, on_stop=on_stop)
    providers.close()
    return 0
