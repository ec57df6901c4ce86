"""The simulated nodes of bench/api_load.py: one driver process per node id, and a stand-in
kubelet that publishes and re-publishes every pod's volume as kubelet does.

The drivers measured, each started with the flags its own chart gives it:

* ``kvmount``: `kvmount driver` of this tree;
* ``v1.6.1``: upstream's driver v1.6.1 (scripts/peers/upstream-driver.sh), rotation by
  kubelet's re-publish;
* ``v1.5.6``: upstream's driver v1.5.6 (scripts/peers/bench/upstream-driver-v1.5.sh, built
  on demand), informer-fed caches and its own rotation reconciler.

The stand-in kubelet asks for each pod's service account tokens once per audience (kubelet's
token manager keeps them until 80 % of their life, longer than a run), bound to the pod, and
sends them in the request's secrets when the CSIDriver says ``serviceAccountTokenInSecrets``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.api_cluster import ACCOUNT, CLASS, NAMESPACE, VOLUME, PodRef
from kvmount.csi import standin_kubelet
from kvmount.csi.attributes import SA_TOKENS
from kvmount.csi.kubelet import target_path, volume_id
from kvmount.kube import kubeconfig
from kvmount.kube.rest import RestClient, path
from kvmount.proto import csi_pb2 as csi
from kvmount.proto import csi_pb2_grpc as csi_grpc
from tests.peers.upstream import CACHE, DRIVER_BINARY
from tests.support import Daemon, free_port, serves, start_daemon, stop_process, until_ready

ROOT = Path(__file__).resolve().parents[1]
PUBLISH_TIMEOUT = 120.0  # kubelet's


@dataclass(frozen=True)
class Contender:
    name: str
    binary: Path | None  # None: kvmount, run from this tree
    installer: str = ""  # builds the binary when missing
    chart_version: str = ""  # upstream's chart whose RBAC it runs with; "": kvmount's

    def install(self) -> None:
        if self.binary is None or self.binary.exists():
            return
        print(f"building {self.binary.name} ({self.installer})", file=sys.stderr, flush=True)
        subprocess.run(["bash", str(ROOT / self.installer)], check=True)

    def argv(self, node: str, work: Path, config: Path, providers: Path, poll: float) -> list[str]:
        common = [
            f"--endpoint=unix://{work / 'csi.sock'}",
            f"--nodeid={node}",
            f"--provider-volume={providers}",
            f"--additional-provider-volume-paths={work / 'no-more-providers'}",
            f"--kubeconfig={config}",
            f"--metrics-addr=127.0.0.1:{free_port()}",
            "--enable-secret-rotation=true",
            f"--rotation-poll-interval={poll:g}s",
        ]
        if self.binary is not None:
            return [str(self.binary), *common]
        return [
            sys.executable, "-m", "kvmount.cli", "driver", *common, "--standalone-classes-dir=",
            f"--state-dir={work / 'state'}", f"--kubelet-root-dir={work / 'kubelet'}",
        ]  # fmt: skip


CONTENDERS = {
    c.name: c
    for c in (
        Contender("kvmount", None),
        Contender("v1.6.1", DRIVER_BINARY, "scripts/peers/upstream-driver.sh", "v1.6.1"),
        Contender(
            "v1.5.6",
            CACHE / "bin" / "upstream-secrets-store-csi-driver-v1.5.6",
            "scripts/peers/bench/upstream-driver-v1.5.sh",
            "v1.5.6",
        ),
    )
}


class NodeDriver:
    """One node's driver process, its kubelet directory and its CSI Node client."""

    def __init__(
        self, contender: Contender, node: str, work: Path, config: Path, providers: Path, poll: float
    ) -> None:
        self.node, self.work = node, work
        self.kubelet_dir = work / "kubelet"
        for directory in (work / "no-more-providers", work / "state", self.kubelet_dir):
            directory.mkdir(parents=True, exist_ok=True)
        argv = contender.argv(node, work, config, providers, poll)
        # v1.5.x's rotation reconciler reads $KUBECONFIG only, not the flag.
        env = {**os.environ, "KUBECONFIG": str(config)}
        self.daemon = start_daemon(f"{contender.name}-{node}", argv, work / "driver.log", env=env)
        socket = work / "csi.sock"
        until_ready(lambda: serves(socket), timeout=60, what=f"{node}'s driver", daemons=[self.daemon])
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.stub = csi_grpc.NodeStub(self.channel)

    @property
    def pid(self) -> int:
        return self.daemon.process.pid

    def alive(self) -> Daemon:
        if self.daemon.process.poll() is not None:
            raise RuntimeError(f"{self.daemon.name} exited:\n{self.daemon.tail()}")
        return self.daemon

    def stop(self) -> None:
        self.channel.close()
        stop_process(self.daemon.process)


@dataclass
class Volume:
    pod: PodRef
    driver: NodeDriver
    target: str
    busy: threading.Lock = field(default_factory=threading.Lock)


class Kubelet:
    """kubelet's side of every node: its publishes, re-publishes and token requests."""

    def __init__(self, drivers: dict[str, NodeDriver], pods: list[PodRef], csidriver: dict[str, Any]) -> None:
        self.volumes = [
            Volume(p, drivers[p.node], target_path(str(drivers[p.node].kubelet_dir), p.uid, VOLUME))
            for p in pods
        ]
        spec = csidriver.get("spec", {})
        self.audiences = [str(r["audience"]) for r in spec.get("tokenRequests") or []]
        self.tokens_in_secrets = bool(spec.get("serviceAccountTokenInSecrets"))
        self.republishes = bool(spec.get("requiresRepublish"))
        self.rest: dict[str, RestClient] = {}
        self.errors: list[str] = []
        self.publishes = 0
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()

    def connect(self, node: str, config: Path) -> None:
        self.rest[node] = RestClient(kubeconfig.load(str(config)))

    def close(self) -> None:
        for client in self.rest.values():
            client.close()

    def _tokens_of(self, pod: PodRef) -> str:
        with self._lock:
            held = self._tokens.get(pod.uid)
        if held is not None or not self.audiences:
            return held or ""
        where = path("v1", "serviceaccounts", NAMESPACE, ACCOUNT, "token")
        tokens = {}
        for audience in self.audiences:
            body = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": [audience],
                    "expirationSeconds": 3600,
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.name, "uid": pod.uid},
                },
            }
            status = self.rest[pod.node].create(where, body).get("status", {})
            tokens[audience] = {k: status[k] for k in ("token", "expirationTimestamp")}
        encoded = json.dumps(tokens)
        with self._lock:
            self._tokens[pod.uid] = encoded
        return encoded

    def publish(self, volume: Volume) -> None:
        """One NodePublishVolume as kubelet sends it; a failure is kept, as kubelet would retry."""
        if not volume.busy.acquire(blocking=False):
            return  # kubelet never sends a second publish of a volume while one runs
        try:
            Path(volume.target).parent.mkdir(parents=True, exist_ok=True)
            tokens = self._tokens_of(volume.pod)
            secrets = {SA_TOKENS: tokens} if tokens and self.tokens_in_secrets else {}
            attributes = {SA_TOKENS: tokens} if tokens and not self.tokens_in_secrets else {}
            request = standin_kubelet.publish_request(
                target=volume.target, class_name=CLASS, pod_name=volume.pod.name, pod_namespace=NAMESPACE,
                pod_uid=volume.pod.uid, service_account=ACCOUNT, volume_name=VOLUME, secrets=secrets,
                attributes=attributes,
            )  # fmt: skip
            volume.driver.stub.NodePublishVolume(request, timeout=PUBLISH_TIMEOUT)
        except grpc.RpcError as err:
            with self._lock:
                self.errors.append(f"{volume.pod.name}: {err.code().name}: {err.details()}")
        finally:
            with self._lock:
                self.publishes += 1
            volume.busy.release()

    def publish_all(self, parallel: int) -> None:
        """Every volume once, ``parallel`` at a time on each node (pods starting together)."""
        nodes = {v.driver.node for v in self.volumes}
        with ThreadPoolExecutor(min(64, parallel * len(nodes))) as pool:
            list(pool.map(self.publish, self._interleaved()))

    def _interleaved(self) -> list[Volume]:
        by_node: dict[str, list[Volume]] = {}
        for v in self.volumes:
            by_node.setdefault(v.driver.node, []).append(v)
        rows = max(len(vs) for vs in by_node.values())
        return [vs[i] for i in range(rows) for vs in by_node.values() if i < len(vs)]

    def republishing(self, period: float, stop: threading.Event) -> threading.Thread:
        """A thread re-publishing every volume once per ``period``, spread evenly over it."""

        def run() -> None:
            order = self._interleaved()
            step = period / len(order)
            began, tick = time.monotonic(), 0
            pool = ThreadPoolExecutor(16)
            try:
                while not stop.wait(max(0.0, began + tick * step - time.monotonic())):
                    pool.submit(self.publish, order[tick % len(order)])
                    tick += 1
            finally:
                pool.shutdown(wait=True, cancel_futures=True)

        thread = threading.Thread(target=run, name="kubelet-republish", daemon=True)
        thread.start()
        return thread

    def unpublish_all(self) -> None:
        def unpublish(volume: Volume) -> None:
            vid = volume_id(volume.pod.uid, VOLUME)
            request = csi.NodeUnpublishVolumeRequest(volume_id=vid, target_path=volume.target)
            with contextlib.suppress(grpc.RpcError):  # what stays mounted, the caller unmounts
                volume.driver.stub.NodeUnpublishVolume(request, timeout=PUBLISH_TIMEOUT)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(unpublish, self.volumes))

    def rotated(self) -> int:
        """How many volumes show the provider's rotated content."""
        return sum(1 for v in self.volumes if _content(Path(v.target) / "foo") == b"rotated")


def _content(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError:
        return b""
