"""Caps on what one mount may ask of the provider, set by the provider's flags.

A SecretProviderClass is written by a namespace user, and upstream sets no
limits: a history of 10^9 versions ends in MemoryError, a mount of many large
objects holds the node's memory. The defaults sit far above any real mount (a
Key Vault secret is at most 25 KB; upstream's driver takes 4 MiB per response
unless told otherwise) and are documented with the flags.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from kvmount.keyvault.errors import InvalidSpec
from kvmount.keyvault.types import ObjectSpec

DEFAULT_MAX_VERSION_HISTORY = 1000
DEFAULT_MAX_OBJECTS = 10_000
DEFAULT_MAX_MOUNT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_version_history: int = DEFAULT_MAX_VERSION_HISTORY  # --max-version-history
    # Every version of an object's history counts as one object.  --max-objects-per-mount
    max_objects: int = DEFAULT_MAX_OBJECTS
    max_mount_bytes: int = DEFAULT_MAX_MOUNT_BYTES  # --max-mount-bytes


def check_history(where: str, history: int, limits: Limits) -> None:
    if history > limits.max_version_history:
        raise InvalidSpec(
            f"{where}.objectVersionHistory",
            f"{history} is above the provider's limit of {limits.max_version_history} "
            "(--max-version-history); ask for fewer versions",
        )


def check_objects(objects: Sequence[ObjectSpec], limits: Limits) -> None:
    """Before any output path is listed: each history and the number of object versions."""
    for spec in objects:
        check_history(f"object {spec.name!r}", spec.version_history, limits)
    count = sum(max(1, spec.version_history) for spec in objects)
    if count > limits.max_objects:
        raise InvalidSpec(
            "objects",
            f"{count} objects (counting each history version) are above the provider's limit of "
            f"{limits.max_objects} (--max-objects-per-mount); split them over several classes",
        )


class ContentBudget:
    """The bytes a mount has received so far, checked as each object arrives, so a
    huge mount fails with a clear error before it holds the node's memory."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def take(self, spec: ObjectSpec, size: int) -> None:
        with self._lock:
            self._used += size
            used = self._used
        if used > self._limit:
            raise InvalidSpec(
                "objects",
                f"content reached {used} bytes at {spec.describe()}, above the provider's limit of "
                f"{self._limit} bytes per mount (--max-mount-bytes); split the objects over "
                "several classes",
            )
