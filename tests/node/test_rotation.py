"""Rotation reaching a running container, and a driver restart under running pods."""

from __future__ import annotations

import signal

import pytest

from kvmount.volume import mounts
from tests.node.conftest import MOUNT, VAULT, Cluster, host_processes_only
from tests.node.host import mounts_under
from tests.node.plugins import ROTATION, Plugins
from tests.support import eventually

# The container reads its file once a second: the test sees what the app would.
WATCH = f'while true; do echo "value=$(cat {MOUNT}/value)"; sleep 1; done'


def start_watching_pod(cluster: Cluster, name: str, first: str) -> str:
    run = cluster.name("rot")
    cluster.kv.put_secret(VAULT, run, first)
    cluster.secret_provider_class(name, [{"objectName": run, "objectType": "secret", "objectAlias": "value"}])
    cluster.pod(name, WATCH, cluster.csi_volume(name, cluster.service_principal()))
    cluster.running(name)
    cluster.log_shows(name, f"value={first}")
    return run


def test_new_version_reaches_the_running_container(cluster: Cluster) -> None:
    run = start_watching_pod(cluster, "web", "first")
    cluster.kv.put_secret(VAULT, run, "second")
    # One poll interval, plus the container's one-second read and the log round trip.
    cluster.log_shows("web", "value=second", timeout=ROTATION + 10)
    assert cluster.restarts("web") == 0


@host_processes_only
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_driver_restart_keeps_files_and_resumes_rotation(cluster: Cluster, stop: signal.Signals) -> None:
    plugins = cluster.plugins
    assert isinstance(plugins, Plugins)
    run = start_watching_pod(cluster, "web", "before")
    pod = cluster.read_pod("web")
    target = cluster.volume_dir(pod) / "mount"
    mounted_before = mounts_under(cluster.volume_dir(pod))

    plugins.stop_driver(stop)  # killed: no shutdown of its own, what it knows is on disk and in the API
    # The volume outlives the driver: the container keeps reading its file.
    reads = cluster.logs("web").count("value=before")
    eventually(
        lambda: cluster.logs("web").count("value=before") >= reads + 2,
        timeout=30,
        what="reads without a driver",
    )
    assert mounts.is_mounted(str(target))

    plugins.start_driver()
    cluster.kv.put_secret(VAULT, run, "after")
    cluster.log_shows("web", "value=after", timeout=ROTATION + 20)
    assert mounts_under(cluster.volume_dir(pod)) == mounted_before  # nothing mounted twice
    assert cluster.restarts("web") == 0


def test_a_selection_follows_retagging_and_disabling_in_the_running_container(cluster: Cluster) -> None:
    tag = cluster.name("sel")
    a, b, c = (f"{tag}-{x}" for x in "abc")
    cluster.kv.put_secret(VAULT, a, "A", tags={"app": tag})
    cluster.kv.put_secret(VAULT, b, "B", tags={"app": tag})
    cluster.kv.put_secret(VAULT, c, "C", tags={"app": "later"})
    selection = {"objectTags": {"app": tag}, "objectType": "secret", "objectAlias": "sel"}
    cluster.secret_provider_class("sel", [selection])
    listing = f'while true; do echo "files=$(ls {MOUNT}/sel | tr "\\n" ,)"; sleep 1; done'
    cluster.pod("sel", listing, cluster.csi_volume("sel", cluster.service_principal()))
    cluster.running("sel")
    cluster.log_shows("sel", f"files={a},{b},")

    def current(name: str) -> str:
        return str(cluster.kv.vault_call(VAULT, "GET", f"/secrets/{name}")["id"].rsplit("/", 1)[1])

    cluster.kv.update(VAULT, "secrets", c, current(c), {"tags": {"app": tag}})
    cluster.kv.update(VAULT, "secrets", a, current(a), {"attributes": {"enabled": False}})
    cluster.log_shows("sel", f"files={b},{c},", timeout=ROTATION + 10)
    assert cluster.restarts("sel") == 0
