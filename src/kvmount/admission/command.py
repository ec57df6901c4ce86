"""`kvmount admission`: flags and wiring of the validating admission webhook."""

from __future__ import annotations

import argparse
import logging
import signal
import ssl
import threading

from kvmount.admission.server import Certificates, Options, WebhookServer
from kvmount.base import upstream_flags
from kvmount.base.flags import GoFlagParser, add_bool, go_port, positive_duration, positive_int
from kvmount.base.logs import JsonShape

log = logging.getLogger(__name__)
PARSER = GoFlagParser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    upstream_flags.add_arguments(parser, pprof_port=0)
    parser.add_argument("--port", type=go_port, default=9443, help="HTTPS port to serve (default 9443)")
    parser.add_argument(
        "--tls-cert-file",
        required=True,
        help="the server certificate (PEM), chain after it; read again when it changes",
    )
    parser.add_argument("--tls-private-key-file", required=True, help="the server certificate's key (PEM)")
    add_bool(
        parser,
        "--deny-invalid",
        False,
        "refuse a SecretProviderClass with an error finding (default: allow it, findings as warnings)",
    )
    parser.add_argument(
        "--max-request-bytes",
        type=positive_int,
        default=3 * 1024 * 1024,
        help="largest AdmissionReview body (default %(default)s, 3 MiB: an object's largest size in etcd)",
    )
    parser.add_argument(
        "--request-timeout",
        type=positive_duration,
        default=10.0,
        help="time a request has to arrive, its TLS handshake included (default 10s)",
    )


def run(args: argparse.Namespace) -> int:
    exit_code = upstream_flags.start(args, "admission", JsonShape.KLOG)
    if exit_code is not None:
        return exit_code
    try:
        certificates = Certificates(args.tls_cert_file, args.tls_private_key_file)
        options = Options(args.deny_invalid, args.max_request_bytes, args.request_timeout)
        server = WebhookServer(("", args.port), certificates, options)
    except (OSError, ssl.SSLError) as err:
        log.error("cannot serve", extra={"port": args.port, "error": str(err)})
        return 1
    log.info("serving admission reviews", extra={"port": server.server_address[1], "deny": args.deny_invalid})
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stopping.set())
    thread = threading.Thread(target=server.serve_forever, name="admission", daemon=True)
    thread.start()
    stopping.wait()
    server.shutdown()
    server.server_close()
    return 0
