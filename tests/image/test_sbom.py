"""What scripts/build-image writes beside the archives: each architecture's CycloneDX SBOM, and the sizes
the README and docs/install.md quote."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL
from packaging.utils import canonicalize_name

from tests.image.archives import ARCHES, archive, built
from tests.image.test_lock import IMAGE, REPO, hashes, pins

SITE_PACKAGES = "opt/kvmount/lib/python3.11/site-packages/"
# Debian's files that make the runtime: loader and libc, libssl, the interpreter, its library, busybox.
DEBIAN = {
    "libc6",
    "libssl3",
    "libffi8",
    "zlib1g",
    "python3.11-minimal",
    "libpython3.11-stdlib",
    "busybox-static",
}
MB = 1_000_000


def dists_in_image(path: Path) -> dict[str, str]:
    """name -> version of every *.dist-info in the image's site-packages."""
    found: dict[str, str] = {}
    with tarfile.open(path) as outer:
        for layer in json.load(outer.extractfile("manifest.json"))[0]["Layers"]:  # type: ignore[arg-type]
            with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
                for name in inner.getnames():
                    m = re.fullmatch(rf"(?:\./)?{SITE_PACKAGES}([^/]+)-([^-/]+)\.dist-info", name.rstrip("/"))
                    if m:
                        found[canonicalize_name(m[1])] = m[2]
    return found


@pytest.mark.parametrize("arch", ARCHES)
def test_the_sbom_is_cyclonedx_and_names_every_package_of_the_image(arch: str) -> None:
    text = built("kvmount.cdx.json", arch).read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    bom = json.loads(text)
    assert bom["metadata"]["component"]["version"] == "0.1.0"
    components = bom["components"]
    pypi = {c["name"]: c for c in components if c["purl"].startswith("pkg:pypi/")}
    deb = {c["name"]: c for c in components if c["purl"].startswith("pkg:deb/debian/")}
    assert len(pypi) + len(deb) == len(components)

    # Python: what is in the image, at the locked version, with the hash of a file the lock allows.
    in_image = dists_in_image(archive("kvmount", arch))
    assert in_image.pop("kvmount") == "0.1.0"
    assert {canonicalize_name(n): c["version"] for n, c in pypi.items()} == in_image
    pinned, allowed = pins(IMAGE / "requirements.txt"), hashes(IMAGE / "requirements.txt")
    for name, component in pypi.items():
        key = canonicalize_name(name)
        assert component["version"] == str(pinned[key]), name
        (sha256,) = [h["content"] for h in component["hashes"] if h["alg"] == "SHA-256"]
        assert sha256 in allowed[key], f"{name}: installed a file the lock does not allow"

    # Debian: the runtime's packages, for this architecture, with their versions.
    assert set(deb) >= DEBIAN, DEBIAN - set(deb)
    for name, component in deb.items():
        purl = PackageURL.from_string(component["purl"])
        assert (purl.name, purl.version) == (name, component["version"])
        assert purl.qualifiers["arch"] in (arch, "all"), name
    # Build tools stayed in the builder.
    assert not {"pip", "setuptools", "wheel", "python3-pip", "dpkg", "apt"} & (set(pypi) | set(deb))


def quoted_sizes(path: Path) -> dict[str, tuple[int, int]]:
    """arch -> (unpacked, compressed) MB, from `linux/ARCH: N MB unpacked, N MB compressed`."""
    found = re.findall(r"linux/(\w+)\**:? (\d+) MB unpacked,? (\d+) MB compressed", path.read_text())
    return {arch: (int(unpacked), int(compressed)) for arch, unpacked, compressed in found}


@pytest.mark.parametrize("doc", ["README.md", "docs/install.md"])
def test_the_docs_quote_the_sizes_the_build_measured(doc: str) -> None:
    measured = json.loads(built("sizes.json").read_text())
    assert set(measured) == set(ARCHES)
    quoted = quoted_sizes(REPO / doc)
    for arch, sizes in measured.items():
        wanted = (round(sizes["unpacked"] / MB), round(sizes["compressed"] / MB))
        assert arch in quoted, f"{doc} does not quote linux/{arch}'s size: {wanted} MB"
        # Within 2 MB: a patch release of a dependency should not make the docs wrong.
        assert all(abs(q - w) <= 2 for q, w in zip(quoted[arch], wanted, strict=True)), (
            f"{doc} quotes linux/{arch} as {quoted[arch]} MB (unpacked, compressed); "
            f"scripts/build-image measured {wanted}"
        )
