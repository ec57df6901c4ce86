"""The images scripts/build-image leaves as docker archives (what `ctr images import` loads).

Read as files, no container runtime: each archive's manifest and config, and the
layers unpacked into a temporary directory, whose /opt/kvmount must run here
by itself (its own loader, libc and interpreter), as it does on a node.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.image.archives import archive, manifest_and_config, unpack

# target -> (entrypoint after the kvmount command, user)
TARGETS = {
    "kvmount": ([], "65532:65532"),
    "kvmount-driver": (["driver"], "0:0"),
    "kvmount-provider": (["provider"], "65532:65532"),
    "kvmount-registrar": (["registrar"], "0:0"),
    "kvmount-livenessprobe": (["livenessprobe"], "0:0"),
    "kvmount-flexvolume": (["flexvolume"], "0:0"),
    "kvmount-kms": (["kms"], "65532:65532"),
}
KVMOUNT = "/opt/kvmount/bin/kvmount"
# Unpacked; measured 103 MB without the kubernetes package (docs/install.md; test_sbom.py keeps it true).
# A jump past this is a regression.
MAX_BYTES = 130 * 1024 * 1024


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The general image's layers, unpacked in order."""
    return unpack(archive("kvmount"), tmp_path_factory.mktemp("image-root"))


def test_targets_are_the_same_layers_with_their_own_entrypoint() -> None:
    # amd64's archives; every architecture's targets: test_multiarch.py, from the OCI layout.
    layers = set()
    for target, (subcommand, user) in TARGETS.items():
        manifest, config = manifest_and_config(archive(target))
        assert (config["os"], config["architecture"]) == ("linux", "amd64")
        # What a pod's `image: <target>:0.1.0` means once `ctr images import` loaded the archive.
        assert f"docker.io/library/{target}:0.1.0" in manifest["RepoTags"]
        assert config["config"]["Entrypoint"] == [KVMOUNT, *subcommand]
        assert config["config"]["User"] == user
        layers.add(tuple(config["rootfs"]["diff_ids"]))
    assert len(layers) == 1, "the targets must share every layer"


def test_the_runtime_runs_by_itself_and_holds_only_what_runs(rootfs: Path) -> None:
    # No PATH, no Python of the host's: only the image's files.
    env = {"PATH": "/nonexistent"}
    done = subprocess.run(
        [str(rootfs / KVMOUNT.lstrip("/")), "--version"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0 and done.stdout.strip() == "kvmount 0.1.0", done.stderr
    imports = "ssl, ctypes, grpc, urllib3, cryptography.hazmat.bindings._rust"
    code = f"import {imports}; print(ssl.OPENSSL_VERSION)"
    python = rootfs / "opt/kvmount/bin/python3"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("OpenSSL"), done.stderr
    site = rootfs / "opt/kvmount/lib/python3.11/site-packages"
    # kubernetes (with pydantic and oauthlib) is the workstation tools' `cli` extra: no daemon uses it.
    tools = ("pip", "setuptools", "grpc_tools", "pytest", "mypy", "aiohttp")
    for absent in (*tools, "kubernetes", "pydantic", "pydantic_core", "oauthlib"):
        assert not (site / absent).exists(), absent
    assert not (rootfs / "opt/kvmount/lib/python3.11/test").exists(), "the standard library's tests"
    compilers = [p for p in rootfs.rglob("*") if p.name in ("gcc", "cc", "cc1", "ld.bfd")]
    assert not compilers
    size = sum(p.lstat().st_size for p in rootfs.rglob("*") if p.is_file() and not p.is_symlink())
    assert size < MAX_BYTES, f"{size / 1048576:.0f} MB"
