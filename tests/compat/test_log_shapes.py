"""JSON log lines in the shapes of upstream's binaries, which log pipelines and alert rules parse.

Each pair runs the same scenario (start, one failing request, stop) with --log-format-json: kvmount's
provider beside upstream's Azure provider (component-base's klog JSON: the real output), kvmount's
driver and sync controller beside upstream's driver (mlog's JSON, written by our stand-in for
monis.app/mlog, tests/peers/mlog, since the module proxy does not serve mlog). One parser reads
both sides; per level, kvmount's lines must carry the keys every upstream line of that level
carries, with the same JSON types, and no key of the other shape.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from kvmount.csi import kubelet, standin_kubelet
from kvmount.proto import csi_pb2_grpc as csi_grpc
from kvmount.proto import v1alpha1_pb2 as pb
from tests.driver.conftest import start_driver, stop_driver
from tests.peers.keyvault_double import KeyVaultDouble
from tests.peers.kube import KubeAPIServer
from tests.peers.upstream import UpstreamDriver, UpstreamProvider
from tests.provider.conftest import start_provider, stop_provider
from tests.support import free_port, start_daemon, until_ready

# The keys of each shape's frame; everything else on a line is a logged key/value pair.
FRAME = {
    "driver": {"level", "timestamp", "caller", "message", "logger", "error", "warning", "stacktrace"},
    "klog": {"ts", "caller", "msg", "v", "err", "logger"},
}
OTHER = {"driver": FRAME["klog"] - FRAME["driver"], "klog": FRAME["driver"] - FRAME["klog"]}
# Keys a line has only sometimes: a named logger, an error, mlog's warning flag.
OPTIONAL = {"driver": {"logger", "error", "warning", "stacktrace"}, "klog": {"logger", "err"}}


def _kind(value: object) -> str:
    return (
        "number" if isinstance(value, int | float) and not isinstance(value, bool) else type(value).__name__
    )


def _level(shape: str, line: dict[str, object]) -> str:
    if shape == "driver":
        return str(line["level"])
    return "info" if "v" in line else "error"


def parse(shape: str, text: str) -> dict[str, list[dict[str, str]]]:
    """The JSON lines of ``text`` by level, each as its frame keys -> JSON type; other lines
    (Go's own messages before logging is set up) are left out."""
    levels: dict[str, list[dict[str, str]]] = {}
    for raw in text.splitlines():
        if not raw.startswith("{"):
            continue
        line = json.loads(raw)
        frame = {key: _kind(value) for key, value in line.items() if key in FRAME[shape] | OTHER[shape]}
        levels.setdefault(_level(shape, line), []).append(frame)
    return levels


def assert_same_shape(
    shape: str, upstream_text: str, ours_text: str, levels: tuple[str, ...] = ("info", "error")
) -> None:
    upstream, ours = parse(shape, upstream_text), parse(shape, ours_text)
    assert set(levels) <= set(upstream), f"the scenario gave upstream no {levels} lines: {upstream}"
    for level in levels:
        theirs = upstream[level]
        assert level in ours, f"kvmount wrote no {level} line: {ours_text[-2000:]}"
        required = set.intersection(*(set(line) for line in theirs))
        types = {key: kind for line in theirs for key, kind in line.items()}
        for line in ours[level]:
            assert required <= set(line), f"{level}: kvmount lacks {required - set(line)} in {line}"
            assert not set(line) & OTHER[shape], f"{level}: keys of the other shape in {line}"
            assert set(line) <= required | OPTIONAL[shape], f"{level}: keys upstream never writes in {line}"
            for key, kind in line.items():
                if key in types:
                    assert kind == types[key], f"{level}: {key} is {kind}, upstream's is {types[key]}"


def bad_mount(stub: object) -> None:
    """A Mount whose attributes are not JSON: an error line on both sides."""
    request = pb.MountRequest(attributes="not json", secrets="{}", target_path="/tmp/x", permission="420")
    with pytest.raises(grpc.RpcError):
        stub.Mount(request, timeout=30)  # type: ignore[attr-defined]


def test_provider_lines_have_upstream_providers_shape(
    keyvault: KeyVaultDouble,
    upstream_provider: Callable[..., UpstreamProvider],
    tmp_path: Path,
) -> None:
    theirs = upstream_provider("--log-format-json")
    bad_mount(theirs.stub)
    ours = start_provider(tmp_path, keyvault, "--log-format-json")
    try:
        bad_mount(ours.stub)
    finally:
        stop_provider(ours)
    assert_same_shape("klog", theirs.log.read_text(), ours.log.read_text())


# A class naming a provider that no node serves: a publish of it fails in the provider call,
# which upstream's driver logs at error level (since v1.6.1 a missing class logs nothing there).
NO_PROVIDER_CLASS = {
    "apiVersion": "secrets-store.csi.x-k8s.io/v1",
    "kind": "SecretProviderClass",
    "metadata": {"name": "no-such-provider", "namespace": "default"},
    "spec": {"provider": "absent", "parameters": {"objects": "array: []"}},
}


def bad_publish(channel: grpc.Channel, kubelet_dir: Path) -> None:
    """A publish whose provider is not there: an error line on both sides."""
    uid = os.urandom(8).hex()
    request = standin_kubelet.publish_request(
        target=kubelet.target_path(str(kubelet_dir), uid, "secrets-store-inline"),
        class_name="no-such-provider",
        pod_name="web",
        pod_namespace="default",
        pod_uid=uid,
    )
    with pytest.raises(grpc.RpcError):
        csi_grpc.NodeStub(channel).NodePublishVolume(request, timeout=30)


def test_driver_lines_have_upstream_drivers_shape(
    upstream_driver: Callable[..., UpstreamDriver], secrets_store_api: KubeAPIServer, tmp_path: Path
) -> None:
    secrets_store_api.apply(NO_PROVIDER_CLASS)
    theirs = upstream_driver(tmp_path / "no-providers", "--log-format-json")
    bad_publish(theirs.channel, tmp_path / "kubelet")
    theirs.stop()
    (tmp_path / "ours" / "classes").mkdir(parents=True)
    (tmp_path / "ours" / "classes" / "class.yaml").write_text(json.dumps(NO_PROVIDER_CLASS))
    ours = start_driver(tmp_path / "ours", tmp_path / "no-providers", "--log-format-json")
    try:
        bad_publish(ours.channel, tmp_path / "kubelet")
    finally:
        stop_driver(ours)
    assert_same_shape("driver", theirs.log.read_text(), ours.log.read_text())


def test_sync_controller_lines_have_upstream_drivers_shape(
    upstream_driver: Callable[..., UpstreamDriver], secrets_store_api: KubeAPIServer, tmp_path: Path
) -> None:
    theirs = upstream_driver(tmp_path / "no-providers", "--log-format-json")
    theirs.stop()
    log = tmp_path / "sync.log"
    argv = [sys.executable, "-m", "kvmount.cli", "sync-controller",
            f"--kubeconfig={secrets_store_api.kubeconfig}", "--log-format-json",
            f"--provider-volume={tmp_path}", f"--metrics-bind-address=127.0.0.1:{free_port()}",
            f"--health-probe-bind-address=127.0.0.1:{free_port()}"]  # fmt: skip
    controller = start_daemon("sync-controller", argv, log)
    try:
        until_ready(
            lambda: log.read_text().count("\n") >= 1,
            timeout=30,
            what="the sync controller logs",
            daemons=[controller],
        )
    finally:
        controller.stop(timeout=30)
    assert_same_shape("driver", theirs.log.read_text(), log.read_text(), levels=("info",))
