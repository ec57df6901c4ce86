"""The drivers side by side: upstream's v1.6.1 binary and `kvmount driver`, same API server,
same fast provider (tests/driver/provider_double.py, in this process), real tmpfs mounts.

Each driver gets its own node name; publishes alternate between them. Every volume is
unpublished afterwards and anything left mounted under the bench's kubelet root is unmounted.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import grpc

from bench import procstat
from bench.contenders import wait_for_socket
from kvmount.csi import standin_kubelet
from kvmount.csi.kubelet import target_path, volume_id
from kvmount.proto import csi_pb2 as csi
from kvmount.proto import csi_pb2_grpc as csi_grpc
from kvmount.volume import mounts
from tests.driver.provider_double import serve
from tests.peers.kube import KubeAPIServer
from tests.peers.upstream import DRIVER_BINARY
from tests.support import Daemon, free_port

CRDS = Path(__file__).resolve().parents[1] / "deploy" / "crds"
NAMESPACE = "bench"


class Driver:
    def __init__(self, name: str, argv: list[str], workdir: Path) -> None:
        self.name = name
        self.socket, self.log = workdir / "csi.sock", workdir / f"{name}.log"
        with open(self.log, "wb") as out:
            began = time.perf_counter()
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        wait_for_socket(Daemon(name, self.process, self.log), self.socket)
        self.start_seconds = time.perf_counter() - began
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        self.node = csi_grpc.NodeStub(self.channel)

    def stop(self) -> None:
        self.channel.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _drivers(work: Path, provider_dir: Path, kubeconfig: Path, kubelet: Path) -> list[Driver]:
    empty = work / "no-more-providers"
    empty.mkdir(parents=True)
    common = [
        f"--provider-volume={provider_dir}",
        f"--additional-provider-volume-paths={empty}",
        f"--kubeconfig={kubeconfig}",
    ]
    (work / "upstream").mkdir()
    (work / "kvmount").mkdir()
    upstream = [
        str(DRIVER_BINARY),
        f"--endpoint=unix://{work / 'upstream' / 'csi.sock'}",
        "--nodeid=node-upstream",
        f"--metrics-addr=127.0.0.1:{free_port()}",
        *common,
    ]
    ours = [
        sys.executable,
        "-m",
        "kvmount.cli",
        "driver",
        f"--endpoint=unix://{work / 'kvmount' / 'csi.sock'}",
        "--nodeid=node-kvmount",
        f"--metrics-addr=127.0.0.1:{free_port()}",
        "--standalone-classes-dir=",
        f"--state-dir={work / 'kvmount' / 'state'}",
        f"--kubelet-root-dir={kubelet}",
        *common,
    ]
    return [Driver("upstream", upstream, work / "upstream"), Driver("kvmount", ours, work / "kvmount")]


def _publish(driver: Driver, kubelet: Path) -> tuple[float, str]:
    uid = str(uuid.uuid4())
    target = Path(target_path(str(kubelet), uid, "secrets-store-inline"))
    target.parent.mkdir(parents=True)
    request = standin_kubelet.publish_request(
        target=str(target), class_name="app", pod_name=f"pod-{uid[:8]}", pod_namespace=NAMESPACE, pod_uid=uid
    )
    began = time.perf_counter()
    driver.node.NodePublishVolume(request, timeout=60)
    return time.perf_counter() - began, str(target)


def run(work: Path, quick: bool) -> dict[str, Any]:
    volumes = 10 if quick else 500
    work.mkdir(parents=True)
    kubelet = work / "kubelet"
    kubelet.mkdir()
    provider_dir = work / "provider"
    provider_dir.mkdir()
    provider, _ = serve(f"unix://{provider_dir / 'azure.sock'}")
    api = KubeAPIServer(work / "kube").start()
    drivers: list[Driver] = []
    targets: dict[str, list[str]] = {"upstream": [], "kvmount": []}
    try:
        for path in sorted(CRDS.glob("*.yaml")):
            api.apply_yaml(path)
        api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        api.apply(
            {
                "apiVersion": "secrets-store.csi.x-k8s.io/v1",
                "kind": "SecretProviderClass",
                "metadata": {"name": "app", "namespace": NAMESPACE},
                "spec": {
                    "provider": "azure",
                    "parameters": {"file.config": "x" * 200, "file.token": "y" * 64},
                },
            }
        )
        drivers = _drivers(work, provider_dir, api.kubeconfig, kubelet)
        time.sleep(2)  # idle: what each holds once started, before any publish
        result: dict[str, Any] = {
            "volumes": volumes,
            "start": {d.name: d.start_seconds for d in drivers},
            "rss_idle": {d.name: procstat.rss_mib(d.process.pid) for d in drivers},
        }
        took: dict[str, list[float]] = {d.name: [] for d in drivers}
        cpu = dict.fromkeys(took, 0.0)
        for i in range(volumes):
            for d in drivers if i % 2 == 0 else drivers[::-1]:
                before = procstat.cpu_seconds(d.process.pid)
                seconds, target = _publish(d, kubelet)
                cpu[d.name] += procstat.cpu_seconds(d.process.pid) - before
                took[d.name].append(seconds)
                targets[d.name].append(target)
        result["rss_volumes"] = {d.name: procstat.rss_mib(d.process.pid) for d in drivers}
        result["cpu_publish"] = {name: spent / volumes for name, spent in cpu.items()}
        result["publish_p50"] = {name: statistics.median(t) for name, t in took.items()}
        return result
    finally:
        for d in drivers:
            for target in targets[d.name]:
                vid = volume_id(Path(target).parts[-5], "secrets-store-inline")
                with contextlib.suppress(grpc.RpcError):  # what stays mounted is unmounted below
                    d.node.NodeUnpublishVolume(
                        csi.NodeUnpublishVolumeRequest(volume_id=vid, target_path=target), timeout=30
                    )
            d.stop()
        for point in sorted(mounts.mount_points(), reverse=True):
            if point.startswith(f"{kubelet}{os.sep}"):
                mounts.unmount(point)
        api.stop()
        provider.stop(None)
