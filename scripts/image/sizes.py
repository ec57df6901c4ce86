"""Measure each architecture's kvmount image, as scripts/build-image left it.

    python3 sizes.py --images DIR --reference kvmount:0.1.0 --output sizes.json

Per architecture: ``unpacked``, the bytes of the image's regular files (what a
node's disk holds; from the docker archive), and ``compressed``, the bytes of
its gzip layers (what a node downloads from a registry; from the OCI layout's
image index). The README and docs/install.md quote these; tests/image checks
that they still do. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path
from typing import Any

INDEX_REF = "org.opencontainers.image.ref.name"


def unpacked_bytes(archive: Path) -> int:
    sizes: dict[str, int] = {}
    with tarfile.open(archive) as outer:
        (manifest,) = json.load(_member(outer, "manifest.json"))
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=_member(outer, layer)) as inner:
                sizes.update((e.name, e.size) for e in inner if e.isfile())
    return sum(sizes.values())


def _member(tar: tarfile.TarFile, name: str) -> Any:
    member = tar.extractfile(name)
    assert member is not None, name
    return member


def _blob(layout: Path, digest: str) -> Any:
    algorithm, _, hexdigest = digest.partition(":")
    return _json(layout / "blobs" / algorithm / hexdigest)


def compressed_bytes(layout: Path, reference: str) -> dict[str, int]:
    """Architecture -> the sum of its image's layer blobs, from the reference's image index."""
    index = _json(layout / "index.json")
    (entry,) = [m for m in index["manifests"] if m["annotations"][INDEX_REF] == reference]
    found = {}
    for manifest in _blob(layout, entry["digest"])["manifests"]:
        layers = _blob(layout, manifest["digest"])["layers"]
        found[manifest["platform"]["architecture"]] = sum(layer["size"] for layer in layers)
    return found


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, required=True, help="build-image's output directory")
    p.add_argument("--reference", required=True, help="the general image's name:tag in the OCI layout")
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args()
    images: Path = args.images
    name = args.reference.split(":")[0]
    compressed = compressed_bytes(images / "oci", args.reference)
    sizes = {}
    for arch, gzip_bytes in sorted(compressed.items()):
        archive = images / f"{name}.tar" if arch == "amd64" else images / arch / f"{name}.tar"
        sizes[arch] = {"unpacked": unpacked_bytes(archive), "compressed": gzip_bytes}
    args.output.write_text(json.dumps(sizes, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
