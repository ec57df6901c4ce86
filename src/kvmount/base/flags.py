"""Flags read as Go's flag package reads them, so upstream's manifests work unchanged.

Go accepts ``-name`` and ``--name``, ``-name=value`` and ``-name value`` (a
boolean takes no separate value: ``-bool`` alone is true, ``-bool=false``
sets it false), and stops at the first argument that is not a flag. argparse
knows none of that, so ``GoFlagParser`` rewrites every flag it defines into
argparse's ``--name=value`` before parsing.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import Any

from kvmount.base import numbers

# The spellings of Go's strconv.ParseBool.
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}
# [0-9], not \d: \d and float() take the digits of every script.
_DURATION_PART = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
# Go's time.Duration is int64 nanoseconds: about 292 years.
_MAX_DURATION = (2**63 - 1) / 1e9
_SECONDS = re.compile(r"[0-9]+\.?[0-9]*|\.[0-9]+")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_bool(value: str) -> bool:
    """``--flag``, ``--flag=true`` and ``--flag=false`` as Go's flag package reads them."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not a boolean (true or false)")


def _whole(value: str, low: int = numbers.INT64[0], high: int = numbers.INT64[1]) -> int:
    try:
        return numbers.go_integer(value, low, high)
    except numbers.NumberError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def go_int(value: str) -> int:
    """An integer as Go's int flags read it: decimal, 0x.., 0o.., 0b.. or a leading-zero octal."""
    return _whole(value)


def positive_int(value: str) -> int:
    """A Go int above zero (a count or a cap)."""
    number = go_int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return number


def go_port(value: str) -> int:
    """A port flag: 0 to 65535 (0: off, where the flag says so)."""
    return _whole(value, 0, 65535)


def seconds(value: str) -> float:
    """A number of seconds, written in ASCII digits (float() takes every script's, and "nan")."""
    if len(value) > numbers.MAX_LENGTH or not _SECONDS.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value[:80]!r} is not a number of seconds such as 5 or 0.5")
    number = float(value)
    if number > _MAX_DURATION:
        raise argparse.ArgumentTypeError(f"{value!r} seconds is longer than a Go duration can be")
    return number


def message_size(value: str) -> int:
    """A gRPC message size in bytes: gRPC takes 1 to 2**31 - 1."""
    return _whole(value, 1, 2**31 - 1)


def listen_address(value: str) -> str:
    """``host:port`` or ``:port`` to serve on, the port checked; empty: off."""
    _host, colon, port = value.rpartition(":")
    if value and (not colon or not port):
        raise argparse.ArgumentTypeError(f"{value[:200]!r} is not an address such as :8080 or 0.0.0.0:8080")
    if value:
        try:
            numbers.port(port)
        except numbers.NumberError as err:
            raise argparse.ArgumentTypeError(f"{value[:200]!r}: port {err}") from None
    return value


def absolute_path(value: str) -> str:
    """A flag naming a directory on the node: relative paths would depend on the working directory."""
    if not value.startswith("/") or "\x00" in value:
        raise argparse.ArgumentTypeError(f"{value[:200]!r} is not an absolute path")
    return value


def go_duration(value: str) -> float:
    """A Go duration such as ``2m``, ``1m30s``, ``500ms`` or ``1.5h``, in seconds."""
    sign, body = (-1.0, value[1:]) if value.startswith("-") else (1.0, value.removeprefix("+"))
    if body == "0":
        return 0.0
    parts = _DURATION_PART.findall(body) if len(body) <= numbers.MAX_LENGTH else []
    if not parts or "".join(n + u for n, u in parts) != body:
        raise argparse.ArgumentTypeError(f"{value[:80]!r} is not a duration such as 2m, 30s or 1m30s")
    total = sum(float(n) * _UNIT[u] for n, u in parts)
    if total > _MAX_DURATION:
        raise argparse.ArgumentTypeError(f"{value!r} is longer than a Go duration can be (about 292 years)")
    return sign * total


def positive_duration(value: str) -> float:
    """A Go duration above zero (a timeout)."""
    seconds = go_duration(value)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive duration such as 2m")
    return seconds


def add_bool(parser: argparse._ActionsContainer, name: str, default: bool | None, help: str) -> None:
    parser.add_argument(name, type=go_bool, nargs="?", const=True, default=default, metavar="BOOL", help=help)


class GoFlagParser(argparse.ArgumentParser):
    """An ArgumentParser whose long options are read with Go's flag syntax.

    Options are defined as usual (``--name``, in groups too); which of them
    are booleans is known from ``type=go_bool``. Abbreviations are off, as in Go.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def _go_flags(self) -> dict[str, bool]:
        """Each long option's name -> whether it is a boolean."""
        return {
            option[2:]: action.type is go_bool
            for action in self._actions
            for option in action.option_strings
            if option.startswith("--")
        }

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        return super().parse_known_args(None if args is None else self.go_style(args), namespace)

    def go_style(self, args: Sequence[str]) -> list[str]:
        """Go's spellings of the defined flags as ``--name=value``; anything else is left
        for argparse to reject, and from the first non-flag on nothing is rewritten."""
        flags = self._go_flags()
        out: list[str] = []
        rest = list(args)
        while rest:
            arg = rest.pop(0)
            if arg == "--" or len(arg) < 2 or not arg.startswith("-"):
                return [*out, arg, *rest]
            name, has_value, value = arg.lstrip("-").partition("=")
            dashes = len(arg) - len(arg.lstrip("-"))
            if name in ("h", "help") and dashes <= 2:
                out.append("--help")
            elif dashes > 2 or name not in flags:
                out.append(arg)
            elif flags[name]:
                out.append(f"--{name}={value if has_value else 'true'}")
            elif has_value:
                out.append(f"--{name}={value}")
            elif rest:
                out.append(f"--{name}={rest.pop(0)}")
            else:
                out.append(f"--{name}")  # argparse says the value is missing
        return out
