"""Flag parsing shared by the daemons, in the forms upstream's Go flags accept."""

from __future__ import annotations

import argparse
import re

_TRUE = {"1", "t", "true"}
_FALSE = {"0", "f", "false"}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_bool(value: str) -> bool:
    """``--flag``, ``--flag=true`` and ``--flag=false`` as Go's flag package reads them."""
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not a boolean (true or false)")


def add_bool(parser: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    parser.add_argument(name, type=go_bool, nargs="?", const=True, default=default, metavar="BOOL", help=help)


def go_duration(value: str) -> float:
    """A Go duration such as ``2m``, ``1m30s`` or ``500ms``, in seconds."""
    if value in ("0", ""):
        return 0.0
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration such as 2m, 30s or 1m30s")
    return sum(float(n) * _UNIT[u] for n, u in parts)
