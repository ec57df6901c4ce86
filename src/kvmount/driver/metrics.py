"""The driver's Prometheus metrics, named as upstream's, with bounded labels.

The provider label is a provider whose socket exists on this node (or "",
as upstream, before the class names one), so a class naming arbitrary providers
cannot grow the label set; error_type is a reason from a closed set (the
StrEnums of request.Reason and SyncReason), never error text.
"""

from __future__ import annotations

import platform

from prometheus_client import Counter, Histogram

from kvmount.driver.request import Reason
from kvmount.secretsync.errors import SyncReason

OS_TYPE = platform.system().lower()

NODE_PUBLISH = Counter("node_publish", "Successful volume publishes", ["os_type", "provider"])
NODE_PUBLISH_ERROR = Counter(
    "node_publish_error", "Failed volume publishes", ["os_type", "provider", "error_type"]
)
NODE_UNPUBLISH = Counter("node_unpublish", "Successful volume unpublishes", ["os_type"])
NODE_UNPUBLISH_ERROR = Counter("node_unpublish_error", "Failed volume unpublishes", ["os_type"])
SYNC_SECRET = Counter(
    "sync_k8s_secret", "Kubernetes Secret syncs, by outcome", ["os_type", "provider", "error_type"]
)
SYNC_SECRET_DURATION = Histogram(
    "k8s_secret_duration_sec", "Seconds one Kubernetes Secret sync took", ["os_type", "provider"]
)
ROTATION = Counter(
    "rotation_reconcile", "Volume rotations, by whether content changed", ["os_type", "provider", "rotated"]
)
ROTATION_ERROR = Counter(
    "rotation_reconcile_error", "Failed volume rotations", ["os_type", "provider", "error_type"]
)
ROTATION_DURATION = Histogram(
    "rotation_reconcile_duration_sec", "Seconds one volume rotation took", ["os_type", "provider"]
)
CSI_OPERATION = Histogram(
    "csi_operations_seconds", "Seconds one CSI call took, by method and status code", ["method", "grpc_code"]
)


def publish_done(provider: str, reason: Reason | None) -> None:
    if reason is None:
        NODE_PUBLISH.labels(OS_TYPE, provider).inc()
    else:
        NODE_PUBLISH_ERROR.labels(OS_TYPE, provider, reason).inc()


def unpublish_done(ok: bool) -> None:
    (NODE_UNPUBLISH if ok else NODE_UNPUBLISH_ERROR).labels(OS_TYPE).inc()


def sync_done(provider: str, seconds: float, reason: SyncReason | None) -> None:
    SYNC_SECRET.labels(OS_TYPE, provider, "" if reason is None else reason).inc()
    SYNC_SECRET_DURATION.labels(OS_TYPE, provider).observe(seconds)


def rotation_done(provider: str, seconds: float, rotated: bool | None, reason: Reason | None = None) -> None:
    """One volume's rotation: ``rotated`` says whether content changed; ``reason`` names a failure."""
    ROTATION_DURATION.labels(OS_TYPE, provider).observe(seconds)
    if reason is not None:
        ROTATION_ERROR.labels(OS_TYPE, provider, reason).inc()
    else:
        ROTATION.labels(OS_TYPE, provider, "true" if rotated else "false").inc()
