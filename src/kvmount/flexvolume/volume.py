"""mount and unmount of one volume: a tmpfs holding the Key Vault objects as files.

Everything is fetched before anything is mounted, so a bad option or a Key
Vault error leaves the target untouched; a failure after the tmpfs is mounted
unmounts it again. The target must be a real directory below the kubelet root,
reached without following links (volume/target.py), as in the CSI driver.
"""

from __future__ import annotations

import logging
import time

from kvmount.flexvolume.options import parse_json, translate
from kvmount.keyvault import KeyVaultMounter, Settings
from kvmount.volume.atomic_writer import AtomicWriter, Payload
from kvmount.volume.target import DEFAULT_KUBELET_ROOT, KubeletRoot

log = logging.getLogger(__name__)

DEFAULT_MODE = 0o644
# Key Vault objects are small (a secret is at most 25 KiB); unused tmpfs space costs nothing.
TMPFS_SIZE = 32 * 1024 * 1024


def kubelet_root(path: str | None) -> KubeletRoot:
    return KubeletRoot(path or DEFAULT_KUBELET_ROOT)


def mount(target: str, raw_options: str, root: KubeletRoot, timeout: float) -> None:
    """Mount the volume; its Key Vault reads end ``timeout`` seconds from now."""
    deadline = time.monotonic() + timeout
    flex = translate(parse_json(raw_options))
    with root.open(target) as existing:
        if existing is not None and existing.is_mounted():
            # kubelet retries a mount it thinks failed; the first one's content stays.
            log.info("already mounted", extra={"target": target})
            return
    # One process serves one call, so the mounter (and its NMI port) is per volume.
    mounter = KeyVaultMounter(Settings(nmi_port=flex.nmi_port))
    try:
        result = mounter.mount_attributes(flex.attributes, flex.secrets, DEFAULT_MODE, deadline=deadline)
    finally:
        mounter.close()
    with root.open(target, create=True) as opened:
        assert opened is not None  # created
        opened.mount_tmpfs(TMPFS_SIZE)
        try:
            AtomicWriter(opened.path).write(Payload(f.path, f.mode, f.contents) for f in result.files)
        except BaseException:
            opened.unmount()
            raise
    log.info(
        "mounted",
        extra={
            "target": target,
            "vault": flex.attributes["keyvaultName"],
            "objects": [f"{object_id}@{version}" for object_id, version in result.versions],
        },
    )


def unmount(target: str, root: KubeletRoot) -> None:
    with root.open(target) as opened:
        if opened is not None and opened.unmount():
            log.info("unmounted", extra={"target": target})
        else:
            log.info("not mounted", extra={"target": target})
