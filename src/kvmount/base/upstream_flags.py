"""The flags both upstream daemons accept besides their own, and what they do here.

Upstream's driver and Azure provider register klog's flags (klog.InitFlags:
underscore names), ``--enable-pprof`` / ``--pprof-port``, ``--metrics-backend``,
``--log-format-json`` and ``--version``, and their charts pass some of them
(``-v`` always). kvmount accepts every one, so a manifest written for upstream
starts unchanged. What they do:

- ``-v N`` is klog's verbosity: 0 (and below) logs at INFO, 1 and above at
  DEBUG. Info messages are never hidden, as in klog. The Azure SDK's own
  loggers stay at WARNING whatever ``-v`` says: their debug output carries
  request headers.
- ``--logtostderr=false`` writes the log to ``--log_file`` (or
  ``kvmount-<component>.log`` in ``--log_dir``, else the temp directory), kept
  under ``--log_file_max_size`` MB by rolling over to one ``.1`` file; records at
  or above ``--stderrthreshold`` (or all, with ``--alsologtostderr``) also go to
  stderr. With the default ``--logtostderr=true`` those flags do nothing, as in klog.
- klog's newer pair (upstream's driver since v1.6.1): ``--alsologtostderrthreshold``
  (default INFO: everything) is what ``--alsologtostderr`` sends to stderr, and
  ``--legacy_stderr_threshold_behavior=false`` applies ``--stderrthreshold`` to
  stderr with ``--logtostderr=true`` too (default true: it does not).
- ``--metrics-backend``: ``prometheus`` (any case), the only backend upstream has.
- The flags in ``IGNORED`` are accepted and, when set, logged once as ignored.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
import tempfile

from kvmount import __version__
from kvmount.base.flags import add_bool, go_int, go_port
from kvmount.base.logs import JsonShape, setup_logging

log = logging.getLogger(__name__)

# Flags that make sense only for a Go binary or klog's own output format.
IGNORED: dict[str, str] = {
    "enable-pprof": "Go's pprof profiler",
    "pprof-port": "Go's pprof profiler",
    "vmodule": "per-Go-file verbosity",
    "log_backtrace_at": "Go stack traces at a source line",
    "add_dir_header": "klog's header format",
    "skip_headers": "klog's header format",
    "skip_log_headers": "klog's log file headers",
    "one_output": "klog's one file per severity",
}
# klog's severities by name and number, as Python levels.
_SEVERITY = {
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
}


def _severity(value: str) -> int:
    if value.upper() in _SEVERITY:
        return _SEVERITY[value.upper()]
    number = go_int(value)
    return list(_SEVERITY.values())[min(max(number, 0), len(_SEVERITY) - 1)]


def _metrics_backend(value: str) -> str:
    if value.lower() != "prometheus":
        raise argparse.ArgumentTypeError(f"unsupported metrics backend {value!r}; the only one is prometheus")
    return "prometheus"


def _size_mb(value: str) -> int:
    number = go_int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a size in megabytes (0: unlimited)")
    return number


def log_level(verbosity: int) -> int:
    """klog's -v as a Python log level (see the module docstring)."""
    return logging.DEBUG if verbosity >= 1 else logging.INFO


def add_arguments(parser: argparse.ArgumentParser, *, pprof_port: int) -> None:
    add_bool(parser, "--version", False, "print the version and exit")
    add_bool(parser, "--log-format-json", False, "log as JSON lines")
    parser.add_argument(
        "--v",
        type=go_int,
        default=0,
        metavar="N",
        help="log verbosity as klog's -v: 0 info, 1 and above debug",
    )
    parser.add_argument(
        "--metrics-backend",
        type=_metrics_backend,
        default="prometheus",
        help="metrics backend; prometheus is the only one, as upstream",
    )
    logs = parser.add_argument_group("klog's output flags (see docs/switching-from-upstream.md)")
    add_bool(logs, "--logtostderr", True, "log to stderr only (default true)")
    add_bool(logs, "--alsologtostderr", False, "with --logtostderr=false, also log to stderr")
    logs.add_argument("--log_dir", default="", help="with --logtostderr=false, the log file's directory")
    logs.add_argument("--log_file", default="", help="with --logtostderr=false, the log file")
    logs.add_argument(
        "--log_file_max_size",
        type=_size_mb,
        default=1800,
        metavar="MB",
        help="roll the log file over at this size",
    )
    add_bool(
        logs,
        "--legacy_stderr_threshold_behavior",
        True,
        "with --logtostderr, ignore --stderrthreshold (default true); false: only records at or above it",
    )
    logs.add_argument(
        "--alsologtostderrthreshold",
        type=_severity,
        default="INFO",  # a string: argparse reads it through _severity
        help="with --logtostderr=false --alsologtostderr, records at or above this also go to stderr "
        "(default INFO: all)",
    )
    logs.add_argument(
        "--stderrthreshold",
        type=_severity,
        default="ERROR",  # a string: argparse reads it through _severity
        help="with --logtostderr=false, records at or above this severity also go to stderr (default ERROR)",
    )
    ignored = parser.add_argument_group("accepted for compatibility with upstream, ignored")
    add_bool(ignored, "--enable-pprof", None, IGNORED["enable-pprof"])
    ignored.add_argument(
        "--pprof-port",
        type=go_port,
        default=None,
        help=f"{IGNORED['pprof-port']} (upstream default {pprof_port})",
    )
    ignored.add_argument("--vmodule", default=None, help=IGNORED["vmodule"])
    ignored.add_argument("--log_backtrace_at", default=None, help=IGNORED["log_backtrace_at"])
    for name in ("add_dir_header", "skip_headers", "skip_log_headers", "one_output"):
        add_bool(ignored, f"--{name}", None, IGNORED[name])


def _stderr(threshold: int) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    # klog's INFO covers its -v records, which are DEBUG here.
    handler.setLevel(logging.NOTSET if threshold <= logging.INFO else threshold)
    return handler


def _handlers(args: argparse.Namespace, component: str) -> list[logging.Handler] | None:
    if args.logtostderr:
        return None if args.legacy_stderr_threshold_behavior else [_stderr(args.stderrthreshold)]
    path = args.log_file or os.path.join(args.log_dir or tempfile.gettempdir(), f"kvmount-{component}.log")
    max_bytes = args.log_file_max_size << 20
    to_file = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=1 if max_bytes else 0
    )
    threshold = args.stderrthreshold
    if args.alsologtostderr:
        threshold = min(threshold, args.alsologtostderrthreshold)
    return [to_file, _stderr(threshold)]


def start(args: argparse.Namespace, component: str, shape: JsonShape) -> int | None:
    """Act on the common flags: print the version (an exit code: stop), or set up
    logging (JSON lines of the upstream binary's shape with --log-format-json) and say
    which flags are ignored (None: go on)."""
    if args.version:
        print(f"kvmount {component} {__version__}")
        return 0
    try:
        handlers = _handlers(args, component)
    except OSError as err:
        print(
            f"kvmount {component}: cannot open the log file (--log_file / --log_dir): {err}", file=sys.stderr
        )
        return 1
    setup_logging(
        json_shape=shape if args.log_format_json else None, level=log_level(args.v), handlers=handlers
    )
    ignored = [name for name in IGNORED if getattr(args, name.replace("-", "_")) is not None]
    if ignored:
        log.warning(
            "flags accepted for compatibility with upstream and ignored",
            extra={"flags": " ".join(f"--{name} ({IGNORED[name]})" for name in ignored)},
        )
    return None
