"""A NodePublishVolume request as the publisher sees it: checked fields, the pod it is for,
what the provider is sent, and the one error type of a failed call with its reasons' gRPC codes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import assert_never

import grpc

from kvmount.base import numbers
from kvmount.csi.attributes import POD_NAME, POD_NAMESPACE, POD_UID, SA_NAME, SA_TOKENS
from kvmount.csi.provider_client import CODES as PROVIDER_CODES
from kvmount.csi.provider_client import ProviderError, ProviderReason
from kvmount.kube.classes import SecretProviderClass
from kvmount.kube.errors import StoreError, StoreReason
from kvmount.kube.names import name_problem
from kvmount.kube.podstatus import PodRef
from kvmount.volume.target import OutsideRoot, TargetError

CLASS_KEY = "secretProviderClass"
# The default file mode sent to providers, as a JSON decimal (0644).
PERMISSION = "420"
# kubelet gives a CSI call two minutes; without a deadline the driver assumes the same.
DEFAULT_TIMEOUT = 120.0
# The largest group id; 2^32 - 1 means "no change" to chown.
MAX_GID = 2**32 - 2


class PublishReason(StrEnum):
    """Why the driver itself failed a call: a metric label."""

    # One label for a bad request, whether the driver's checks or the store's refuse it.
    INVALID_REQUEST = StoreReason.INVALID_REQUEST.value
    FAILED_TO_MOUNT = "FailedToMount"
    INVALID_PROVIDER_FILES = "InvalidProviderFiles"
    FILE_WRITE_ERROR = "FileWriteError"
    INTERNAL = "Internal"


# Why a call failed: the driver's own reasons, and those of the store and the provider it passes on.
Reason = PublishReason | StoreReason | ProviderReason

# The gRPC code of each reason, unless the failure's cause says otherwise (a full disk, a busy mount).
PUBLISH_CODES = {
    PublishReason.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    PublishReason.FAILED_TO_MOUNT: grpc.StatusCode.INTERNAL,
    PublishReason.INVALID_PROVIDER_FILES: grpc.StatusCode.INTERNAL,
    PublishReason.FILE_WRITE_ERROR: grpc.StatusCode.INTERNAL,
    PublishReason.INTERNAL: grpc.StatusCode.INTERNAL,
}
STORE_CODES = {
    StoreReason.CLASS_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    StoreReason.INVALID_CLASS: grpc.StatusCode.FAILED_PRECONDITION,
    StoreReason.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    StoreReason.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    StoreReason.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    # Read by rotation only, which answers no call.
    StoreReason.NODE_PUBLISH_SECRET_NOT_FOUND: grpc.StatusCode.UNAVAILABLE,
    StoreReason.SERVICE_ACCOUNT_NOT_FOUND: grpc.StatusCode.UNAVAILABLE,
}


def grpc_code(reason: Reason) -> grpc.StatusCode:
    """The gRPC code a call failed for ``reason`` answers, from its boundary's table."""
    match reason:
        case PublishReason():
            return PUBLISH_CODES[reason]
        case StoreReason():
            return STORE_CODES[reason]
        case ProviderReason():
            return PROVIDER_CODES[reason]
        case _:
            assert_never(reason)


class PublishError(Exception):
    """A failed call: a closed-set reason for metrics, a message for the user, and its gRPC code."""

    def __init__(self, reason: Reason, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = grpc_code(reason) if code is None else code


@dataclass(frozen=True)
class VolumeRequest:
    """A checked NodePublishVolume request."""

    volume_id: str
    target_path: str
    volume_context: Mapping[str, str]
    secrets: Mapping[str, str] = field(repr=False)
    volume_mount_group: str = ""


@dataclass
class Pod:
    name: str
    namespace: str
    uid: str
    service_account: str

    @property
    def ref(self) -> PodRef:
        return PodRef(self.namespace, self.name, self.uid)


def parse_pod(context: Mapping[str, str]) -> Pod:
    missing = [k for k in (POD_NAME, POD_NAMESPACE, POD_UID) if not context.get(k)]
    if missing:
        raise PublishError(
            PublishReason.INVALID_REQUEST,
            f"volume_context lacks {', '.join(missing)}: set podInfoOnMount: true in the CSIDriver object",
        )
    check_name(POD_NAME, context[POD_NAME])
    check_name(POD_NAMESPACE, context[POD_NAMESPACE], label=True)
    return Pod(context[POD_NAME], context[POD_NAMESPACE], context[POD_UID], context.get(SA_NAME, ""))


def check_name(key: str, value: str, label: bool = False) -> None:
    """Refuse a volume_context name the API server would refuse (it may become a path)."""
    problem = name_problem(f"volume_context {key}", value, label)
    if problem:
        raise PublishError(PublishReason.INVALID_REQUEST, problem)


def pod_ref(context: Mapping[str, str]) -> PodRef | None:
    """The pod an event can name, when the request says which."""
    try:
        return parse_pod(context).ref
    except PublishError:
        return None


def parse_gid(group: str) -> int | None:
    if not group:
        return None
    try:
        return numbers.decimal(group, 0, MAX_GID)  # a gid chown can set
    except numbers.NumberError:
        raise PublishError(
            PublishReason.INVALID_REQUEST,
            f"volume_capability.mount.volume_mount_group {group[:32]!r} is not a numeric group id "
            f"(0 to {MAX_GID}); set the pod's fsGroup to one",
        ) from None


def secrets_with_tokens(req: VolumeRequest) -> dict[str, str]:
    """The request's secrets plus the service account tokens, which kubelet puts in the
    secrets (serviceAccountTokenInSecrets) or else in the volume context."""
    secrets = dict(req.secrets)
    tokens = secrets.get(SA_TOKENS) or req.volume_context.get(SA_TOKENS)
    if tokens:
        secrets[SA_TOKENS] = tokens
    return secrets


def provider_payload(spc: SecretProviderClass, req: VolumeRequest) -> tuple[dict[str, str], dict[str, str]]:
    """The attributes and secrets a provider gets.

    Attributes: the class parameters overlaid with every volume attribute
    kubelet sent (pod info included), plus the service account tokens.
    Secrets: the node-publish secret alone.
    """
    attributes = dict(spc.parameters)
    attributes.update(req.volume_context)
    secrets = secrets_with_tokens(req)
    tokens = secrets.pop(SA_TOKENS, None)
    if tokens:
        attributes[SA_TOKENS] = tokens
    return attributes, secrets


def store_error(err: StoreError, where: str | None) -> PublishError:
    return PublishError(err.reason, f"{where}: {err}" if where else str(err))


def provider_error(err: ProviderError, where: str) -> PublishError:
    return PublishError(err.reason, f"{where}: {err}", err.code)


# Upstream's driver starts its failures with these phrases, which kubelet's FailedMount
# events carry and runbooks and alerts match; kvmount's own message and fix follow.
def class_error(err: StoreError, namespace: str, name: str) -> PublishError:
    """A class that could not be read (not one that was read and is invalid)."""
    if err.reason is StoreReason.INVALID_CLASS:
        return store_error(err, None)
    return store_error(err, f"failed to get secretproviderclass {namespace}/{name}, error")


def mount_failure(pod: Pod, class_name: str) -> str:
    """The prefix of a failure to get or write the provider's objects."""
    return (
        f"failed to mount secrets store objects for pod {pod.namespace}/{pod.name}, "
        f"err: SecretProviderClass {pod.namespace}/{class_name}"
    )


def status_failure(pod: Pod) -> str:
    return f"failed to create secret provider class pod status for pod {pod.namespace}/{pod.name}, err"


def check_request(req: VolumeRequest) -> tuple[Pod, str, int | None]:
    """The pod, the class name and the group id of a request; PublishError(INVALID_ARGUMENT)."""
    pod = parse_pod(req.volume_context)
    class_name = req.volume_context.get(CLASS_KEY, "")
    if not class_name:
        raise PublishError(
            PublishReason.INVALID_REQUEST,
            f"{CLASS_KEY} is not set: set volumeAttributes.{CLASS_KEY} in the pod's csi volume",
        )
    check_name(CLASS_KEY, class_name)
    return pod, class_name, parse_gid(req.volume_mount_group)


def target_error(err: TargetError) -> PublishError:
    if isinstance(err, OutsideRoot):
        return PublishError(PublishReason.INVALID_REQUEST, str(err))
    return PublishError(PublishReason.FAILED_TO_MOUNT, str(err), grpc.StatusCode.FAILED_PRECONDITION)
