"""The SecretProviderClassPodStatus of one mounted volume, and the pod an event is about and its type."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kvmount.kube.classes import GROUP
from kvmount.kube.objects import PodStatusObject

POD_STATUSES = "secretproviderclasspodstatuses"
NODE_LABEL = "internal.secrets-store.csi.k8s.io/node-name"


@dataclass(frozen=True)
class PodStatus:
    """What a SecretProviderClassPodStatus records about one mounted volume."""

    pod_name: str
    namespace: str
    pod_uid: str
    class_name: str
    target_path: str
    node_name: str
    objects: list[tuple[str, str]]
    mounted: bool = True

    @property
    def name(self) -> str:
        return f"{self.pod_name}-{self.namespace}-{self.class_name}"

    def manifest(self) -> PodStatusObject:
        return {
            "apiVersion": f"{GROUP}/v1",
            "kind": "SecretProviderClassPodStatus",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {NODE_LABEL: self.node_name},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Pod", "name": self.pod_name, "uid": self.pod_uid}
                ],
            },
            "status": {
                "podName": self.pod_name,
                "secretProviderClassName": self.class_name,
                "mounted": self.mounted,
                "targetPath": self.target_path,
                # One entry per id, as upstream lists them (an object mounted under two
                # aliases is one object); the last version of an id wins, as in its map.
                "objects": [{"id": i, "version": v} for i, v in sorted(dict(self.objects).items())],
            },
        }


def same_status(current: PodStatusObject, body: PodStatusObject) -> bool:
    """Whether the stored ``current`` already says what ``body`` would write."""
    meta = current.get("metadata", {})
    return bool(
        current.get("status") == body["status"]
        and meta.get("labels") == body["metadata"]["labels"]
        and meta.get("ownerReferences") == body["metadata"]["ownerReferences"]
    )


class EventType(StrEnum):
    """The two types the API takes; each component's reasons are its own StrEnum."""

    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class PodRef:
    """The object an event is about: a pod, unless ``kind`` says otherwise."""

    namespace: str
    name: str
    uid: str
    kind: str = "Pod"
    api_version: str = "v1"
