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

from kvmount.keyvault.errors import AnswerTooLarge, InvalidSpec, TokenAnswerTooLarge
from kvmount.keyvault.types import ObjectSpec

DEFAULT_MAX_VERSION_HISTORY = 1000
DEFAULT_MAX_OBJECTS = 10_000
DEFAULT_MAX_MOUNT_BYTES = 64 * 1024 * 1024
# One Key Vault answer, decoded: a secret's value is at most 25 KB (about 34 KB as a
# certificate's base64 in JSON), a version-list page of 25 items a few KB; 1 MiB is 30
# times the largest, and still lets 64 answers fit in one mount's default budget.
DEFAULT_MAX_OBJECT_BYTES = 1024 * 1024
# One answer of an identity endpoint (Azure AD's token or authority metadata, IMDS, NMI,
# the token proxy), decoded: an app-only access token is 1 to 3 KB, about 10 KB with
# many group or role claims, the token answer around it a few hundred bytes more, and
# Azure AD's OpenID configuration and instance discovery about 2 KB each; 64 KiB is
# six times the largest, and keeps a node's concurrent token requests small.
DEFAULT_MAX_TOKEN_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Limits:
    max_version_history: int = DEFAULT_MAX_VERSION_HISTORY  # --max-version-history
    # Every version of an object's history counts as one object.  --max-objects-per-mount
    max_objects: int = DEFAULT_MAX_OBJECTS
    max_mount_bytes: int = DEFAULT_MAX_MOUNT_BYTES  # --max-mount-bytes
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES  # --max-object-bytes
    max_token_answer_bytes: int = DEFAULT_MAX_TOKEN_ANSWER_BYTES  # --max-token-answer-bytes


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
    huge mount fails with a clear error before it holds the node's memory. Answers
    still arriving are held against it too (``hold``), chunk by chunk."""

    def __init__(self, limit: int, object_limit: int = DEFAULT_MAX_OBJECT_BYTES) -> None:
        self._limit = limit
        self._object_limit = object_limit
        self._used = 0
        self._held = 0
        self._lock = threading.Lock()

    def cap(self) -> ReadCap:
        """The cap of one answer of this mount."""
        return ReadCap(self._object_limit, self)

    def hold(self, size: int) -> None:
        """``size`` more bytes of an answer arriving; refused past the limit."""
        with self._lock:
            total = self._used + self._held + size
            if total <= self._limit:
                self._held += size
                return
        raise AnswerTooLarge(
            f"the mount's answers would reach {total} bytes, above the provider's limit of {self._limit} "
            "bytes per mount (--max-mount-bytes); split the objects over several classes"
        )

    def release(self, size: int) -> None:
        """An answer that held ``size`` bytes has arrived (or failed)."""
        with self._lock:
            self._held -= size

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


class ReadCap:
    """The bytes one Key Vault answer may decode to, counted as they arrive: at most
    ``limit`` (--max-object-bytes), and within what the mount's ``budget`` has left.
    As a context manager, a read: what it holds of the budget is given back at its end."""

    def __init__(self, limit: int = DEFAULT_MAX_OBJECT_BYTES, budget: ContentBudget | None = None) -> None:
        self._limit = limit
        self._budget = budget
        self._size = 0

    def __enter__(self) -> ReadCap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reset()

    def add(self, size: int) -> None:
        if self._size + size > self._limit:
            raise AnswerTooLarge(
                f"Key Vault's answer is larger than the limit of {self._limit} bytes per "
                "object (--max-object-bytes); Key Vault's own objects are far smaller"
            )
        if self._budget is not None:
            self._budget.hold(size)
        self._size += size

    def reset(self) -> None:
        """Forget the answer counted so far (a retry starts again; a read has ended)."""
        if self._budget is not None:
            self._budget.release(self._size)
        self._size = 0


class TokenCap:
    """The bytes one identity endpoint's answer may decode to, counted as they arrive:
    at most ``limit`` (--max-token-answer-bytes); a ByteCap of http/token_transport.py."""

    def __init__(self, limit: int = DEFAULT_MAX_TOKEN_ANSWER_BYTES) -> None:
        self._limit = limit
        self._size = 0

    def add(self, size: int) -> None:
        self._size += size
        if self._size > self._limit:
            raise TokenAnswerTooLarge(
                f"the identity endpoint's answer is larger than the limit of {self._limit} "
                "bytes per token answer (--max-token-answer-bytes); a token answer is a few KB"
            )

    def reset(self) -> None:
        self._size = 0
