"""Logging set-up: one stream, text or JSON.

Log records carry structured fields through ``extra=``; no caller passes a
secret value, token or key into a record.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from enum import StrEnum

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED}


class JsonShape(StrEnum):
    """The JSON line shapes of upstream's binaries, which log pipelines are written against."""

    # The driver (monis.app/mlog over zap): ISO time in microseconds, a level name, "message".
    DRIVER = "driver"
    # The Azure provider and the CSI sidecars (component-base's klog JSON): epoch milliseconds,
    # no level key, "v" on info lines, "err" on errors.
    KLOG = "klog"


def _caller(record: logging.LogRecord) -> str:
    # Relative to the package root, as Go's trimmed paths are relative to the module.
    path = record.pathname
    marker = path.rfind("/kvmount/")
    return f"{path[marker + 1 :] if marker >= 0 else record.filename}:{record.lineno}"


class DriverJsonFormatter(logging.Formatter):
    """mlog's shape: level error / info / debug, a warning is an info line with "warning": true."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        level = record.levelno
        doc: dict[str, object] = {
            "level": "error" if level >= logging.ERROR else "info" if level >= logging.INFO else "debug",
            "timestamp": stamp,
            "caller": f"{_caller(record)}${record.module}.{record.funcName}",
            "message": record.getMessage(),
        }
        if record.name != "root":
            doc["logger"] = record.name
        if logging.WARNING <= level < logging.ERROR:
            doc["warning"] = True
        doc.update(_fields(record))
        if record.exc_info and record.exc_info[0] is not None:
            doc.setdefault("error", record.exc_info[0].__name__)
        return json.dumps(doc, default=str, separators=(",", ":"))


class KlogJsonFormatter(logging.Formatter):
    """component-base's shape: warnings are info lines (klog's structured API has none)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": record.created * 1000.0,
            "caller": _caller(record),
            "msg": record.getMessage(),
        }
        if record.name != "root":
            doc["logger"] = record.name
        if record.levelno < logging.ERROR:
            # klog's -v of the line: kvmount's debug lines are those -v 1 shows.
            doc["v"] = 0 if record.levelno >= logging.INFO else 1
        fields = _fields(record)
        # klog names an error "err"; kvmount's records carry it as "error".
        if "error" in fields:
            fields["err"] = fields.pop("error")
        doc.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            doc.setdefault("err", record.exc_info[0].__name__)
        return json.dumps(doc, default=str, separators=(",", ":"))


_JSON_FORMATTERS: dict[JsonShape, type[logging.Formatter]] = {
    JsonShape.DRIVER: DriverJsonFormatter,
    JsonShape.KLOG: KlogJsonFormatter,
}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {record.getMessage()}"
        return f"{line} {extras}" if extras else line


def setup_logging(
    json_shape: JsonShape | None = None,
    level: int = logging.INFO,
    stream: object = None,
    handlers: list[logging.Handler] | None = None,
) -> None:
    """Route all logs to one stream (stderr by default), or to the given handlers, as text or
    as JSON lines of the given shape."""
    if handlers is None:
        handlers = [logging.StreamHandler(stream or sys.stderr)]  # type: ignore[arg-type]
    for handler in handlers:
        handler.setFormatter(_JSON_FORMATTERS[json_shape]() if json_shape else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level)
    # The Azure SDK logs request URLs and headers at INFO; keep it to warnings.
    logging.getLogger("azure").setLevel(logging.WARNING)
