"""Problems found before any network call, from one set of checks used two ways: a mount raises
the first; `kvmount validate` lists them all."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from kvmount.keyvault.errors import InvalidSpec

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """One reason a mount is refused; ``index`` is the objects[] item it is about, if one."""

    error: InvalidSpec
    index: int | None = None


class Findings:
    """Runs checks: without ``collect`` the first problem is raised, with it each is kept."""

    def __init__(self, collect: bool) -> None:
        self.collect = collect
        self.found: list[Problem] = []

    def check(self, call: Callable[..., T], *args: object, index: int | None = None) -> T | None:
        try:
            return call(*args)
        except InvalidSpec as err:
            if not self.collect:
                raise
            self.found.append(Problem(err, index))
            return None


def suggest(key: str, known: Iterable[str]) -> str:
    """The fix for an unknown key: the closest known one (a typo, a wrong case), else the list."""
    names = sorted(known)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6) or [
        n for n in names if n.lower() == key.lower()
    ]
    if close:
        return f"did you mean {close[0]!r}?"
    return f"known keys: {', '.join(names)}"
