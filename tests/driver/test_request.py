"""A NodePublishVolume's fields as the driver checks them."""

from __future__ import annotations

import grpc
import pytest

from kvmount.driver.request import MAX_GID, PublishError, parse_gid


@pytest.mark.parametrize("group", ["²", "١٢", "12a", "-1", " 5", "9" * 5000, str(MAX_GID + 1), "4294967295"])
def test_a_group_that_is_not_a_settable_gid_is_invalid_argument(group: str) -> None:
    with pytest.raises(PublishError) as caught:
        parse_gid(group)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "volume_mount_group" in str(caught.value) and "fsGroup" in str(caught.value)


def test_numeric_groups_are_read() -> None:
    assert parse_gid("") is None
    assert parse_gid("0") == 0
    assert parse_gid("2345") == 2345
    assert parse_gid(str(MAX_GID)) == MAX_GID
