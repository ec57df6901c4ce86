"""Logging set-up, Prometheus metrics and health endpoints.

Log records carry structured fields through ``extra=``; no caller passes a
secret value, token or key into a record, and metric labels take values from
closed sets only (see ``bounded``).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_fields(record))
        if record.exc_info and record.exc_info[0] is not None:
            doc["error_type"] = record.exc_info[0].__name__
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {record.getMessage()}"
        return f"{line} {extras}" if extras else line


def setup_logging(
    json_format: bool = False,
    level: int = logging.INFO,
    stream: object = None,
    handlers: list[logging.Handler] | None = None,
) -> None:
    """Route all logs to one stream (stderr by default), or to the given handlers, text or JSON."""
    if handlers is None:
        handlers = [logging.StreamHandler(stream or sys.stderr)]  # type: ignore[arg-type]
    for handler in handlers:
        handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level)
    # The Azure SDK logs request URLs and headers at INFO; keep it to warnings.
    logging.getLogger("azure").setLevel(logging.WARNING)


def bounded(value: str, allowed: Iterable[str], other: str = "other") -> str:
    """A metric label value from a closed set, so no free text becomes a label."""
    return value if value in set(allowed) else other


class _HealthHandler(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, Callable[[], tuple[int, bytes, str]]]] = {}

    def do_GET(self) -> None:
        route = self.routes.get(self.path.split("?", 1)[0])
        if route is None:
            status, body, ctype = 404, b"not found\n", "text/plain"
        else:
            status, body, ctype = route()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_http(address: str, routes: dict[str, Callable[[], tuple[int, bytes, str]]]) -> ThreadingHTTPServer:
    """Serve small GET routes (health, metrics) on ``host:port`` or ``:port`` in a thread."""
    host, _, port = address.rpartition(":")
    handler = type("Handler", (_HealthHandler,), {"routes": routes})
    server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), handler)
    threading.Thread(target=server.serve_forever, daemon=True, name=f"http{address}").start()
    return server


def metrics_route() -> Callable[[], tuple[int, bytes, str]]:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return lambda: (200, generate_latest(), CONTENT_TYPE_LATEST)


def ok_route() -> Callable[[], tuple[int, bytes, str]]:
    return lambda: (200, b"ok\n", "text/plain")
