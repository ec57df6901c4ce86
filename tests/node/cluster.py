"""A one-node Kubernetes cluster owned by the tests: etcd + kube-apiserver
(tests/peers/kube.py), kube-controller-manager, containerd + runc and kubelet.

Everything runs as processes of this one, in a private directory under /tmp,
on free loopback ports, and is taken down by stop(), which also undoes what
kubelet changes on the host (tests/node/host.py). Binaries and images come
from scripts/peers/kube-apiserver.sh and scripts/peers/kubelet.sh.

Settings that make kubelet run in a container-like sandbox without systemd,
cgroup v2 ownership or CAP_SYS_RESOURCE: cgroupfs, no QoS cgroups, nothing
enforced on node allocatable, swap tolerated, containerd's restrict_oom_score_adj,
and runc (crun fails on hybrid cgroup hierarchies). There is no CNI: pods use
the host network, and the node's InternalIP is 127.0.0.1 so the API server
reaches kubelet there (container logs).

    with Node(Path(tempfile.mkdtemp(dir="/tmp")), env=extra_env) as node:
        node.api                    # KubeAPIServer (admin client, apply_yaml, tokens)
        node.kubelet_dir            # kubelet's --root-dir
        node.plugin_dir             # kubelet's FlexVolume --volume-plugin-dir
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import yaml
from kubernetes import client as k8s

from tests.node import host, machine
from tests.peers.kube import CACHE, KubeAPIServer, binaries
from tests.support import Daemon, free_port, start_daemon, until_ready

NODE_NAME = "kvmount-node"
BUSYBOX = "kvmount.test/busybox:1"
PAUSE = "kvmount.test/pause:1"
IMAGES = CACHE / "images"
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",  # a test's namespace goes with its pods
    "serviceaccount-controller",  # a "default" ServiceAccount in each namespace
    "serviceaccount-token-controller",
    "deployment-controller",
    "replicaset-controller",
)
# What the node needs besides kube-apiserver and etcd, and where it comes from.
PEERS = "scripts/peers/kubelet.sh"


def missing() -> list[str]:
    """What this machine lacks to run the node, each with how to get it; empty when it can."""
    lacking = []
    if os.geteuid() != 0:
        lacking.append("root (kubelet and containerd mount and manage cgroups)")
    if binaries() is None:
        lacking.append("etcd/kube-apiserver (scripts/peers/kube-apiserver.sh)")
    for name in ("kubelet", "kube-controller-manager"):
        if not os.access(CACHE / "bin" / name, os.X_OK):
            lacking.append(f"{CACHE / 'bin' / name} ({PEERS})")
    for name in ("containerd", "containerd-shim-runc-v2", "runc", "ctr"):
        if shutil.which(name) is None and not os.access(f"/usr/sbin/{name}", os.X_OK):
            lacking.append(f"{name} ({PEERS})")
    for image in ("busybox", "pause"):
        if not (IMAGES / f"{image}.tar").is_file():
            lacking.append(f"image archive {IMAGES / image}.tar ({PEERS})")
    if not Path("/sys/fs/cgroup").is_dir():
        lacking.append("a cgroup file system at /sys/fs/cgroup")
    return lacking


def _runc() -> str:
    return shutil.which("runc") or "/usr/sbin/runc"


class Node:
    def __init__(
        self, root: Path, env: dict[str, str] | None = None, controllers: tuple[str, ...] = ()
    ) -> None:
        self.root = root
        self._controllers = CONTROLLERS + controllers  # kube-controller-manager's
        self.api = KubeAPIServer(root / "api")
        self.kubelet_dir = root / "kubelet"
        self.plugin_dir = root / "flexvolume"
        self.containerd_socket = root / "containerd" / "containerd.sock"
        self.kubelet_port = 0
        self._kubelet_argv: list[str] = []
        # kubelet passes its environment to the FlexVolume drivers it execs.
        self._env = {**os.environ, **(env or {})}
        self._procs: dict[str, Daemon] = {}
        self._machine = machine.Guard(root.name)

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    # -------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 120) -> Node:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        try:
            self.api.start()
            self._machine.acquire()
            self._start_containerd(timeout)
            self._import_images()
            self._start_controller_manager()
            self._start_kubelet(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> list[str]:
        """Take everything down and undo kubelet's changes; what could not be undone."""
        problems = []
        # The containers' cgroups are named after them; their shims' state says which are ours.
        tasks = self.root / "containerd" / "state" / "io.containerd.runtime.v2.task" / "k8s.io"
        containers = [entry.name for entry in tasks.iterdir()] if tasks.is_dir() else []
        if "containerd" in self._procs:
            self._remove_containers()
        for name in ("kubelet", "kube-controller-manager", "containerd"):
            daemon = self._procs.pop(name, None)
            if daemon is not None:
                host.kill_group(daemon.process)
        stragglers = host.processes_mentioning(str(self.root))
        sockets = [host.shim_socket(pid) for pid in stragglers]
        host.kill_pids(stragglers)
        for sock in sockets:
            if sock is not None:
                sock.unlink(missing_ok=True)
        self.api.stop()
        alive = host.processes_mentioning(str(self.root))
        if alive:
            problems.append(f"processes still running: {alive}")
        still_mounted = host.unmount_all(self.root)
        if still_mounted:
            problems.append(f"still mounted: {still_mounted}")
        cgroups = host.remove_cgroups(containers)
        if cgroups:
            problems.append(f"cgroups left: {cgroups}")
        host.remove_log_links(self.root)
        failed = self._machine.release()  # the last node on the machine: sysctls, shared dirs
        if failed:
            problems.append(f"sysctls not restored: {failed}")
        if not still_mounted:
            shutil.rmtree(self.root, ignore_errors=True)
        return problems

    def __enter__(self) -> Node:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        # Its own process group, killed as one.
        self._procs[name] = start_daemon(name, argv, self.log(name), env=env, own_group=True)

    def _wait(self, what: str, ready: Callable[[], bool], timeout: float, *names: str) -> None:
        """Until ``ready``; fails with the logs' ends (stop() removes them) if one of ``names`` exits."""
        until_ready(ready, timeout=timeout, what=what, daemons=[self._procs[name] for name in names])

    # -------------------------------------------------------------- containerd

    def _start_containerd(self, timeout: float) -> None:
        base = self.root / "containerd"
        base.mkdir(parents=True, exist_ok=True)
        config = base / "config.toml"
        config.write_text(_containerd_config(base, self.containerd_socket))
        self._spawn("containerd", ["containerd", "--config", str(config)])
        self._wait("containerd socket", self.containerd_socket.exists, timeout, "containerd")

    def ctr(self, *args: str) -> str:
        done = subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def _import_images(self) -> None:
        for image in ("pause", "busybox"):
            self.ctr("images", "import", "--snapshotter", "overlayfs", str(IMAGES / f"{image}.tar"))

    def _remove_containers(self) -> None:
        """Kill and delete what kubelet left running, so the shims exit cleanly."""
        try:
            tasks = [line.split()[0] for line in self.ctr("tasks", "list", "--quiet").splitlines() if line]
            for task in tasks:
                subprocess.run(
                    ["ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", "tasks", "kill",
                     "--all", "--signal", "SIGKILL", task],
                    capture_output=True, timeout=30,
                )  # fmt: skip
            for task in tasks:
                subprocess.run(
                    ["ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", "tasks", "delete",
                     "--force", task],
                    capture_output=True, timeout=30,
                )  # fmt: skip
        except (RuntimeError, subprocess.TimeoutExpired, OSError):
            pass  # containerd is gone: the shims are killed by their command line below

    # -------------------------------------------------------------- control plane

    def _start_controller_manager(self) -> None:
        self._spawn(
            "kube-controller-manager",
            [
                str(CACHE / "bin" / "kube-controller-manager"),
                "--kubeconfig", str(self.api.kubeconfig),
                "--authentication-kubeconfig", str(self.api.kubeconfig),
                "--authorization-kubeconfig", str(self.api.kubeconfig),
                "--controllers", ",".join(self._controllers),
                "--service-account-private-key-file", str(self.api.service_account_key),
                "--root-ca-file", str(self.api.ca_file),
                "--leader-elect=false",
                "--bind-address", "127.0.0.1", "--secure-port", str(free_port()),
            ],
        )  # fmt: skip

    # -------------------------------------------------------------- kubelet

    def _start_kubelet(self, timeout: float) -> None:
        self.kubelet_dir.mkdir(parents=True, exist_ok=True)
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        self.kubelet_port = free_port()
        config = self.root / "kubelet.yaml"
        config.write_text(yaml.safe_dump(self._kubelet_config()))
        self._kubelet_argv = [
            str(CACHE / "bin" / "kubelet"),
            "--config", str(config),
            "--kubeconfig", str(self.api.kubeconfig),
            "--root-dir", str(self.kubelet_dir),
            "--cert-dir", str(self.root / "kubelet-pki"),
            "--hostname-override", NODE_NAME,
            "--node-ip", "127.0.0.1",
            "--volume-plugin-dir", str(self.plugin_dir),
            "--v", "2",
        ]  # fmt: skip
        self._spawn("kubelet", self._kubelet_argv, env=self._env)
        core = k8s.CoreV1Api(self.api.admin)

        def registered() -> bool:
            try:
                core.read_node(NODE_NAME)
                return True
            except k8s.ApiException:
                return False

        self._wait("Node object from kubelet", registered, timeout, "kubelet", "containerd")
        # kubelet refuses a loopback --node-ip and then leaves the addresses alone (it logs
        # "failed to validate nodeIP" on every status update), so they are set here: the API
        # server proxies container logs to 127.0.0.1, where kubelet listens.
        core.patch_node_status(
            NODE_NAME,
            {"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}},
        )

    def restart_kubelet(self, wipe_plugin_registry: bool = False) -> None:
        """Stop kubelet (its pods keep running) and start it again; optionally without its
        plugin registry directory, like a node whose kubelet directory was recreated."""
        host.kill_group(self._procs.pop("kubelet").process)
        if wipe_plugin_registry:
            shutil.rmtree(self.kubelet_dir / "plugins_registry")
        self._spawn("kubelet", self._kubelet_argv, env=self._env)

    def _kubelet_config(self) -> dict[str, object]:
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [],
            "address": "127.0.0.1",
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzPort": 0,
            "podLogsDir": str(self.root / "pod-logs"),
            # The API server proxies container logs without client certificates.
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            # A busy CI disk must not evict the test pods or delete the local images.
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "serializeImagePulls": False,
        }


def _containerd_config(base: Path, socket_path: Path) -> str:
    # Every path containerd would put under /var/lib, /run or /opt is private.
    return f"""version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{socket_path}"
[ttrpc]
  address = "{socket_path}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  restrict_oom_score_adj = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{base}/cni/bin"
    conf_dir = "{base}/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{_runc()}"
        Root = "{base}/runc"
        SystemdCgroup = false
"""
