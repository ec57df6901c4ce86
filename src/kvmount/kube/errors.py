"""Why a class or status could not be read or written; ``reason`` is a closed-set metric label."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class StoreReason(StrEnum):
    """Why the store failed: the driver's metric label, and the key of its table of gRPC codes."""

    CLASS_NOT_FOUND = "SecretProviderClassNotFound"
    INVALID_CLASS = "InvalidSecretProviderClass"
    # A name the API server would refuse; the driver's request checks share this label.
    INVALID_REQUEST = "InvalidRequest"
    UNAVAILABLE = "APIServerUnavailable"
    FORBIDDEN = "APIServerForbidden"
    NODE_PUBLISH_SECRET_NOT_FOUND = "NodePublishSecretNotFound"
    SERVICE_ACCOUNT_NOT_FOUND = "ServiceAccountNotFound"


class StoreError(Exception):
    """A class or status that cannot be read or written."""

    def __init__(self, reason: StoreReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ClassNotFound(StoreError):
    def __init__(self, namespace: str, name: str, where: str) -> None:
        super().__init__(
            StoreReason.CLASS_NOT_FOUND,
            f"SecretProviderClass {namespace}/{name} not found {where}: "
            f"create it in the pod's namespace ({namespace})",
        )


class InvalidClass(StoreError):
    def __init__(self, what: str, message: str) -> None:
        super().__init__(StoreReason.INVALID_CLASS, f"{what}: {message}")


class InvalidName(StoreError):
    """A name that the API server would refuse, refused here before it becomes a path."""

    def __init__(self, message: str) -> None:
        super().__init__(StoreReason.INVALID_REQUEST, message)


class StoreUnavailable(StoreError):
    def __init__(self, message: str) -> None:
        super().__init__(StoreReason.UNAVAILABLE, message)


def api_error(what: str, verb: str, err: Any, who: str = "the driver's service account") -> StoreError:
    """A StoreError for the API server's answer ``err`` to ``verb`` on ``what``, asked as ``who``."""
    if err.status in (401, 403):
        return StoreError(
            StoreReason.FORBIDDEN,
            f"{what}: {who} may not {verb} it (HTTP {err.status}); check its RBAC",
        )
    return StoreUnavailable(f"{what}: {verb} failed with HTTP {err.status} {err.reason}")
