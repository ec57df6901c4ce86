"""Volume ids as Key Vault secret names, and passphrases as Ceph-CSI makes them."""

from __future__ import annotations

import base64
import re

import pytest

from kvmount.keyvault import InvalidSpec
from kvmount.kms.store import check_volume_id, new_passphrase

CEPH_VOLUME_ID = "0001-0009-rook-ceph-0000000000000002-24862838-0c6a-11ee-a5e5-0a580a810212"


@pytest.mark.parametrize("volume_id", [CEPH_VOLUME_ID, "a", "A-1", "x" * 127])
def test_valid_volume_ids(volume_id: str) -> None:
    assert check_volume_id(volume_id) == volume_id


@pytest.mark.parametrize("volume_id", ["", "x" * 128, "csi_vol", "a.b", "a/b", "vol 1", "é", "a\n"])
def test_invalid_volume_ids(volume_id: str) -> None:
    with pytest.raises(
        InvalidSpec, match=r"--volume-id: .* must be 1-127 characters of 0-9, a-z, A-Z and '-'"
    ):
        check_volume_id(volume_id)


@pytest.mark.parametrize(("kind", "size", "length"), [("luks", 20, 28), ("fscrypt", 64, 88)])
def test_passphrases(kind: str, size: int, length: int) -> None:
    made = {new_passphrase(kind) for _ in range(50)}
    assert len(made) == 50
    for passphrase in made:
        # URL-safe alphabet with '=' padding, as Go's base64.URLEncoding writes it.
        assert len(passphrase) == length
        assert re.fullmatch(r"[A-Za-z0-9_-]+=*", passphrase)
        assert len(base64.urlsafe_b64decode(passphrase)) == size
