"""YAML a user wrote, read so that every way it fails is one error of ours: ``Unreadable``.

PyYAML raises more than YAMLError: RecursionError when the text nests deeper than its
recursive composer can go (50,000 ``[``, a map 30,000 deep), and ValueError while it
constructs a value Python cannot hold (an integer past the 4,300-digit limit of int(),
a date such as 2024-13-45).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

import yaml

__all__ = ["TOO_DEEP", "Unreadable", "read"]

T = TypeVar("T")
P = ParamSpec("P")
TOO_DEEP = "nested too deeply; check the file is the right one"


class Unreadable(Exception):
    """Text that cannot be read as YAML; ``line`` (1-based) when known, else 0."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.line = line


def read(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``call(*args, **kwargs)``, which reads YAML (``yaml.safe_load``, ``yaml.compose_all``...),
    its failures as Unreadable."""
    try:
        return call(*args, **kwargs)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or "syntax error"
        raise Unreadable(f"not valid YAML: {problem}", mark.line + 1 if mark else 0) from None
    except RecursionError:
        raise Unreadable(TOO_DEEP) from None
    except UnicodeDecodeError:
        raise Unreadable("is not UTF-8 text") from None
    except ValueError:
        raise Unreadable(
            "holds a value YAML cannot construct (a number of thousands of digits, a date that "
            "does not exist)"
        ) from None
