"""A volume's life beyond one call: driver restarts, re-publishing a live volume, provider health."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from kvmount.csi.provider_client import ProviderClients, ProviderError
from kvmount.driver.publish import Publisher
from kvmount.driver.request import PublishError, VolumeRequest
from kvmount.driver.volumes import VolumeRegistry
from kvmount.kube.file_store import FileStore
from kvmount.volume import mounts
from kvmount.volume.target import KubeletRoot
from tests.driver.conftest import PROVIDER, make_pod, start_driver, stop_driver
from tests.driver.provider_double import ProviderDouble
from tests.support import eventually


@pytest.mark.peer
def test_restart_keeps_serving_published_volumes(
    tmp_path: Path, provider_dir: Path, provider: ProviderDouble, kubelet_dir: Path
) -> None:
    base = tmp_path / "drv"
    base.mkdir()
    first = start_driver(base, provider_dir)
    try:
        first.write_class("kept", {"file.a": "1"})
        live, gone = make_pod(kubelet_dir, "live"), make_pod(kubelet_dir, "gone")
        for pod in (live, gone):
            first.node.NodePublishVolume(pod.publish_request("kept"), timeout=30)
    finally:
        stop_driver(first)
    # While the driver was down, one mount disappeared (as after a node reboot).
    mounts.unmount(str(gone.target))

    second = start_driver(base, provider_dir)
    try:
        eventually(
            lambda: "volumes=1" in second.log.read_text(), timeout=10, what="volumes=1 in the driver's log"
        )
        states = [json.loads(p.read_text()) for p in (base / "state" / "volumes").glob("*.json")]
        assert [s["target_path"] for s in states] == [str(live.target)]
        # The restarted driver still knows the volume: unpublish removes its pod status too.
        status = base / "state" / "podstatuses" / "default" / "live-default-kept.json"
        assert status.exists()
        second.node.NodeUnpublishVolume(live.unpublish_request(), timeout=30)
        assert not live.target.exists() and not status.exists()
        second.node.NodeUnpublishVolume(gone.unpublish_request(), timeout=30)
        assert not gone.target.exists()
    finally:
        stop_driver(second)


def test_republish_of_a_live_volume(tmp_path: Path, provider_dir: Path, provider: ProviderDouble) -> None:
    """What rotation builds on: publish(refresh=True) fetches again and swaps the content in place."""
    classes, state = tmp_path / "classes", tmp_path / "state"
    classes.mkdir()
    store = FileStore(str(classes), str(state))
    providers = ProviderClients([str(provider_dir)], 4 << 20)
    publisher = Publisher(
        store, providers, VolumeRegistry(str(state)), "node", 1 << 20, kubelet_root=KubeletRoot(str(tmp_path))
    )
    pod = make_pod(tmp_path / "kubelet")

    def write_class(value: str) -> None:
        (classes / "c.yaml").write_text(
            "kind: SecretProviderClass\nmetadata: {name: rot, namespace: default}\n"
            f"spec: {{provider: {PROVIDER}, parameters: {{file.a: '{value}'}}}}\n"
        )

    request = VolumeRequest(
        volume_id="v1",
        target_path=str(pod.target),
        volume_context=dict(pod.publish_request("rot").volume_context),
        secrets={},
    )
    try:
        write_class("one")
        publisher.publish(request)
        with open(pod.target / "a", "rb") as held:  # a reader holding the old version open
            write_class("three")
            publisher.publish(request)  # kubelet's repeated call: no re-fetch
            assert (pod.target / "a").read_text() == "one"
            publisher.publish(request, refresh=True)
            assert (pod.target / "a").read_text() == "three"
            assert held.read() == b"one"
        assert len(provider.requests) == 2
        assert [(o.id, o.version) for o in provider.requests[1].current_object_version] == [("a", "3")]
        status = json.loads((state / "podstatuses" / "default" / "web-default-rot.json").read_text())
        assert status["status"]["objects"] == [{"id": "a", "version": "5"}]

        # A failed refresh keeps the live content and the mount.
        (classes / "c.yaml").unlink()
        with pytest.raises(PublishError, match="not found"):
            publisher.publish(request, refresh=True)
        assert mounts.is_mounted(str(pod.target)) and (pod.target / "a").read_text() == "three"
    finally:
        publisher.unpublish("v1", str(pod.target))
        providers.close()
    assert not pod.target.exists()


def test_provider_health_check(provider_dir: Path, provider: ProviderDouble, tmp_path: Path) -> None:
    import socket

    dead = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(dead))
    s.close()
    clients = ProviderClients([str(provider_dir), str(tmp_path)], 4 << 20)
    try:
        assert clients.version(PROVIDER) == "provider-double 0"
        with pytest.raises(ProviderError, match="not answering"):
            clients.version("dead", timeout=5)
        assert clients.health_check() == {PROVIDER: True, "dead": False}
    finally:
        clients.close()


@pytest.mark.peer
def test_standalone_rotation(
    tmp_path: Path, provider_dir: Path, provider: ProviderDouble, kubelet_dir: Path
) -> None:
    """Without an API the reconciler re-sends the last publish's secrets, kept in memory only."""
    base = tmp_path / "drv"
    base.mkdir()
    driver = start_driver(base, provider_dir, "--enable-secret-rotation", "--rotation-poll-interval=1s")
    try:
        driver.write_class("rot", {"file.a": "one"})
        pod = make_pod(kubelet_dir)
        driver.node.NodePublishVolume(pod.publish_request("rot", secrets={"k": "node secret"}), timeout=30)
        driver.write_class("rot", {"file.a": "two"})
        eventually(lambda: (pod.target / "a").read_text() == "two", timeout=5, what="rotated")
        assert json.loads(provider.requests[-1].secrets) == {"k": "node secret"}
        assert "node secret" not in "".join(p.read_text() for p in (base / "state").rglob("*.json"))
        driver.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=30)
    finally:
        stop_driver(driver)


def test_kubelet_republish_fetches_once_rotation_is_due(
    tmp_path: Path, provider_dir: Path, provider: ProviderDouble
) -> None:
    """requiresRepublish: kubelet's periodic NodePublishVolume of a live volume fetches only when
    the rotation interval has passed since the last fetch."""
    classes, state = tmp_path / "classes", tmp_path / "state"
    classes.mkdir()
    (classes / "c.yaml").write_text(
        "kind: SecretProviderClass\nmetadata: {name: rp, namespace: default}\n"
        f"spec: {{provider: {PROVIDER}, parameters: {{file.a: one}}}}\n"
    )
    providers = ProviderClients([str(provider_dir)], 4 << 20)
    publisher = Publisher(
        FileStore(str(classes), str(state)),
        providers,
        VolumeRegistry(str(state)),
        "node",
        1 << 20,
        1.0,
        kubelet_root=KubeletRoot(str(tmp_path)),
    )
    pod = make_pod(tmp_path / "kubelet")
    context = dict(pod.publish_request("rp").volume_context)
    request = VolumeRequest(volume_id="v1", target_path=str(pod.target), volume_context=context, secrets={})
    try:
        assert publisher.publish(request).changed
        assert not publisher.publish(request).fetched  # not due yet
        assert len(provider.requests) == 1
        time.sleep(1.1)
        outcome = publisher.publish(request)
        assert outcome.fetched and not outcome.changed  # same content: nothing rewritten
        assert [(o.id, o.version) for o in provider.requests[1].current_object_version] == [("a", "3")]
    finally:
        publisher.unpublish("v1", str(pod.target))
        providers.close()
