"""The archives scripts/build-image leaves under $KVMOUNT_CACHE/images, read as files.

amd64's at the top (TARGET.tar, kvmount.cdx.json), every other architecture's
in a folder of its name; the OCI layout in oci/ and the measured sizes in
sizes.json.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Any

from tests.support import peer_missing

IMAGES = Path(os.environ.get("KVMOUNT_CACHE", Path.home() / ".cache" / "kvmount")) / "images"
ARCHES = ("amd64", "arm64")


def built(name: str, arch: str = "amd64") -> Path:
    """A file of the build (an archive, the SBOM); skips, or fails under CI, when it is missing."""
    path = (IMAGES if arch == "amd64" else IMAGES / arch) / name
    if not path.exists():
        reason = f"{path} is missing: run scripts/build-image (scripts/peers/kvmount-image.sh under CI)"
        peer_missing(reason)
    return path


def archive(target: str, arch: str = "amd64") -> Path:
    return built(f"{target}.tar", arch)


def manifest_and_config(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    with tarfile.open(path) as tar:
        (manifest,) = json.load(member(tar, "manifest.json"))
        config: dict[str, Any] = json.load(member(tar, manifest["Config"]))
    return manifest, config


def member(tar: tarfile.TarFile, name: str) -> Any:
    extracted = tar.extractfile(name)
    assert extracted is not None, name
    return extracted


def unpack(path: Path, root: Path) -> Path:
    """An image's layers, unpacked in order into root."""
    manifest, _ = manifest_and_config(path)
    with tarfile.open(path) as outer:
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=member(outer, layer)) as inner:
                inner.extractall(root, filter="tar")
    return root
