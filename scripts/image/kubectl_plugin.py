"""`kubectl kvmount` for krew: an archive per architecture and the plugin manifest.

    python3 kubectl_plugin.py archive --image kvmount.tar --arch arm64 \\
        --requirements cli-requirements.txt --output kubectl-kvmount_v0.1.0_linux_arm64.tar.gz
    python3 kubectl_plugin.py manifest --version 0.1.0 --homepage URL --url-base URL \\
        --output kvmount.yaml ARCHIVE...

An archive is the image's /opt/kvmount (its own interpreter, libc and libraries:
scripts/image/relocatable_python.py) plus the `cli` extra, which the daemons'
image leaves out: the official Kubernetes client runs the exec credential
plugins of users' kubeconfigs (kubelogin). Those packages are the locked ones
(scripts/image/cli-requirements.txt, every file checked against its sha256),
the wheels of the archive's architecture, fetched by pip without running
anything of that architecture, so no emulation is needed. Files are sorted and
their times and owners fixed, so two builds of one image give the same bytes.

The manifest is krew's (krew.sigs.k8s.io, kind Plugin), one platform per
archive with its sha256; its URLs are where a release publishes the archives.
Standard library only (and pip).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = "opt/kvmount/"
SITE = "lib/python3.11/site-packages"
# The bundled loader is bookworm's glibc 2.36: any manylinux wheel up to that runs.
MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}
GLIBC_MINORS = range(17, 37)
# kubernetes>=35 ships an asyncio client (kubernetes/aio, ~40 MB) and requires aiohttp
# and its stack for it; doctor and validate use the synchronous client only.
ASYNC_ONLY = (
    "kubernetes/aio",
    "aiohttp",
    "aiohttp_retry",
    "aiohappyeyeballs",
    "aiosignal",
    "yarl",
    "multidict",
    "frozenlist",
    "propcache",
    "attr",
    "attrs",
)
# krew links bin/kubectl-kvmount into its own bin directory: the link is resolved to
# find the bundle. kubectl passes the plugin's arguments as they were typed.
WRAPPER = """#!/bin/sh
here="$(dirname "$(readlink -f "$0")")"
exec "$here/python3" -c 'import sys; from kvmount.cli import kubectl_main; sys.exit(kubectl_main())' "$@"
"""
DESCRIPTION = """\
Finds why a pod's Secrets Store CSI volume does not mount (kvmount doctor), and
checks SecretProviderClasses offline or in the cluster (kvmount validate), for
Azure Key Vault: objects, identities, permissions, the driver and provider.
  kubectl kvmount doctor --pod web-0 -n shop
  kubectl kvmount validate -f class.yaml
"""


def unpack_runtime(image: Path, into: Path) -> None:
    """The image's /opt/kvmount, from its docker archive's layers in order."""
    with tarfile.open(image) as outer:
        (manifest,) = json.load(_member(outer, "manifest.json"))
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=_member(outer, layer)) as inner:
                members = [m for m in inner if m.name.startswith(ROOT) and len(m.name) > len(ROOT)]
                for m in members:
                    m.name = m.name[len(ROOT) :]
                inner.extractall(into, members=members, filter="tar")


def _member(tar: tarfile.TarFile, name: str) -> Any:
    member = tar.extractfile(name)
    assert member is not None, name
    return member


def add_cli_extra(runtime: Path, arch: str, requirements: Path) -> None:
    machine = MACHINE[arch]
    platforms = [f"--platform=manylinux_2_{minor}_{machine}" for minor in GLIBC_MINORS]
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [
                sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--no-deps",
                "--only-binary=:all:", "--require-hashes", "--root-user-action=ignore",
                "--python-version=3.11", "--implementation=cp", "--abi=cp311", *platforms, "--platform=any",
                "--target", scratch, "-r", str(requirements),
            ],
            check=True,
        )  # fmt: skip
        site = runtime / SITE
        for entry in sorted(Path(scratch).iterdir()):
            # The runtime's own packages are the same pins (the lock is constrained by
            # the image's): the image's copies, with their bytecode, stay.
            if entry.name != "bin" and not (site / entry.name).exists():
                shutil.move(str(entry), site / entry.name)
    for name in ASYNC_ONLY:
        shutil.rmtree(site / name, ignore_errors=True)
        for info in site.glob(f"{name}-*.dist-info"):
            shutil.rmtree(info)
    plugin = runtime / "bin" / "kubectl-kvmount"
    plugin.write_text(WRAPPER)
    plugin.chmod(0o755)


def write_archive(tree: Path, output: Path) -> None:
    """tree's files under kubectl-kvmount/, sorted, owned by root, dated 1970."""

    def fixed(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted([tree, *tree.rglob("*")]):
            name = Path("kubectl-kvmount", path.relative_to(tree)).as_posix()
            tar.add(path, arcname=name, recursive=False, filter=fixed)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as zipped:
        zipped.write(buffer.getvalue())


ARCHIVE_NAME = re.compile(r"^kubectl-kvmount_v(?P<version>[^_]+)_linux_(?P<arch>amd64|arm64)\.tar\.gz$")


def manifest(version: str, homepage: str, url_base: str, archives: list[Path]) -> str:
    """krew's Plugin manifest as YAML text (written by hand: no YAML library needed)."""
    lines = [
        "apiVersion: krew.googlecontainertools.github.com/v1alpha2",
        "kind: Plugin",
        "metadata:",
        "  name: kvmount",
        "spec:",
        f"  version: v{version}",
        f"  homepage: {homepage}",
        "  shortDescription: Diagnose and validate Azure Key Vault CSI volumes",
        "  description: |",
        *(f"    {line}" for line in DESCRIPTION.splitlines()),
        "  platforms:",
    ]
    for archive in sorted(archives):
        match = ARCHIVE_NAME.match(archive.name)
        if match is None or match["version"] != version:
            sys.exit(f"kubectl_plugin: {archive.name} is not kubectl-kvmount_v{version}_linux_ARCH.tar.gz")
        lines += [
            "    - selector:",
            "        matchLabels:",
            "          os: linux",
            f"          arch: {match['arch']}",
            f"      uri: {url_base.rstrip('/')}/{archive.name}",
            f"      sha256: {hashlib.sha256(archive.read_bytes()).hexdigest()}",
            "      files:",
            '        - from: "kubectl-kvmount/*"',
            '          to: "."',
            "      bin: bin/kubectl-kvmount",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("archive")
    a.add_argument("--image", type=Path, required=True, help="the kvmount image's docker archive")
    a.add_argument("--arch", choices=sorted(MACHINE), required=True)
    a.add_argument("--requirements", type=Path, required=True, help="the cli extra's lock")
    a.add_argument("--output", type=Path, required=True)
    m = sub.add_parser("manifest")
    m.add_argument("--version", required=True)
    m.add_argument("--homepage", required=True)
    m.add_argument("--url-base", required=True, help="where the release publishes the archives")
    m.add_argument("--output", type=Path, required=True)
    m.add_argument("archives", type=Path, nargs="+")
    args = p.parse_args()
    if args.command == "archive":
        with tempfile.TemporaryDirectory() as work:
            tree = Path(work) / "kubectl-kvmount"
            unpack_runtime(args.image, tree)
            add_cli_extra(tree, args.arch, args.requirements)
            write_archive(tree, args.output)
    else:
        args.output.write_text(manifest(args.version, args.homepage, args.url_base, args.archives))


if __name__ == "__main__":
    main()
