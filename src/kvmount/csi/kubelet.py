"""kubelet's naming of an inline CSI volume: its id and its target path.

The driver's rotation needs the id kubelet would give a volume; the stand-in
kubelet (``standin_kubelet``) and the tests build publishes with both.
"""

from __future__ import annotations

import hashlib
import os

DRIVER = "secrets-store.csi.k8s.io"


def volume_id(pod_uid: str, volume_name: str) -> str:
    """kubelet's id of an inline volume: csi-<sha256 of pod uid + volume name>."""
    return "csi-" + hashlib.sha256(f"{pod_uid}{volume_name}".encode()).hexdigest()


def target_path(kubelet_dir: str, pod_uid: str, volume_name: str) -> str:
    return os.path.join(kubelet_dir, "pods", pod_uid, "volumes", "kubernetes.io~csi", volume_name, "mount")
