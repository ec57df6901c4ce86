"""Waiting on state: poll with a deadline, never sleep as a wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Polls start fast (unit tests wait milliseconds) and back off to this, so long waits on
# daemons do not spin.
_FIRST_POLL = 0.005
_LAST_POLL = 0.25


class NotInTime(AssertionError):
    """``eventually`` ran out of time; the message names what was awaited."""


def eventually(check: Callable[[], T | None], *, timeout: float, what: str, poll: float | None = None) -> T:
    """The first truthy result of ``check``, polled until ``timeout`` seconds have passed;
    an exception of ``check`` propagates at once. ``poll``: a fixed pause between checks
    (a benchmark timing a start), instead of the back-off."""
    deadline = time.monotonic() + timeout
    pause = poll or _FIRST_POLL
    while True:
        result = check()
        if result:
            return result
        left = deadline - time.monotonic()
        if left <= 0:
            raise NotInTime(f"not within {timeout}s: {what}")
        time.sleep(min(pause, left))
        if poll is None:
            pause = min(pause * 2, _LAST_POLL)
