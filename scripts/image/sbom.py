"""Write the CycloneDX SBOM (JSON, spec 1.6) of a kvmount image from what is in it.

Run by scripts/build-image on the build host, with the standard library only
(nothing of it goes into the image), for each architecture:

    python3 sbom.py --archive kvmount.tar --pip-report pip-report.json \\
        --dpkg DPKG_DB --arch arm64 --output kvmount.cdx.json

It reads the image's files, not the build's intent:
- Python packages: every ``*.dist-info`` in the image's site-packages, with the
  sha256 of the very file pip installed, from pip's ``--report`` of the build
  (which names what was downloaded, after ``--require-hashes`` checked it). A
  package in the image that the report does not name stops the build; one the
  report names that the image does not hold (the asyncio stack
  relocatable_python.py drops) is not listed.
- Debian packages: each file of the image outside site-packages is looked up
  by its md5 in the builder's dpkg database (``status`` and ``info/*.md5sums``, saved by
  build-image): the loader, libc and libssl under /opt/kvmount/lib/ld, the
  interpreter, the standard library, busybox. A package is listed when at
  least one of its files is in the image.
The output carries no timestamp and its serial number derives from the image's
config digest, so one image always gets the same SBOM.
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import json
import posixpath
import re
import sys
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

SITE_PACKAGES = "opt/kvmount/lib/python3.11/site-packages/"
# Every empty file has this md5: it names no package.
EMPTY_MD5 = hashlib.md5(b"").hexdigest()
CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageFiles:
    config_digest: str
    md5: dict[str, str]  # path in the image -> md5 of its content
    metadata: dict[str, bytes]  # path of each dist-info's METADATA -> its bytes


def _md5(stream: Any) -> str:
    digest = hashlib.md5()
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _drop(files: dict[str, Any], path: str) -> None:
    for name in [n for n in files if n == path or n.startswith(path + "/")]:
        del files[name]


def _is_metadata(path: str) -> bool:
    return path.startswith(SITE_PACKAGES) and bool(
        re.fullmatch(r"[^/]+\.dist-info/METADATA", path.removeprefix(SITE_PACKAGES))
    )


def read_image(archive: Path) -> ImageFiles:
    """The image's regular files after applying its layers in order (docker archive)."""
    md5: dict[str, str] = {}
    metadata: dict[str, bytes] = {}
    with tarfile.open(archive) as outer:
        (manifest,) = json.load(_member(outer, "manifest.json"))
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=_member(outer, layer)) as inner:
                for entry in inner:
                    path = posixpath.normpath("/" + entry.name).lstrip("/")
                    directory, base = posixpath.split(path)
                    # Whiteouts: what a lower layer had and this one deletes.
                    if base == ".wh..wh..opq":
                        gone = directory
                    elif base.startswith(".wh."):
                        gone = posixpath.join(directory, base.removeprefix(".wh."))
                    else:
                        gone = ""
                    if gone:
                        _drop(md5, gone)
                        _drop(metadata, gone)
                        continue
                    content = inner.extractfile(entry) if entry.isfile() else None
                    if content is None:
                        continue
                    if _is_metadata(path):
                        metadata[path] = content.read()
                        md5[path] = hashlib.md5(metadata[path]).hexdigest()
                    else:
                        md5[path] = _md5(content)
    return ImageFiles(manifest["Config"].removesuffix(".json").split("/")[-1], md5, metadata)


def _member(tar: tarfile.TarFile, name: str) -> Any:
    member = tar.extractfile(name)
    if member is None:
        sys.exit(f"sbom: {name} is not a file in the archive")
    return member


def normalize(name: str) -> str:
    """PEP 503's normalized name, which is also the pypi purl's name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_installed(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(normalized name, version) -> pip's report entry of what it installed."""
    found = {}
    for item in report["install"]:
        meta = item["metadata"]
        found[(normalize(meta["name"]), meta["version"])] = item
    return found


def python_components(image: ImageFiles, report: dict[str, Any], project: str) -> list[dict[str, Any]]:
    installed = pip_installed(report)
    components = []
    for path, data in sorted(image.metadata.items()):
        meta = email.parser.BytesHeaderParser().parsebytes(data)
        name, version = str(meta["Name"]), str(meta["Version"])
        if normalize(name) == project:
            continue  # the image itself: metadata.component
        item = installed.get((normalize(name), version))
        if item is None:
            sys.exit(f"sbom: {path.removeprefix(SITE_PACKAGES)} is in the image but not in pip's report")
        info = item["download_info"]
        algorithm, _, digest = info["archive_info"]["hash"].partition("=")
        if algorithm != "sha256":
            sys.exit(f"sbom: {name} {version}: pip reported a {algorithm} hash, not sha256")
        purl = f"pkg:pypi/{normalize(name)}@{quote(version, safe='')}"
        components.append(
            {
                "type": "library",
                "bom-ref": purl,
                "name": name,
                "version": version,
                "purl": purl,
                "hashes": [{"alg": "SHA-256", "content": digest}],
                "externalReferences": [{"type": "distribution", "url": info["url"]}],
            }
        )
    return components


def dpkg_packages(db: Path) -> Iterator[dict[str, str]]:
    """The installed packages of a dpkg `status` file, as field -> value."""
    for stanza in db.joinpath("status").read_text().split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", stanza, re.MULTILINE))
        if fields.get("Status", "").endswith(" installed"):
            yield fields


def common_tail(a: str, b: str) -> int:
    """How many trailing path components two paths share."""
    count = 0
    for x, y in zip(reversed(a.split("/")), reversed(b.split("/")), strict=False):
        if x != y:
            break
        count += 1
    return count


def debian_components(image: ImageFiles, db: Path, arch: str) -> list[dict[str, Any]]:
    owners: dict[str, list[tuple[str, str]]] = {}  # md5 -> (package, its path)
    for sums in db.glob("info/*.md5sums"):
        package = sums.name.removesuffix(".md5sums").split(":")[0]
        for line in sums.read_text().splitlines():
            digest, _, path = line.partition("  ")
            owners.setdefault(digest, []).append((package, path))
    present: dict[str, int] = {}
    for path, digest in image.md5.items():
        # site-packages is pip's, named by the dist-infos: a Debian package that
        # vendors a file of the same bytes (pip's, setuptools') is not in the image.
        if digest == EMPTY_MD5 or path.startswith(SITE_PACKAGES) or digest not in owners:
            continue
        # Where packages ship the same bytes (the standard library's distutils and
        # setuptools' copy of it), the one whose path ends as this one's does.
        candidates = owners[digest]
        best = max(common_tail(path, owned) for _, owned in candidates)
        for package in {p for p, owned in candidates if common_tail(path, owned) == best}:
            present[package] = present.get(package, 0) + 1
    components = []
    for fields in sorted(dpkg_packages(db), key=lambda f: f["Package"]):
        name = fields["Package"]
        if name not in present:
            continue
        version = fields["Version"]
        # The source package is what Debian's security tracker lists advisories by.
        source = fields.get("Source", name).split()[0]
        qualifiers = f"arch={fields.get('Architecture', arch)}&distro=debian-12"
        if source != name:
            qualifiers += f"&upstream={quote(source, safe='')}"
        purl = f"pkg:deb/debian/{name}@{quote(version, safe='.-_~')}?{qualifiers}"
        components.append(
            {
                "type": "library",
                "bom-ref": purl,
                "name": name,
                "version": version,
                "purl": purl,
                "properties": [{"name": "kvmount:files-in-image", "value": str(present[name])}],
            }
        )
    return components


def sbom(image: ImageFiles, report: dict[str, Any], db: Path, arch: str) -> dict[str, Any]:
    project = "kvmount"
    headers = [email.parser.BytesHeaderParser().parsebytes(data) for data in image.metadata.values()]
    (version,) = [str(h["Version"]) for h in headers if normalize(str(h["Name"])) == project]
    components = python_components(image, report, project) + debian_components(image, db, arch)
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": uuid.uuid5(uuid.NAMESPACE_URL, f"sha256:{image.config_digest}").urn,
        "version": 1,
        "metadata": {
            "tools": {"components": [{"type": "application", "name": "kvmount scripts/image/sbom.py"}]},
            "component": {
                "type": "container",
                "bom-ref": "image",
                "name": project,
                "version": version,
                "properties": [
                    {"name": "kvmount:platform", "value": f"linux/{arch}"},
                    {"name": "kvmount:image-config", "value": f"sha256:{image.config_digest}"},
                ],
            },
        },
        "components": components,
        "dependencies": [{"ref": "image", "dependsOn": [c["bom-ref"] for c in components]}],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archive", type=Path, required=True, help="the image as a docker archive")
    p.add_argument("--pip-report", type=Path, required=True, help="`pip install --report` of the build")
    p.add_argument("--dpkg", type=Path, required=True, help="the builder's dpkg status and info/*.md5sums")
    p.add_argument("--arch", required=True, help="the image's Debian architecture (amd64, arm64)")
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args()
    report = json.loads(args.pip_report.read_text())
    document = sbom(read_image(args.archive), report, args.dpkg, args.arch)
    args.output.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
