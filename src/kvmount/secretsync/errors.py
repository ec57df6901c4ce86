"""Why a Secret cannot be synced; ``reason`` is a closed-set metric label. No message carries content."""

from __future__ import annotations

import re

_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class SyncError(Exception):
    """A Secret that cannot be synced; ``reason`` is a closed-set metric label.

    Reasons: InvalidSecretObject, ObjectNotMounted, InvalidCertificate,
    SecretNotManaged, SecretTypeMismatch, APIServerForbidden, APIServerUnavailable.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def invalid(message: str) -> SyncError:
    return SyncError("InvalidSecretObject", message)


def short(value: object) -> str:
    """A user-written name for a message, cut short (never a file's content)."""
    text = str(value)
    return repr(text if len(text) <= 64 else text[:61] + "...")


def is_subdomain(name: str) -> bool:
    return len(name) <= 253 and _SUBDOMAIN.fullmatch(name) is not None
