"""The driver's Prometheus metrics, named as upstream's, with bounded labels.

The provider label is a provider whose socket exists on this node (or
"unknown"), so a class naming arbitrary providers cannot grow the label set.
"""

from __future__ import annotations

import platform

from prometheus_client import Counter, Histogram

OS_TYPE = platform.system().lower()
ERROR_TYPES = frozenset(
    {
        "InvalidRequest",
        "SecretProviderClassNotFound",
        "InvalidSecretProviderClass",
        "APIServerUnavailable",
        "APIServerForbidden",
        "InvalidProvider",
        "ProviderNotFound",
        "ProviderUnavailable",
        "ProviderTimeout",
        "ProviderResponseTooLarge",
        "ProviderError",
        "InvalidProviderFiles",
        "FailedToMount",
        "FileWriteError",
        "Internal",
    }
)

NODE_PUBLISH = Counter("total_node_publish", "Successful volume publishes", ["os_type", "provider"])
NODE_PUBLISH_ERROR = Counter(
    "total_node_publish_error", "Failed volume publishes", ["os_type", "provider", "error_type"]
)
NODE_UNPUBLISH = Counter("total_node_unpublish", "Successful volume unpublishes", ["os_type"])
NODE_UNPUBLISH_ERROR = Counter("total_node_unpublish_error", "Failed volume unpublishes", ["os_type"])
CSI_OPERATION = Histogram(
    "csi_operations_seconds", "Seconds one CSI call took, by method and status code", ["method", "grpc_code"]
)


def publish_done(provider: str, error_type: str | None) -> None:
    if error_type is None:
        NODE_PUBLISH.labels(OS_TYPE, provider).inc()
    else:
        reason = error_type if error_type in ERROR_TYPES else "Internal"
        NODE_PUBLISH_ERROR.labels(OS_TYPE, provider, reason).inc()


def unpublish_done(ok: bool) -> None:
    (NODE_UNPUBLISH if ok else NODE_UNPUBLISH_ERROR).labels(OS_TYPE).inc()
