"""Whole numbers read from text a user wrote: flags, YAML fields, volume options, config files.

ASCII digits only: str.isdigit() takes "²" (which int() then refuses with a raw message of its
own) and int() takes the digits of every script ("٣٣" is 33). The text's length is bounded
before int() sees it, since past 4,300 digits int() raises its own error. Every refusal is a
NumberError, a ValueError whose message is this project's (the text cut short); callers add
the field's name.
"""

from __future__ import annotations

import re

__all__ = ["INT64", "MAX_LENGTH", "NumberError", "decimal", "go_integer", "port"]

# No field takes more: Go's int64 has 19 decimal digits, 64 binary ones (with a 0b prefix).
MAX_LENGTH = 72
INT64 = (-(2**63), 2**63 - 1)
# Written out rather than \d, which matches every script's digits.
_DECIMAL = re.compile(r"[+-]?[0-9]+")
# Go's strconv.ParseInt(s, 0, 64): 0x, 0o, 0b, a leading 0 for octal, underscores between digits.
_GO = re.compile(r"[+-]?(0[xX](_?[0-9a-fA-F])+|0[oO](_?[0-7])+|0[bB](_?[01])+|0(_?[0-7])*|[1-9](_?[0-9])*)")


class NumberError(ValueError):
    """Text that is not a whole number in the range asked for."""


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _checked(text: str, number: int, low: int, high: int) -> int:
    if not low <= number <= high:
        raise NumberError(f"{_shown(text)} is out of range ({low} to {high})")
    return number


def _matched(pattern: re.Pattern[str], text: str) -> re.Match[str]:
    if len(text) > MAX_LENGTH:
        raise NumberError(f"{_shown(text)} is too long for a whole number ({len(text)} characters)")
    match = pattern.fullmatch(text)
    if match is None:
        raise NumberError(f"{_shown(text)} is not a whole number")
    return match


def decimal(text: str, low: int = INT64[0], high: int = INT64[1]) -> int:
    """Decimal digits with an optional sign, from ``low`` to ``high``."""
    _matched(_DECIMAL, text)
    return _checked(text, int(text, 10), low, high)


def go_integer(text: str, low: int = INT64[0], high: int = INT64[1]) -> int:
    """A whole number as Go's int flags and yaml.v3 read one: decimal, 0x.., 0o.., 0b.. or 0.. (octal)."""
    match = _matched(_GO, text)
    digits = match.group(1).replace("_", "")
    sign = -1 if text.startswith("-") else 1
    octal = len(digits) > 1 and digits[0] == "0" and digits[1].isdigit()
    number = int(digits, 8) if octal else int(digits, 0)
    return _checked(text, sign * number, low, high)


def port(text: str, zero: bool = True) -> int:
    """A TCP port in decimal: 1 to 65535, or 0 too when ``zero`` (off, or any free port)."""
    return decimal(text, 0 if zero else 1, 65535)
