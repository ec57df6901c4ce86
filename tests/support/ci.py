"""Under CI every peer is installed, so a missing one fails the run instead of skipping."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """Whether the environment says CI (``CI`` set to anything but empty, 0, false, no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def peer_missing(reason: str) -> NoReturn:
    """Skip the calling test for ``reason`` (a peer not installed, with how to install it);
    under CI, fail it."""
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)
