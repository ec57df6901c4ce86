"""Helpers for Prometheus metrics: label values come from closed sets only."""

from __future__ import annotations

from collections.abc import Iterable


def bounded(value: str, allowed: Iterable[str], other: str = "other") -> str:
    """A metric label value from a closed set, so no free text becomes a label."""
    return value if value in set(allowed) else other
