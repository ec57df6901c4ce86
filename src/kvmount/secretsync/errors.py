"""Why a Secret cannot be synced; ``reason`` is a closed-set metric label. No message carries content."""

from __future__ import annotations

from kvmount.kube.names import is_subdomain

__all__ = ["SyncError", "invalid", "is_subdomain", "short"]


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
