"""The reasons of the events the driver records on pods and workloads: a closed set alerts match on."""

from __future__ import annotations

from enum import StrEnum


class EventReason(StrEnum):
    FAILED_TO_MOUNT = "FailedToMount"
    # Upstream's reason for a Secret it could not sync: alerts written for it keep working.
    FAILED_TO_CREATE_SECRET = "FailedToCreateSecret"
    MOUNT_ROTATION_FAILED = "MountRotationFailed"
    MOUNT_ROTATION_COMPLETE = "MountRotationComplete"
    RESTART_SKIPPED = "RestartSkipped"
    RESTART_FORBIDDEN = "RestartForbidden"
    ROTATION_ROLLOUT = "RotationRollout"
    # The provider answered with content kept from before a Key Vault outage (--serve-stale-on-error).
    STALE_CONTENT = "StaleContentServed"
