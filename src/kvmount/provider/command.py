"""`kvmount provider`: flags (upstream's names and defaults) and wiring."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

import grpc

from kvmount.base import unix_grpc, upstream_flags
from kvmount.base.endpoints import metrics_route, serve_http
from kvmount.base.flags import (
    GoFlagParser,
    add_bool,
    go_duration,
    go_int,
    go_port,
    positive_duration,
    positive_int,
    seconds,
)
from kvmount.base.logs import JsonShape
from kvmount.keyvault import (
    DEFAULT_CLOUD_ENV_DIRS,
    DEFAULT_MAX_MOUNT_BYTES,
    DEFAULT_MAX_OBJECT_BYTES,
    DEFAULT_MAX_OBJECTS,
    DEFAULT_MAX_TOKEN_ANSWER_BYTES,
    DEFAULT_MAX_VERSION_HISTORY,
    DEFAULT_STALE_CACHE_BYTES,
    NMI_PORT,
    Limits,
)
from kvmount.proto import v1alpha1_pb2 as pb
from kvmount.proto import v1alpha1_pb2_grpc as pb_grpc
from kvmount.provider import metrics, server

if TYPE_CHECKING:
    from kvmount.keyvault import KeyVaultMounter

log = logging.getLogger(__name__)
PARSER = GoFlagParser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    upstream_flags.add_arguments(parser, pprof_port=6060)
    parser.add_argument("--endpoint", default="unix:///tmp/azure.sock", help="gRPC unix socket to serve")
    add_bool(parser, "--construct-pem-chain", True, "order certificate chains leaf -> root")
    add_bool(
        parser,
        "--write-cert-and-key-in-separate-files",
        False,
        "also write <file>.crt and <file>.key for certificate-backed secrets",
    )
    parser.add_argument("--cloud-name", default="", help="default cloud when a class sets no cloudName")
    parser.add_argument("--healthz-port", type=go_port, default=8989, help="port of the health endpoint")
    parser.add_argument("--healthz-path", default="/healthz", help="path of the health endpoint")
    parser.add_argument(
        "--healthz-timeout",
        type=go_duration,
        default=5.0,
        help="how long a health check may take (default 5s)",
    )
    parser.add_argument("--prometheus-port", type=go_port, default=8898, help="port of /metrics")
    parser.add_argument(
        "--custom-user-agent", default="", help="added to the User-Agent of Key Vault and token requests"
    )
    parser.add_argument(
        "--token-proxy-url",
        default="",
        help="useAzureTokenProxy (identity binding): where token requests go "
        "(default https://kubernetes.default.svc.cluster.local)",
    )
    parser.add_argument(
        "--sni-name",
        default="",
        help="useAzureTokenProxy: TLS server name of the token proxy "
        "(default: derived from the API server's certificate)",
    )
    parser.add_argument(
        "--max-concurrent-fetches", type=go_int, default=32, help="Key Vault requests in flight at once"
    )
    parser.add_argument("--nmi-port", type=_nmi_port, default=NMI_PORT, help="aad-pod-identity NMI port")
    parser.add_argument(
        "--coalesce-seconds",
        type=seconds,
        default=5.0,
        help="identical Key Vault reads by one identity share a read in flight; rotation polls "
        "also take one completed within this many seconds (0: nothing shared)",
    )
    _add_caps(parser)
    parser.add_argument(
        "--serve-stale-on-error",
        type=_not_negative,
        default=0.0,
        help="when Key Vault throttles, fails (5xx) or cannot be reached, answer a Mount with the "
        "content this provider read for the same identity and object within this duration "
        "(default 0: off; see docs/security.md)",
    )
    parser.add_argument(
        "--stale-cache-bytes",
        type=positive_int,
        default=DEFAULT_STALE_CACHE_BYTES,
        help="memory kept for --serve-stale-on-error, oldest content dropped first "
        "(default %(default)s, 4 MiB)",
    )


def _not_negative(value: str) -> float:
    duration = go_duration(value)
    if duration < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is negative: use a duration such as 15m, or 0 for off")
    return duration


def _nmi_port(value: str) -> int:
    port = go_port(value)
    if port == 0:
        raise argparse.ArgumentTypeError("0 is not NMI's port: a port is 1 to 65535")
    return port


def _add_caps(parser: argparse.ArgumentParser) -> None:
    """What a class (written by a namespace user) may ask of the provider; upstream has no caps."""
    parser.add_argument(
        "--cloud-env-dirs",
        default=",".join(DEFAULT_CLOUD_ENV_DIRS),
        help="comma-separated directories a class's cloudEnvFileName may name "
        "(default %(default)s; upstream reads any path)",
    )
    parser.add_argument(
        "--max-version-history",
        type=positive_int,
        default=DEFAULT_MAX_VERSION_HISTORY,
        help="largest objectVersionHistory (default %(default)s)",
    )
    parser.add_argument(
        "--max-objects-per-mount",
        type=positive_int,
        default=DEFAULT_MAX_OBJECTS,
        help="objects in one mount, each history version counted (default %(default)s)",
    )
    parser.add_argument(
        "--max-mount-bytes",
        type=positive_int,
        default=DEFAULT_MAX_MOUNT_BYTES,
        help="content bytes of one mount, answers still arriving included (default %(default)s, 64 MiB)",
    )
    parser.add_argument(
        "--max-object-bytes",
        type=positive_int,
        default=DEFAULT_MAX_OBJECT_BYTES,
        help="bytes of one Key Vault answer, decoded, counted as it arrives (default %(default)s, "
        "1 MiB; a secret is at most 25 KB)",
    )
    parser.add_argument(
        "--max-token-answer-bytes",
        type=positive_int,
        default=DEFAULT_MAX_TOKEN_ANSWER_BYTES,
        help="bytes of one answer of an identity endpoint (Azure AD, IMDS, NMI, the token proxy), "
        "decoded, counted as it arrives (default %(default)s, 64 KiB; a token answer is a few KB)",
    )
    parser.add_argument(
        "--default-mount-timeout",
        type=positive_duration,
        default=server.DEFAULT_BUDGET,
        help="time a Mount may take when the caller sets no gRPC deadline (default 2m)",
    )


def _health(endpoint: str, timeout: float) -> tuple[int, bytes, str]:
    """Healthy when the provider answers Version over its own socket."""
    try:
        with unix_grpc.dial(endpoint) as channel:
            pb_grpc.CSIDriverProviderStub(channel).Version(
                pb.VersionRequest(version="v1alpha1"), timeout=timeout
            )
    except grpc.RpcError as err:
        return 503, f"unhealthy: {err.code().name}\n".encode(), "text/plain"
    return 200, b"ok\n", "text/plain"


def _mounter(args: argparse.Namespace) -> KeyVaultMounter:
    """The Key Vault pipeline the flags describe (imports the Azure SDK)."""
    from kvmount.keyvault import ContentOptions, KeyVaultMounter, Settings

    settings = Settings(
        content=ContentOptions(args.construct_pem_chain, args.write_cert_and_key_in_separate_files),
        default_cloud=args.cloud_name,
        max_concurrency=max(1, args.max_concurrent_fetches),
        nmi_port=args.nmi_port,
        coalesce_seconds=args.coalesce_seconds,
        user_agent=args.custom_user_agent,
        token_proxy_url=args.token_proxy_url,
        sni_name=args.sni_name,
        cloud_env_dirs=tuple(d for d in args.cloud_env_dirs.split(",") if d),
        limits=Limits(
            args.max_version_history,
            args.max_objects_per_mount,
            args.max_mount_bytes,
            args.max_object_bytes,
            args.max_token_answer_bytes,
        ),
        stale_seconds=args.serve_stale_on_error,
        stale_bytes=args.stale_cache_bytes,
    )
    return KeyVaultMounter(settings, observe_request=metrics.observe_keyvault)


def run(args: argparse.Namespace) -> int:
    exit_code = upstream_flags.start(args, "provider", JsonShape.KLOG)
    if exit_code is not None:
        return exit_code
    mounter = server.LazyMounter(lambda: _mounter(args))
    try:
        grpc_server = unix_grpc.serve(
            args.endpoint, lambda s: server.register(s, mounter, args.default_mount_timeout)
        )
    except (OSError, ValueError, RuntimeError) as err:
        log.error("cannot serve", extra={"endpoint": args.endpoint, "error": str(err)})
        return 1
    http = []
    if args.healthz_port > 0:
        routes = {args.healthz_path: lambda: _health(args.endpoint, args.healthz_timeout)}
        http.append(serve_http(f":{args.healthz_port}", routes))
    if args.prometheus_port > 0:
        http.append(serve_http(f":{args.prometheus_port}", {"/metrics": metrics_route()}))

    def stop_http() -> None:
        for h in http:
            h.shutdown()

    unix_grpc.run_until_signalled(grpc_server, on_stop=stop_http)
    mounter.close()
    return 0
