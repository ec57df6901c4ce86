"""The SecretProviderClassPodStatus manifest lists objects as upstream's driver does."""

from __future__ import annotations

from kvmount.kube.podstatus import PodStatus


def test_objects_are_listed_once_per_id_sorted_by_id() -> None:
    # One secret mounted under two aliases comes back from the provider twice.
    status = PodStatus(
        "web", "shop", "uid", "app", "/target", "node",
        [("secret/db", "v1"), ("key/sign", "k1"), ("secret/db", "v1"), ("cert/tls", "c1")],
    )  # fmt: skip
    assert status.manifest()["status"]["objects"] == [
        {"id": "cert/tls", "version": "c1"},
        {"id": "key/sign", "version": "k1"},
        {"id": "secret/db", "version": "v1"},
    ]
