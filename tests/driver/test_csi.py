"""The CSI surface: csi-sanity (the conformance suite) and the Identity / Node basics."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from kvmount import __version__
from kvmount.proto import csi_pb2 as csi
from tests.driver.conftest import Driver

# Staging (not a capability of this driver) and the specs that need a volume from
# CreateVolume, which a node-only plugin has not got. The Controller specs run: they
# find no capability and skip themselves, except the argument checks, which must pass.
SANITY_SKIP = "|".join(
    [
        "should work",
        "NodeStageVolume",
        "should remove target path",
        "ValidateVolumeCapabilities should fail when no volume capabilities are provided",
        "ValidateVolumeCapabilities should return appropriate values",
    ]
)


def csi_sanity() -> str | None:
    cache = os.environ.get("KVMOUNT_CACHE", os.path.expanduser("~/.cache/kvmount"))
    for candidate in (os.path.join(cache, "bin", "csi-sanity"), os.path.expanduser("~/go/bin/csi-sanity")):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("csi-sanity")


def test_csi_sanity(driver: Driver, tmp_path: Path) -> None:
    binary = csi_sanity()
    if binary is None:
        message = "csi-sanity is not installed (scripts/peers/csi-sanity.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [
            binary,
            f"--csi.endpoint={driver.endpoint}",
            f"--csi.mountdir={tmp_path / 'mount'}",
            f"--csi.stagingdir={tmp_path / 'staging'}",
            f"--ginkgo.skip={SANITY_SKIP}",
            "--ginkgo.no-color",
            "--ginkgo.v",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # The Controller specs ran (not skipped by name) and the argument checks passed.
    for spec in ("ControllerGetCapabilities", "ValidateVolumeCapabilities should fail when no volume id"):
        assert spec in " ".join(result.stdout.split()), f"csi-sanity did not run {spec!r}"
    passed = re.search(r"(\d+) Passed \| (\d+) Failed", result.stdout)
    assert passed is not None, result.stdout[-2000:]
    assert int(passed.group(1)) >= 10 and passed.group(2) == "0"


def test_identity(driver: Driver) -> None:
    info = driver.identity.GetPluginInfo(csi.GetPluginInfoRequest(), timeout=10)
    assert (info.name, info.vendor_version) == ("secrets-store.csi.k8s.io", __version__)
    assert driver.identity.Probe(csi.ProbeRequest(), timeout=10).ready.value is True
    caps = driver.identity.GetPluginCapabilities(csi.GetPluginCapabilitiesRequest(), timeout=10)
    assert list(caps.capabilities) == [], "a node-only plugin advertises no controller service"


def test_node_info_and_capabilities(driver: Driver) -> None:
    assert driver.node.NodeGetInfo(csi.NodeGetInfoRequest(), timeout=10).node_id == "test-node"
    caps = driver.node.NodeGetCapabilities(csi.NodeGetCapabilitiesRequest(), timeout=10)
    kinds = {c.rpc.type for c in caps.capabilities}
    rpc = csi.NodeServiceCapability.RPC
    assert kinds == {rpc.STAGE_UNSTAGE_VOLUME, rpc.VOLUME_MOUNT_GROUP}


def test_unimplemented_and_argument_checks(driver: Driver) -> None:
    with pytest.raises(grpc.RpcError) as info:
        driver.node.NodeGetVolumeStats(
            csi.NodeGetVolumeStatsRequest(volume_id="v", volume_path="/x"), timeout=10
        )
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as info:
        driver.node.NodeUnpublishVolume(
            csi.NodeUnpublishVolumeRequest(target_path="relative/path", volume_id="v")
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "absolute" in str(info.value.details())
    block = csi.NodePublishVolumeRequest(
        volume_id="v",
        target_path="/tmp/kvmount-never-created",
        readonly=True,
        volume_capability=csi.VolumeCapability(block=csi.VolumeCapability.BlockVolume()),
        volume_context={"secretProviderClass": "x"},
    )
    with pytest.raises(grpc.RpcError) as info:
        driver.node.NodePublishVolume(block, timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "block" in str(info.value.details())
    assert not os.path.exists("/tmp/kvmount-never-created")


@pytest.mark.parametrize(
    ("drop", "phrase"),
    [
        ("volume_capability", "Volume capability missing in request"),
        ("volume_id", "Volume ID missing in request"),
        ("target_path", "Target path missing in request"),
        ("volume_context", "Volume attributes missing in request"),
    ],
)
def test_request_checks_start_with_upstreams_words(driver: Driver, drop: str, phrase: str) -> None:
    """Upstream's nodeserver words its argument checks so; kvmount's messages start the same."""
    request = csi.NodePublishVolumeRequest(
        volume_id="v",
        target_path="/tmp/kvmount-never-created",
        readonly=True,
        volume_capability=csi.VolumeCapability(mount=csi.VolumeCapability.MountVolume()),
        volume_context={"secretProviderClass": "x"},
    )
    request.ClearField(drop)
    with pytest.raises(grpc.RpcError) as info:
        driver.node.NodePublishVolume(request, timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert str(info.value.details()).startswith(phrase)
