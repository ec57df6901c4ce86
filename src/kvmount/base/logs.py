"""Logging set-up: one stream, text or JSON.

Log records carry structured fields through ``extra=``; no caller passes a
secret value, token or key into a record.
"""

from __future__ import annotations

import json
import logging
import sys

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
