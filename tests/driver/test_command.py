"""`kvmount driver` flags: upstream's names and defaults, Go-style values."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from kvmount import __version__
from kvmount.csi.provider_client import ProviderClients, ProviderError
from kvmount.driver import command
from kvmount.proto import v1alpha1_pb2 as pb
from tests.driver.conftest import PROVIDER
from tests.driver.provider_double import ProviderDouble


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


def test_upstream_defaults() -> None:
    args = parse()
    assert args.endpoint == "unix:///tmp/csi.sock"
    assert args.drivername == "secrets-store.csi.k8s.io"
    assert args.provider_volume == "/var/run/secrets-store-csi-providers"
    assert args.additional_provider_volume_paths is None  # -> /etc/kubernetes/secrets-store-csi-providers
    assert args.metrics_addr == ":8095"
    assert (args.enable_secret_rotation, args.rotation_poll_interval) == (False, 120.0)
    assert args.max_call_recv_msg_size == 4 * 1024 * 1024
    assert (args.provider_health_check, args.provider_health_check_interval) == (False, 120.0)
    assert args.log_format_json is False


def test_go_style_values() -> None:
    args = parse(
        "--enable-secret-rotation",
        "--rotation-poll-interval=1m30s",
        "--provider-health-check=true",
        "--additional-provider-volume-paths=/a,/b",
        "--additional-provider-volume-paths=/c",
        "--log-format-json=false",
    )
    assert args.enable_secret_rotation is True and args.rotation_poll_interval == 90.0
    assert args.provider_health_check is True
    assert args.additional_provider_volume_paths == ["/a", "/b", "/c"]
    assert args.log_format_json is False


@pytest.mark.peer
def test_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kvmount.cli", "driver", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == f"kvmount driver {__version__}"


def test_max_call_recv_msg_size(provider_dir: Path, provider: ProviderDouble) -> None:
    provider.behaviour.extra_files = [pb.File(path="big", mode=0o644, contents=b"x" * (2 << 20))]
    small = ProviderClients([str(provider_dir)], 1 << 20)
    try:
        with pytest.raises(ProviderError, match="--max-call-recv-msg-size") as info:
            small.mount(PROVIDER, pb.MountRequest(attributes="{}", permission="420"), timeout=30)
        assert info.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        small.close()
    large = ProviderClients([str(provider_dir)], 4 << 20)
    try:
        response = large.mount(PROVIDER, pb.MountRequest(attributes="{}", permission="420"), timeout=30)
        assert len(response.files[0].contents) == 2 << 20
    finally:
        large.close()


def refused_at_start(flag: str) -> str:
    """The last stderr line of `kvmount driver flag`, which must exit 2 without a traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "kvmount.cli", "driver", flag], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    return done.stderr.strip().splitlines()[-1]


@pytest.mark.peer
@pytest.mark.parametrize("flag", ["--rotation-poll-interval", "--provider-health-check-interval"])
@pytest.mark.parametrize("value", ["0", "-1m", "500ms"])
def test_a_period_that_would_spin_is_refused_in_one_line(flag: str, value: str) -> None:
    last = refused_at_start(f"{flag}={value}")
    assert flag in last and f"'{value}' is too short: a period must be at least 1s" in last


@pytest.mark.peer
def test_a_relative_kubelet_root_is_refused_in_one_line() -> None:
    last = refused_at_start("--kubelet-root-dir=var/lib/kubelet")
    assert "--kubelet-root-dir" in last and "'var/lib/kubelet' is not an absolute path" in last
