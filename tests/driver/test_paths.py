"""Paths a publish or unpublish must never leave: target links, unclean spellings, names as paths."""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import uuid
from pathlib import Path

import grpc
import pytest
import yaml

from kvmount.csi import standin_kubelet
from kvmount.driver import command
from kvmount.proto import csi_pb2 as csi
from tests.driver.conftest import Driver, make_pod
from tests.driver.provider_double import ProviderDouble
from tests.driver.test_publish import assert_clean, publish_fails


def mounts_at(path: Path) -> int:
    """How many mounts are stacked on ``path`` itself."""
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        return sum(1 for line in fh if line.split(" ")[4] == str(path))


def mounts_below(path: Path) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        points = [line.split(" ")[4] for line in fh]
    return [p for p in points if p == str(path) or p.startswith(f"{path}/")]


def unpublish_fails(driver: Driver, request: csi.NodeUnpublishVolumeRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        driver.node.NodeUnpublishVolume(request, timeout=30)
    return info.value


def test_a_target_that_is_a_symlink_is_refused(
    driver: Driver, provider: ProviderDouble, kubelet_dir: Path
) -> None:
    driver.write_class("linked", {"file.a": "1"})
    pod = make_pod(kubelet_dir)
    elsewhere = kubelet_dir / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("not the driver's")
    pod.target.symlink_to(elsewhere)

    err = publish_fails(driver, pod.publish_request("linked"))
    assert err.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "'mount' is a symbolic link" in err.details and str(pod.target) in err.details
    assert mounts_below(kubelet_dir) == [], "nothing is mounted at the link or its destination"
    assert provider.requests == []

    # Unpublish neither follows the link nor deletes it or what it points to.
    failure = unpublish_fails(driver, pod.unpublish_request())
    assert failure.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert pod.target.is_symlink() and (elsewhere / "keep").read_text() == "not the driver's"


def test_a_target_with_a_symlinked_parent_is_refused(
    driver: Driver, provider: ProviderDouble, kubelet_dir: Path
) -> None:
    driver.write_class("parent", {"file.a": "1"})
    pod = make_pod(kubelet_dir)
    volumes = pod.target.parent.parent  # .../volumes/kubernetes.io~csi
    real = kubelet_dir / "real-volumes"
    volumes.rename(real)
    volumes.symlink_to(real)

    err = publish_fails(driver, pod.publish_request("parent"))
    assert err.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "'kubernetes.io~csi' is a symbolic link" in err.details
    assert mounts_below(kubelet_dir) == []
    assert not (real / "secrets-store-inline" / "mount").exists(), "nothing created through the link"
    assert provider.requests == []


def request_for(target: str, class_name: str) -> csi.NodePublishVolumeRequest:
    return standin_kubelet.publish_request(
        target=target,
        class_name=class_name,
        pod_name="web",
        pod_namespace="default",
        pod_uid=str(uuid.uuid4()),
    )


def test_a_target_outside_the_kubelet_root_is_refused(driver: Driver, provider: ProviderDouble) -> None:
    driver.write_class("outside", {"file.a": "1"})
    outside = f"/run/kvmount-outside-{uuid.uuid4().hex}"
    err = publish_fails(driver, request_for(outside, "outside"))
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "not below the kubelet root" in err.details and "--kubelet-root-dir" in err.details
    assert not os.path.lexists(outside)
    err = publish_fails(driver, request_for(f"{driver.state_dir}/../../x", "outside"))
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT and "'..'" in err.details
    assert provider.requests == []


def test_unpublish_never_deletes_files_it_did_not_mount(
    driver: Driver, provider: ProviderDouble, kubelet_dir: Path
) -> None:
    pod = make_pod(kubelet_dir)
    (pod.target / "data").mkdir(parents=True)
    (pod.target / "data" / "file").write_text("someone else's")

    failure = unpublish_fails(driver, pod.unpublish_request())
    assert failure.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "not mounted and is not empty" in str(failure.details())
    assert (pod.target / "data" / "file").read_text() == "someone else's"

    # An empty directory is removed, as upstream does.
    (pod.target / "data" / "file").unlink()
    (pod.target / "data").rmdir()
    driver.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=30)
    assert_clean(pod.target)


def test_spellings_of_one_target_share_one_tmpfs(
    driver: Driver, provider: ProviderDouble, kubelet_dir: Path
) -> None:
    provider.behaviour.delay = 0.3  # so that the publishes overlap
    driver.write_class("spelt", {"file.a": "1"})
    pod = make_pod(kubelet_dir)
    plain = str(pod.target)
    spellings = [
        plain,
        plain.replace("/volumes/", "//volumes/"),
        plain.replace("/pods/", "/./pods/"),
        plain + "/",
    ]

    def publish(target: str) -> None:
        request = pod.publish_request("spelt")
        request.target_path = target
        driver.node.NodePublishVolume(request, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(len(spellings)) as pool:
        list(pool.map(publish, spellings))
    assert mounts_at(pod.target) == 1, "one tmpfs, not one per spelling"
    assert len(provider.requests) == 1
    assert (pod.target / "a").read_text() == "1"

    request = pod.unpublish_request()
    request.target_path = spellings[1]
    driver.node.NodeUnpublishVolume(request, timeout=30)
    assert_clean(pod.target)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("csi.storage.k8s.io/pod.name", "../../../../escape"),
        ("csi.storage.k8s.io/pod.name", "Web"),
        ("csi.storage.k8s.io/pod.namespace", "../../escape"),
        ("csi.storage.k8s.io/pod.namespace", "a.b"),
        ("secretProviderClass", "../escape"),
    ],
)
def test_names_that_become_paths_must_be_kubernetes_names(
    driver: Driver, provider: ProviderDouble, kubelet_dir: Path, key: str, value: str
) -> None:
    driver.write_class("named", {"file.a": "1"})
    pod = make_pod(kubelet_dir)
    request = pod.publish_request("named")
    request.volume_context[key] = value
    before = set(driver.state_dir.parent.parent.rglob("*.json"))

    err = publish_fails(driver, request)
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert f"volume_context {key} {value!r} is not a valid Kubernetes name" in err.details
    assert provider.requests == []
    assert set(driver.state_dir.parent.parent.rglob("*.json")) <= before, "no status file written"
    assert_clean(pod.target)


def test_the_daemonset_mounts_kubelets_pods_below_its_kubelet_root() -> None:
    manifest = Path(__file__).resolve().parents[2] / "deploy" / "driver" / "daemonset.yaml"
    pod = yaml.safe_load(manifest.read_text())["spec"]["template"]["spec"]
    driver = next(c for c in pod["containers"] if c["name"] == "secrets-store")
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    root = parser.parse_args(driver["args"][1:]).kubelet_root_dir  # after the "driver" subcommand
    host_paths = {v["name"]: v.get("hostPath", {}).get("path") for v in pod["volumes"]}
    pods = [m for m in driver["volumeMounts"] if host_paths.get(m["name"]) == f"{root}/pods"]
    assert [m["mountPath"] for m in pods] == [f"{root}/pods"], "kubelet's pods seen at the same path"
