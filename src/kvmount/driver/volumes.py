"""Per-volume state: what the driver needs to re-publish a live volume after a restart.

One JSON file per published target path under ``<state-dir>/volumes``. It
holds the publish request without its secrets: the service account tokens
are removed from the volume context, and the node-publish secret is never
stored (a re-publish reads it again, from the pod's nodePublishSecretRef or
from kubelet's next call).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field

from kvmount.base.json_file import write_json
from kvmount.csi.attributes import SA_TOKENS

log = logging.getLogger(__name__)


@dataclass
class VolumeState:
    volume_id: str
    target_path: str
    pod_name: str
    pod_namespace: str
    pod_uid: str
    service_account: str
    class_name: str
    provider: str
    volume_context: dict[str, str]
    volume_mount_group: str = ""
    object_versions: list[tuple[str, str]] = field(default_factory=list)
    # Wall-clock time of the last fetch, so kubelet's periodic re-publish knows when one is due.
    refreshed_at: float = 0.0
    # The pod's refresh annotation value last acted on (on-demand refresh).
    refresh_token: str = ""
    # A rollout of the pod's workload still due after a rotation changed the files (driver/restart.py).
    restart_pending: str = ""
    # The class's kvmount.io/rotation-poll-interval (seconds), if it sets one.
    rotation_interval: float | None = None

    def __post_init__(self) -> None:
        self.volume_context = {k: v for k, v in self.volume_context.items() if k != SA_TOKENS}


class VolumeRegistry:
    def __init__(self, state_dir: str) -> None:
        self.dir = os.path.join(state_dir, "volumes")

    def _path(self, target_path: str) -> str:
        digest = hashlib.sha256(target_path.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        return os.path.join(self.dir, f"{digest}.json")

    def save(self, state: VolumeState) -> None:
        write_json(self._path(state.target_path), asdict(state))

    def load(self, target_path: str) -> VolumeState | None:
        return self._read(self._path(target_path))

    def remove(self, target_path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(target_path))

    def all(self) -> list[VolumeState]:
        states = (self._read(p) for p in sorted(glob.glob(os.path.join(self.dir, "*.json"))))
        return [s for s in states if s is not None]

    def _read(self, path: str) -> VolumeState | None:
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
            doc["object_versions"] = [(str(i), str(v)) for i, v in doc.get("object_versions", [])]
            return VolumeState(**doc)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as err:
            log.warning("ignoring unreadable volume state", extra={"path": path, "error": str(err)})
            return None
