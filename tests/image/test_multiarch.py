"""The arm64 image, run here under qemu-user-static, and the OCI layout that makes both one reference.

scripts/build-image registers Debian's qemu-user-static with binfmt_misc (fix-binary,
so the interpreter is found from anywhere); the arm64 rootfs unpacked here then
runs as it would on an arm64 node: its own loader, libc and interpreter, all arm64.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from kvmount.proto import v1alpha1_pb2 as pb
from kvmount.proto import v1alpha1_pb2_grpc as pb_grpc
from kvmount.provider.server import RUNTIME_NAME
from tests.image.archives import ARCHES, archive, built, manifest_and_config, unpack
from tests.image.test_image import KVMOUNT, TARGETS
from tests.support import peer_missing

BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
EM_AARCH64 = 183
# Emulated, on a loaded CI machine: importing grpc and azure takes a while.
START_TIMEOUT = 240


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", path
    return int.from_bytes(header[18:20], "little")


@pytest.fixture(scope="module")
def arm64_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = archive("kvmount", "arm64")
    enabled = BINFMT.is_file() and BINFMT.read_text().splitlines()[0] == "enabled"
    if not enabled:
        reason = f"{BINFMT} is not enabled: scripts/build-image registers qemu-user-static"
        peer_missing(reason)
    return unpack(path, tmp_path_factory.mktemp("arm64-root"))


def run(root: Path, *args: str, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
    # No PATH, no Python of the host's: only the image's files (and the host's /bin/sh for the wrapper).
    return subprocess.run(
        [str(root / KVMOUNT.lstrip("/")), *args],
        capture_output=True,
        text=True,
        env={"PATH": "/nonexistent"},
        timeout=timeout,
    )


def test_the_arm64_runtime_is_arm64_throughout(arm64_root: Path) -> None:
    binaries = [arm64_root / "opt/kvmount/bin/python3.11", *(arm64_root / "opt/kvmount/lib/ld").iterdir()]
    binaries += list((arm64_root / "opt/kvmount/lib/python3.11/site-packages/grpc/_cython").glob("*.so"))
    binaries.append((arm64_root / "bin/busybox").resolve())
    assert {p.name: elf_machine(p) for p in binaries} == {p.name: EM_AARCH64 for p in binaries}


def test_the_arm64_driver_answers_help_under_emulation(arm64_root: Path) -> None:
    done = run(arm64_root, "driver", "--help")
    assert done.returncode == 0, done.stderr
    assert "--endpoint" in done.stdout and "--provider-volume" in done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def arm64_provider(arm64_root: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    sock, log = tmp_path / "azure.sock", tmp_path / "provider.log"
    command = [
        str(arm64_root / KVMOUNT.lstrip("/")),
        *("provider", f"--endpoint=unix://{sock}"),
        *(f"--healthz-port={free_port()}", f"--prometheus-port={free_port()}"),
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={"PATH": "/nonexistent"}
        )
    yield process, log
    process.terminate()
    process.wait(timeout=60)


def test_the_arm64_provider_serves_its_socket_under_emulation(
    arm64_provider: tuple[subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    process, log = arm64_provider
    channel = grpc.insecure_channel(f"unix://{tmp_path / 'azure.sock'}")
    deadline = time.monotonic() + START_TIMEOUT
    # Ready means answering, not a socket file.
    while True:
        try:
            grpc.channel_ready_future(channel).result(timeout=0.5)
            break
        except grpc.FutureTimeoutError:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no answer in {START_TIMEOUT}s: {log.read_text()}"
    with channel:
        stub = pb_grpc.CSIDriverProviderStub(channel)
        response = stub.Version(pb.VersionRequest(version="v1alpha1"), timeout=60)
    assert response.version == "v1alpha1"
    assert response.runtime_name == RUNTIME_NAME
    process.terminate()
    assert process.wait(timeout=60) == 0, log.read_text()
    assert "Traceback" not in log.read_text()


def test_the_oci_layout_gives_every_target_one_index_of_both_architectures() -> None:
    layout = built("oci")
    assert json.loads((layout / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"
    index = _blob(layout, None)
    refs = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}
    assert set(refs) == {f"{t}:0.1.0" for t in TARGETS}
    # The very layers of the docker archives, whatever their compression here.
    layers = {arch: manifest_and_config(archive("kvmount", arch))[1]["rootfs"]["diff_ids"] for arch in ARCHES}
    for target, (subcommand, user) in TARGETS.items():
        entry = refs[f"{target}:0.1.0"]
        assert entry["mediaType"] == "application/vnd.oci.image.index.v1+json", target
        configs = {}
        for manifest in _blob(layout, entry["digest"])["manifests"]:
            config = _blob(layout, _blob(layout, manifest["digest"])["config"]["digest"])
            assert (config["os"], config["architecture"]) == (
                manifest["platform"]["os"],
                manifest["platform"]["architecture"],
            )
            configs[config["architecture"]] = config
        assert set(configs) == set(ARCHES), target
        for arch, config in configs.items():
            assert config["rootfs"]["diff_ids"] == layers[arch], (target, arch)
            assert config["config"]["Entrypoint"] == [KVMOUNT, *subcommand], (target, arch)
            assert config["config"]["User"] == user, (target, arch)


def _blob(layout: Path, digest: str | None) -> Any:
    """The layout's index (digest None) or a JSON blob of it."""
    path = layout / "index.json" if digest is None else layout / "blobs" / Path(*digest.split(":"))
    return json.loads(path.read_text())
