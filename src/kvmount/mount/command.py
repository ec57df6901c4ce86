"""`kvmount mount`: a SecretProviderClass mounted into a directory, no Kubernetes.

The same Key Vault pipeline as the provider, without gRPC: read the class (and
the node-publish secret for the service-principal mode) from files, fetch,
convert, and write the files atomically into the target directory.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import yaml

from kvmount.base import yamlread
from kvmount.base.flags import add_bool, positive_duration
from kvmount.base.logs import JsonShape, setup_logging
from kvmount.keyvault import ContentOptions, KeyVaultError, KeyVaultMounter, Settings, parse_permission

log = logging.getLogger(__name__)

# --mount-timeout: as long as kubelet gives a CSI or FlexVolume mount.
DEFAULT_MOUNT_TIMEOUT = 120.0


class InputError(Exception):
    """A file given on the command line cannot be used."""


def _load_yaml(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return yamlread.read(lambda: yaml.safe_load(fh))
    except OSError as err:
        raise InputError(f"{what} {path!r}: {err.strerror}") from None
    except yamlread.Unreadable as err:
        raise InputError(f"{what} {path!r}: {err}") from None


def _as_text(value: object) -> str:
    # Unquoted YAML scalars (true, 3) mean the same as their quoted forms to upstream.
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def class_parameters(doc: object, path: str) -> dict[str, str]:
    """spec.parameters of a SecretProviderClass for the azure provider."""
    if not isinstance(doc, dict) or doc.get("kind") != "SecretProviderClass":
        raise InputError(f"class {path!r}: not a SecretProviderClass (kind: SecretProviderClass)")
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise InputError(f"class {path!r}: spec must be a mapping with provider and parameters")
    provider = spec.get("provider")
    if provider != "azure":
        raise InputError(f"class {path!r}: spec.provider is {provider!r}; kvmount mount serves 'azure'")
    params = spec.get("parameters") or {}
    if not isinstance(params, dict):
        raise InputError(f"class {path!r}: spec.parameters must be a mapping")
    return {str(k): _as_text(v) for k, v in params.items()}


def secret_data(doc: object, path: str) -> dict[str, str]:
    """A Kubernetes Secret (data base64, stringData) or a plain mapping of strings."""
    if not isinstance(doc, dict):
        raise InputError(f"secrets {path!r}: must be a mapping or a Kubernetes Secret")
    if doc.get("kind") != "Secret":
        return {str(k): _as_text(v) for k, v in doc.items()}
    for field in ("data", "stringData"):
        if not isinstance(doc.get(field) or {}, dict):
            raise InputError(f"secrets {path!r}: {field} must be a mapping of keys to values")
    data: dict[str, str] = {}
    for key, value in (doc.get("data") or {}).items():
        try:
            data[str(key)] = base64.b64decode(str(value), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise InputError(f"secrets {path!r}: data.{key} is not base64 of UTF-8 text") from None
    data.update({str(k): _as_text(v) for k, v in (doc.get("stringData") or {}).items()})
    return data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--class", dest="spc", required=True, help="SecretProviderClass YAML file")
    parser.add_argument("--target", required=True, help="directory to write the files into")
    parser.add_argument("--secrets", help="node-publish secret (Kubernetes Secret YAML or mapping)")
    parser.add_argument("--permission", default="0644", help="default file mode, octal")
    add_bool(parser, "--construct-pem-chain", True, "order certificate chains leaf -> root")
    add_bool(parser, "--write-cert-and-key-in-separate-files", False, "also write <file>.crt and .key")
    parser.add_argument("--cloud-name", default="", help="default cloud when the class sets no cloudName")
    parser.add_argument(
        "--mount-timeout",
        type=positive_duration,
        default=DEFAULT_MOUNT_TIMEOUT,
        help="time the Key Vault reads of the mount may take in all (default 2m)",
    )
    add_bool(parser, "--log-format-json", False, "log as JSON lines")


def mount(args: argparse.Namespace) -> list[str]:
    from kvmount.volume.atomic_writer import AtomicWriter, Payload
    from kvmount.volume.mounts import MEMORY_FILESYSTEMS, filesystem_of

    params = class_parameters(_load_yaml(args.spc, "class"), args.spc)
    secrets: Mapping[str, str] | None = None
    if args.secrets:
        secrets = secret_data(_load_yaml(args.secrets, "secrets"), args.secrets)
    mode = parse_permission("--permission", args.permission)
    settings = Settings(
        content=ContentOptions(args.construct_pem_chain, args.write_cert_and_key_in_separate_files),
        default_cloud=args.cloud_name,
    )
    mounter = KeyVaultMounter(settings)
    try:
        result = mounter.mount_attributes(
            params, secrets, mode, deadline=time.monotonic() + args.mount_timeout
        )
    finally:
        mounter.close()
    os.makedirs(args.target, exist_ok=True)
    kind = filesystem_of(args.target)
    if kind not in MEMORY_FILESYSTEMS:
        # Unlike the driver's tmpfs, these files outlive a reboot; their modes are as requested.
        log.warning(
            "target is not memory-backed: the files are stored on disk; mount a tmpfs there to keep "
            "them in memory",
            extra={"target": args.target, "filesystem": kind or "unknown"},
        )
    AtomicWriter(args.target).write(Payload(f.path, f.mode, f.contents) for f in result.files)
    return sorted(f.path for f in result.files)


def run(args: argparse.Namespace) -> int:
    setup_logging(json_shape=JsonShape.DRIVER if args.log_format_json else None)
    try:
        paths = mount(args)
    except (InputError, KeyVaultError, ValueError, OSError) as err:
        print(f"kvmount mount: {err}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0
