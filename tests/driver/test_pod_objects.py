"""Pods as the API serves them: a field left out is read as empty, never as an error."""

from __future__ import annotations

import pytest

from kvmount.driver.rotation import pod_volume
from kvmount.kube.objects import Pod, Volume

TARGET = "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~csi/secrets/mount"


@pytest.mark.parametrize(
    "pod",
    [
        {},
        {"metadata": {"name": "web"}},
        {"spec": {}},
        {"spec": {"volumes": []}},
        {"spec": {"volumes": [{"name": "secrets"}]}},  # same name, not a csi volume
        {"spec": {"volumes": [{"name": "other", "csi": {"driver": "secrets-store.csi.k8s.io"}}]}},
    ],
)
def test_a_pod_without_the_csi_volume_has_none(pod: Pod) -> None:
    assert pod_volume(pod, TARGET) is None


def test_the_csi_volume_is_found_by_the_target_paths_volume_name() -> None:
    volume: Volume = {"name": "secrets", "csi": {"driver": "secrets-store.csi.k8s.io"}}
    pod: Pod = {"spec": {"volumes": [{"name": "cache"}, volume]}}
    assert pod_volume(pod, TARGET + "/") == volume
