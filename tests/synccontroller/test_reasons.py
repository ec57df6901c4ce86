"""A Secret that could not be written gives its SecretSync one of upstream's condition reasons."""

from __future__ import annotations

import pytest

from kvmount.secretsync.errors import SyncReason
from kvmount.synccontroller.api import ConditionReason, failure_reason

EXPECTED = {
    SyncReason.OBJECT_NOT_MOUNTED: "RemoteSecretStoreFetchFailed",
    SyncReason.INVALID_CERTIFICATE: "RemoteSecretStoreFetchFailed",
    SyncReason.API_SERVER_UNAVAILABLE: "ControllerSyncError",
    SyncReason.API_SERVER_FORBIDDEN: "ControllerPatchError",
    SyncReason.INVALID_SECRET_OBJECT: "ControllerPatchError",
    SyncReason.SECRET_NOT_MANAGED: "ControllerPatchError",
    SyncReason.SECRET_TYPE_MISMATCH: "ControllerPatchError",
}


def test_every_sync_reason_has_a_condition_reason() -> None:
    assert set(EXPECTED) == set(SyncReason)


@pytest.mark.parametrize(("reason", "condition"), EXPECTED.items())
def test_a_sync_reason_gives_upstreams_condition_reason(reason: SyncReason, condition: str) -> None:
    assert failure_reason(reason) is ConditionReason(condition)
