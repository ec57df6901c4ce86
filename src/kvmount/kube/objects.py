"""The Kubernetes objects kvmount walks, typed field by field as the API serves them.

Only the fields kvmount reads or writes are named. Every field may be missing
(``total=False``): the API server omits empty ones, and another writer (an
older driver, upstream's) may leave some out, so readers use ``.get`` with a
default. The API's JSON is taken as these types where it is read; nothing
here checks it.
"""

from __future__ import annotations

from typing import Any, TypedDict


class OwnerReference(TypedDict, total=False):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    resourceVersion: str
    generation: int
    labels: dict[str, str]
    annotations: dict[str, str]
    ownerReferences: list[OwnerReference]


class LocalObjectReference(TypedDict, total=False):
    name: str


class CSIVolumeSource(TypedDict, total=False):
    driver: str
    readOnly: bool
    volumeAttributes: dict[str, str]
    nodePublishSecretRef: LocalObjectReference


class Volume(TypedDict, total=False):
    name: str
    csi: CSIVolumeSource


class PodSpec(TypedDict, total=False):
    nodeName: str
    serviceAccountName: str
    volumes: list[Volume]


class Pod(TypedDict, total=False):
    metadata: ObjectMeta
    spec: PodSpec


class PodWatchEvent(TypedDict, total=False):
    type: str
    object: Pod


class PodTemplate(TypedDict, total=False):
    metadata: ObjectMeta


class WorkloadSpec(TypedDict, total=False):
    template: PodTemplate


class Workload(TypedDict, total=False):
    """A Deployment, StatefulSet, DaemonSet or ReplicaSet, as far as a rollout needs it."""

    metadata: ObjectMeta
    spec: WorkloadSpec


class TokenRequest(TypedDict, total=False):
    audience: str
    expirationSeconds: int


class CSIDriverSpec(TypedDict, total=False):
    tokenRequests: list[TokenRequest]
    requiresRepublish: bool


class CSIDriver(TypedDict, total=False):
    metadata: ObjectMeta
    spec: CSIDriverSpec


class Secret(TypedDict, total=False):
    metadata: ObjectMeta
    type: str
    data: dict[str, str]  # base64, as the API carries it


class TokenRequestStatus(TypedDict, total=False):
    token: str
    expirationTimestamp: str


class TokenRequestAnswer(TypedDict, total=False):
    status: TokenRequestStatus


class SecretProviderClassSpec(TypedDict, total=False):
    provider: str
    parameters: dict[str, str]
    # Checked entry by entry where Secrets are synced (secretsync/).
    secretObjects: list[dict[str, Any]]


class SecretProviderClassObject(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: SecretProviderClassSpec


class ObjectVersion(TypedDict, total=False):
    id: str
    version: str


class PodStatusStatus(TypedDict, total=False):
    podName: str
    secretProviderClassName: str
    mounted: bool
    targetPath: str
    objects: list[ObjectVersion]


class PodStatusObject(TypedDict, total=False):
    """A SecretProviderClassPodStatus."""

    apiVersion: str
    kind: str
    metadata: ObjectMeta
    status: PodStatusStatus
