"""kvmount starts with the exact arguments of upstream's own charts and manifests.

The image swap keeps upstream's Helm charts (driver v1.6.0, Azure provider
v1.8.2, which includes the driver chart) and plain manifests and changes only
the image. Each is rendered (``helm template``, default values and every
documented value switched on), and each Linux container kvmount replaces is
started as ``kvmount <component>`` with its rendered ``args`` and ``env``
($(VAR) expanded as the kubelet does). Only what belongs to the host is
rewritten, so parallel runs do not collide: paths under the pod's hostPath
volumes become temporary directories (one per host path, so the driver and the
provider share the providers directory as on a node) and the host ports the
container declares become free ports. Two additions, both commented below.
Then each must serve its socket and answer the checks the chart makes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import yaml

from kvmount.proto import csi_pb2 as csi
from kvmount.proto import csi_pb2_grpc as csi_grpc
from kvmount.proto import v1alpha1_pb2 as pb
from kvmount.proto import v1alpha1_pb2_grpc as pb_grpc
from tests.compat.upstream import (
    COMPONENTS,
    DRIVER_MODULE,
    PROVIDER_MODULE,
    Doc,
    daemonset_containers,
    expand,
    module_dir,
    render,
)
from tests.support import Daemon, free_port, start_daemon, until_ready

NODE_NAME = "node-1"
# Every value the charts document, switched on (Windows stays off: kvmount is Linux only).
DRIVER_ALL_ON: Doc = {
    "logVerbosity": 5,
    "logFormatJSON": True,
    "enableSecretRotation": True,
    "rotationPollInterval": "30s",
    "providerHealthCheck": True,
    "providerHealthCheckInterval": "30s",
    "maxCallRecvMsgSize": 8388608,
    "syncSecret": {"enabled": True},
    "tokenRequests": [{"audience": "api://AzureADTokenExchange"}],
    "linux": {"env": [{"name": "EXTRA_SETTING", "value": "1"}], "metricsAddr": ":8096"},
}
PROVIDER_ALL_ON: Doc = {
    "logVerbosity": 5,
    "logFormatJSON": True,
    "constructPEMChain": True,
    "writeCertAndKeyInSeparateFiles": True,
    "linux": {
        "customUserAgent": "kvmount-compat",
        "healthzPort": 8990,
        "healthzPath": "/healthz",
        "healthzTimeout": "10s",
        "privileged": True,
    },
    "secrets-store-csi-driver": DRIVER_ALL_ON,
}
_PORT_AT_END = re.compile(r"(?<=[=:])(\d+)$")


@dataclass
class Started:
    component: str
    argv: list[str]
    process: subprocess.Popen[bytes]
    log: Path
    container: Doc
    ports: dict[int, int]
    paths: dict[str, Path] = field(default_factory=dict)

    def arg(self, name: str) -> str:
        return next(a.split("=", 1)[1] for a in self.argv if a.startswith(f"--{name}="))


def host_paths(spec: Doc, container: Doc, root: Path) -> dict[str, Path]:
    """The container's mount paths of hostPath volumes -> one temporary directory per host path."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mapped = {}
    for mount in container.get("volumeMounts", []):
        host = volumes.get(mount["name"], {}).get("hostPath", {}).get("path")
        if host:
            directory = root / hashlib.sha256(host.rstrip("/").encode()).hexdigest()[:8]
            directory.mkdir(exist_ok=True)
            mapped[mount["mountPath"].rstrip("/")] = directory
    return mapped


def rewrite(value: str, paths: dict[str, Path], ports: dict[int, int]) -> str:
    for mount in sorted(paths, key=len, reverse=True):
        value = re.sub(rf"(?<![\w.-]){re.escape(mount)}(?=/|,|$)", str(paths[mount]), value)
    port = _PORT_AT_END.search(value)
    if port and int(port.group(1)) in ports:
        value = value[: port.start()] + str(ports[int(port.group(1))])
    return value


def container_env(container: Doc) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
            env[item["name"]] = NODE_NAME
    return env


def start(spec: Doc, container: Doc, root: Path) -> Started:
    component = COMPONENTS[container["name"]]
    paths = host_paths(spec, container, root)
    declared = {p["containerPort"] for p in container.get("ports", [])}
    probe_port = container.get("livenessProbe", {}).get("httpGet", {}).get("port")
    ports = {p: free_port() for p in declared | ({probe_port} if isinstance(probe_port, int) else set())}
    env = container_env(container)
    argv = [rewrite(expand(a, env), paths, ports) for a in container.get("args", [])]
    if component == "provider" and not any(a.startswith("--prometheus-port") for a in argv):
        # The chart declares the metrics port but leaves --prometheus-port at its default
        # (8898): moved like the other host ports.
        metrics = next(p["containerPort"] for p in container["ports"] if p.get("name") == "metrics")
        argv.append(f"--prometheus-port={ports[int(metrics)]}")
    if component == "driver":
        # kvmount's own per-volume state directory (container-local in the image): one per test.
        argv.append(f"--state-dir={root / 'state'}")
    log = root / f"{component}.log"
    daemon = start_daemon(
        component,
        [sys.executable, "-m", "kvmount.cli", component, *argv],
        log,
        env={**os.environ, **{k: rewrite(v, paths, ports) for k, v in env.items()}},
    )
    return Started(component, argv, daemon.process, log, container, ports, paths)


def wait_ready(started: Started, call: Callable[..., object], request: object) -> object:
    def answer() -> list[object] | None:
        try:
            return [call(request, timeout=2)]
        except grpc.RpcError:
            return None

    daemon = Daemon(started.component, started.process, started.log)
    what = f"{started.component} {started.argv} serving"
    (reply,) = until_ready(answer, timeout=30, what=what, daemons=[daemon])
    return reply


def http_get(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        status: int = response.status
        return status


def check_provider(started: Started) -> None:
    with grpc.insecure_channel(started.arg("endpoint")) as channel:
        stub = pb_grpc.CSIDriverProviderStub(channel)
        reply = wait_ready(started, stub.Version, pb.VersionRequest(version="v1alpha1"))
        assert isinstance(reply, pb.VersionResponse) and reply.version == "v1alpha1"
    probe = started.container["livenessProbe"]["httpGet"]
    assert http_get(started.ports[int(probe["port"])], probe["path"]) == 200
    metrics = next(p["containerPort"] for p in started.container["ports"] if p.get("name") == "metrics")
    assert http_get(started.ports[int(metrics)], "/metrics") == 200


def check_driver(started: Started) -> None:
    # The chart's liveness probe is the livenessprobe sidecar calling Probe on this socket.
    with grpc.insecure_channel(started.arg("endpoint")) as channel:
        identity = csi_grpc.IdentityStub(channel)
        probe = wait_ready(started, identity.Probe, csi.ProbeRequest())
        assert isinstance(probe, csi.ProbeResponse) and probe.ready.value is True
        info = identity.GetPluginInfo(csi.GetPluginInfoRequest(), timeout=5)
        assert info.name == "secrets-store.csi.k8s.io"
    metrics_port = int(started.arg("metrics-addr").rsplit(":", 1)[1])
    assert http_get(metrics_port, "/metrics") == 200


@pytest.fixture
def node_root() -> Iterator[Path]:
    # Short: unix socket paths must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="kvc", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def run_all(docs: list[Doc], root: Path) -> list[Started]:
    pairs = daemonset_containers(docs)
    assert pairs, "no container kvmount replaces was rendered"
    # The provider first, as on a node where both run: the driver finds its socket.
    pairs.sort(key=lambda sc: COMPONENTS[sc[1]["name"]] != "provider")
    started: list[Started] = []
    try:
        for spec, container in pairs:
            started.append(start(spec, container, root))
        for one in started:
            (check_provider if one.component == "provider" else check_driver)(one)
    finally:
        for one in started:
            one.process.terminate()
        for one in started:
            one.process.wait(timeout=40)
    for one in started:
        text = one.log.read_text()
        assert one.process.returncode == 0, text
        assert "Traceback" not in text and "unrecognized arguments" not in text, text
    return started


def driver_chart() -> Path:
    return module_dir(*DRIVER_MODULE) / "charts" / "secrets-store-csi-driver"


def provider_chart(tmp: Path) -> Path:
    """A copy of the provider chart with its dependency, the driver chart, from the driver's module."""
    chart = tmp / "csi-secrets-store-provider-azure"
    shutil.copytree(module_dir(*PROVIDER_MODULE) / "charts" / chart.name, chart)
    shutil.copytree(driver_chart(), chart / "charts" / "secrets-store-csi-driver")
    for path in [chart, *chart.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)  # the module cache is read-only
    return chart


@pytest.mark.parametrize("values", [{}, DRIVER_ALL_ON], ids=["defaults", "all-on"])
def test_driver_chart(values: Doc, node_root: Path) -> None:
    (driver,) = run_all(render(driver_chart(), values), node_root)
    if values:
        assert "-v=5" in driver.argv and "--enable-secret-rotation=true" in driver.argv


@pytest.mark.parametrize("values", [{}, PROVIDER_ALL_ON], ids=["defaults", "all-on"])
def test_provider_chart_with_its_driver(values: Doc, node_root: Path, tmp_path: Path) -> None:
    started = run_all(render(provider_chart(tmp_path), values), node_root)
    assert sorted(s.component for s in started) == ["driver", "provider"]
    provider, driver = sorted(started, key=lambda s: s.component != "provider")
    # One host path, one directory: the provider's socket is where the driver looks.
    provider_socket = Path(provider.arg("endpoint").removeprefix("unix://"))
    assert provider_socket.parent == Path(driver.arg("provider-volume"))
    if values:
        assert "--custom-user-agent=kvmount-compat" in provider.argv and "-v=5" in provider.argv


def test_plain_manifests(node_root: Path) -> None:
    manifests = [
        *sorted((module_dir(*DRIVER_MODULE) / "deploy").glob("*.yaml")),
        *sorted((module_dir(*PROVIDER_MODULE) / "deployment").glob("*.yaml")),
    ]
    docs = [d for m in manifests for d in yaml.safe_load_all(m.read_text()) if d]
    started = run_all(docs, node_root)
    assert sorted(s.component for s in started) == ["driver", "provider"]
