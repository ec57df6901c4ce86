"""Why a Secret cannot be synced; ``reason`` is a closed-set metric label. No message carries content."""

from __future__ import annotations

from enum import StrEnum

from kvmount.kube.errors import StoreReason
from kvmount.kube.names import is_subdomain

__all__ = ["SyncError", "SyncReason", "invalid", "is_subdomain", "short"]


class SyncReason(StrEnum):
    """Why a Secret was not synced: the driver's metric label; the sync controller's conditions map it."""

    INVALID_SECRET_OBJECT = "InvalidSecretObject"
    OBJECT_NOT_MOUNTED = "ObjectNotMounted"
    INVALID_CERTIFICATE = "InvalidCertificate"
    SECRET_NOT_MANAGED = "SecretNotManaged"
    SECRET_TYPE_MISMATCH = "SecretTypeMismatch"
    # The API server's failures carry the store's labels.
    API_SERVER_FORBIDDEN = StoreReason.FORBIDDEN.value
    API_SERVER_UNAVAILABLE = StoreReason.UNAVAILABLE.value


class SyncError(Exception):
    """A Secret that cannot be synced."""

    def __init__(self, reason: SyncReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def invalid(message: str) -> SyncError:
    return SyncError(SyncReason.INVALID_SECRET_OBJECT, message)


def short(value: object) -> str:
    """A user-written name for a message, cut short (never a file's content)."""
    text = str(value)
    return repr(text if len(text) <= 64 else text[:61] + "...")
