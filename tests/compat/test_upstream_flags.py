"""Every flag upstream's binaries accept is accepted by kvmount, in every spelling Go accepts.

The lists below were read from upstream's flag definitions (driver v1.6.0:
cmd/secrets-store-csi-driver, pkg/metrics, controller-runtime's --kubeconfig;
Azure provider v1.8.2: cmd/main.go, pkg/version; both: klog.InitFlags); when
the upstream binaries are built (scripts/peers/upstream-*.sh), their --help
must list exactly these.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest

from kvmount import __version__
from kvmount.base.flags import GoFlagParser
from kvmount.driver import command as driver_command
from kvmount.proto import csi_pb2 as csi
from kvmount.proto import csi_pb2_grpc as csi_grpc
from kvmount.provider import command as provider_command
from tests.peers.keyvault_double import KeyVaultDouble
from tests.peers.upstream import DRIVER_BINARY, PROVIDER_BINARY, require
from tests.provider.conftest import VAULT, start_provider, stop_provider
from tests.support import free_port, start_daemon

# klog.InitFlags: the same in both binaries.
KLOG = {
    "v": "5",
    "vmodule": "server=2",
    "logtostderr": None,
    "alsologtostderr": None,
    "log_dir": "/tmp",
    "log_file": "/tmp/kvmount-flag-test.log",
    "log_file_max_size": "10",
    "skip_headers": None,
    "skip_log_headers": None,
    "one_output": None,
    "add_dir_header": None,
    "stderrthreshold": "WARNING",
    "log_backtrace_at": "main.go:10",
}
# name -> a value to pass, None for a boolean.
DRIVER = {
    **KLOG,
    "endpoint": "unix:///tmp/csi.sock",
    "drivername": "secrets-store.csi.k8s.io",
    "nodeid": "node-1",
    "log-format-json": None,
    "provider-volume": "/var/run/secrets-store-csi-providers",
    "additional-provider-volume-paths": "/etc/kubernetes/secrets-store-csi-providers",
    "metrics-addr": ":8095",
    "enable-secret-rotation": None,
    "rotation-poll-interval": "2m",
    "enable-pprof": None,
    "pprof-port": "6065",
    "max-call-recv-msg-size": "4194304",
    "version": None,
    "provider-health-check": None,
    "provider-health-check-interval": "2m",
    "metrics-backend": "Prometheus",
    "kubeconfig": "/root/.kube/config",
    # klog's, in the driver since v1.6.1 (klog v2.130); Azure's provider v1.8.2 has an older klog
    "alsologtostderrthreshold": "WARNING",
    "legacy_stderr_threshold_behavior": None,
}
PROVIDER = {
    **KLOG,
    "version": None,
    "endpoint": "unix:///tmp/azure.sock",
    "log-format-json": None,
    "enable-pprof": None,
    "pprof-port": "6060",
    "healthz-port": "8989",
    "healthz-path": "/healthz",
    "healthz-timeout": "5s",
    "metrics-backend": "Prometheus",
    "prometheus-port": "8898",
    "construct-pem-chain": None,
    "write-cert-and-key-in-separate-files": None,
    "cloud-name": "AzurePublicCloud",
    "token-proxy-url": "https://kubernetes.default.svc.cluster.local",
    "sni-name": "proxy.example",
    "custom-user-agent": "my-agent",
}
COMMANDS = {"driver": (driver_command, DRIVER), "provider": (provider_command, PROVIDER)}


def parse(component: str, argv: list[str]) -> argparse.Namespace:
    module, _ = COMMANDS[component]
    parser = module.PARSER(prog=f"kvmount {component}")
    module.add_arguments(parser)
    args: argparse.Namespace = parser.parse_args(argv)
    return args


def spellings(name: str, value: str | None) -> list[list[str]]:
    if value is None:
        return [[f"-{name}"], [f"--{name}"], [f"-{name}=true"], [f"--{name}=false"]]
    return [[f"-{name}={value}"], [f"--{name}={value}"], [f"-{name}", value], [f"--{name}", value]]


@pytest.mark.parametrize("component", COMMANDS)
def test_every_upstream_flag_in_every_spelling(component: str) -> None:
    _, flags = COMMANDS[component]
    for name, value in flags.items():
        for argv in spellings(name, value):
            args = parse(component, argv)
            if value is None:
                assert getattr(args, name.replace("-", "_")) is (not argv[0].endswith("=false")), argv


@pytest.mark.parametrize(("component", "binary"), [("driver", DRIVER_BINARY), ("provider", PROVIDER_BINARY)])
def test_lists_match_upstream_help(component: str, binary: Path) -> None:
    require(binary)
    out = subprocess.run([str(binary), "-help"], capture_output=True, text=True, timeout=30)
    listed = set(re.findall(r"^  -(\S+)", out.stderr, re.MULTILINE))
    assert listed == set(COMMANDS[component][1]), out.stderr


def test_values_work_as_upstream() -> None:
    args = parse("provider", ["-healthz-timeout", "1m30s", "--metrics-backend=PROMETHEUS", "-v", "0"])
    assert (args.healthz_timeout, args.metrics_backend, args.v) == (90.0, "prometheus", 0)
    args = parse("driver", ["--max-call-recv-msg-size=0x800000", "-rotation-poll-interval=90s"])
    assert (args.max_call_recv_msg_size, args.rotation_poll_interval) == (8 << 20, 90.0)


@pytest.mark.parametrize("component", COMMANDS)
def test_version_exits_zero(component: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kvmount.cli", component, "-version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (out.returncode, out.stdout.strip()) == (0, f"kvmount {component} {__version__}")


def test_provider_done_when_command_serves_and_sends_the_user_agent(
    keyvault: KeyVaultDouble, tmp_path: Path
) -> None:
    # `kvmount provider -v=5 --metrics-backend=prometheus --custom-user-agent=x --endpoint=...`;
    # start_provider adds the endpoint and free ports.
    agent = "kvmount-compat-agent/1.0"
    provider = start_provider(
        tmp_path, keyvault, "-v=5", "--metrics-backend=prometheus", f"--custom-user-agent={agent}",
        "--enable-pprof", "-pprof-port", "6060", "-vmodule=server=2",
    )  # fmt: skip
    try:
        name, client = f"ua-{uuid.uuid4().hex[:8]}", f"app-{uuid.uuid4().hex[:8]}"
        keyvault.register_aad_client(client, secret="sp-secret")
        sp = {"clientid": client, "clientsecret": "sp-secret"}
        keyvault.put_secret(VAULT, name, "value")
        keyvault.reset_log()
        response = provider.mount(provider.attributes([{"objectName": name, "objectType": "secret"}]), sp)
        assert [f.contents for f in response.files] == [b"value"]
        seen = {(r.get("service"), agent in (r.get("user_agent") or "")) for r in keyvault.requests()}
        assert {("keyvault", True), ("aad", True)} <= seen and not {s for s, has in seen if not has}
    finally:
        stop_provider(provider)
    log = provider.log.read_text()
    ignored = [line for line in log.splitlines() if "ignored" in line]
    assert len(ignored) == 1 and all(f in ignored[0] for f in ("--enable-pprof", "--pprof-port", "--vmodule"))


def test_driver_done_when_command_serves(tmp_path: Path) -> None:
    # `kvmount driver -v=0 --endpoint=... --nodeid=n`, plus a free metrics port and a
    # state directory of its own so that parallel runs do not collide.
    sock = tmp_path / "x.sock"
    log = tmp_path / "driver.log"
    argv = [
        "-v=0", f"--endpoint=unix://{sock}", "--nodeid=n",
        f"--metrics-addr=127.0.0.1:{free_port()}", f"--state-dir={tmp_path / 'state'}",
    ]  # fmt: skip
    process = start_daemon("driver", [sys.executable, "-m", "kvmount.cli", "driver", *argv], log).process
    try:
        with grpc.insecure_channel(f"unix://{sock}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            probe = csi_grpc.IdentityStub(channel).Probe(csi.ProbeRequest(), timeout=5)
            assert probe.ready.value is True
    finally:
        process.terminate()
        process.wait(timeout=40)
    assert "Traceback" not in log.read_text()


def test_parser_is_go_style() -> None:
    assert driver_command.PARSER is GoFlagParser and provider_command.PARSER is GoFlagParser
