"""The SecretSync API (``secret-sync.x-k8s.io/v1alpha1``), as upstream's sync controller defines it.

Field names, condition types and reasons are upstream's, so that a SecretSync
written for upstream, and tooling that reads its status, work unchanged.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, assert_never

from kvmount.kube.objects import SecretProviderClassObject
from kvmount.secretsync.errors import SyncReason

# The object's names live with its rules (shared with `kvmount validate`); the controller's uses
# read them here.
from kvmount.secretsync.syncspec import API_VERSION as API_VERSION
from kvmount.secretsync.syncspec import GROUP as GROUP
from kvmount.secretsync.syncspec import KIND as KIND
from kvmount.secretsync.syncspec import PLURAL as PLURAL
from kvmount.secretsync.syncspec import RESERVED_KEY as RESERVED_KEY
from kvmount.secretsync.syncspec import VERSION as VERSION
from kvmount.secretsync.syncspec import Reserved, reserved, reserved_message


class ConditionType(StrEnum):
    CREATED = "SecretCreated"
    UPDATED = "SecretUpdated"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionReason(StrEnum):
    """Upstream's condition reasons; a failed sync's event carries the same reason."""

    SYNC_STARTING = "SyncStarting"
    NO_UPDATE_YET = "NoUpdatesAttemptedYet"
    CREATE_SUCCESSFUL = "CreateSuccessful"
    UP_TO_DATE = "SecretUpToDate"
    PROVIDER_ERROR = "ProviderError"
    INVALID_LABEL = "InvalidClusterSecretLabelError"
    INVALID_ANNOTATION = "InvalidClusterSecretAnnotationError"
    SYNC_ERROR = "ControllerSyncError"
    PATCH_ERROR = "ControllerPatchError"
    CLASS_ERROR = "SecretProviderClassMisconfigured"
    FETCH_FAILED = "RemoteSecretStoreFetchFailed"


class EventReason(StrEnum):
    """The controller's own event reasons, beside the condition reasons of failed syncs."""

    SECRET_SYNCED = "SecretSynced"
    # The provider answered with content kept from before a Key Vault outage (--serve-stale-on-error);
    # the driver's reason for the same on a pod.
    STALE_CONTENT = "StaleContentServed"


def failure_reason(reason: SyncReason) -> ConditionReason:
    """The condition reason of a Secret that could not be written."""
    match reason:
        case SyncReason.OBJECT_NOT_MOUNTED | SyncReason.INVALID_CERTIFICATE:
            return ConditionReason.FETCH_FAILED
        case SyncReason.API_SERVER_UNAVAILABLE:
            return ConditionReason.SYNC_ERROR
        case (
            SyncReason.INVALID_SECRET_OBJECT
            | SyncReason.SECRET_NOT_MANAGED
            | SyncReason.SECRET_TYPE_MISMATCH
            | SyncReason.API_SERVER_FORBIDDEN
        ):
            return ConditionReason.PATCH_ERROR
        case _:
            assert_never(reason)


_HASH_ROUNDS = 100_000
# A status with one of these reasons makes the next sync write the Secret even when nothing changed.
FAILED_REASONS = frozenset(
    {
        ConditionReason.PROVIDER_ERROR,
        ConditionReason.INVALID_LABEL,
        ConditionReason.INVALID_ANNOTATION,
        ConditionReason.SYNC_ERROR,
        ConditionReason.PATCH_ERROR,
        ConditionReason.CLASS_ERROR,
        ConditionReason.FETCH_FAILED,
    }
)
CREATED_MESSAGE = "Secret created successfully."
UPDATED_MESSAGE = "Secret contains last observed values."
# The CRD's limit on a condition's message.
MAX_MESSAGE = 32768


@dataclass(frozen=True)
class SecretSync:
    """One SecretSync as the controller needs it; ``doc`` is the object as read."""

    namespace: str
    name: str
    uid: str
    generation: int
    class_name: str
    service_account: str
    secret_object: dict[str, Any]
    force: str
    controller_name: str
    sync_hash: str
    conditions: list[dict[str, Any]]

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    @property
    def where(self) -> str:
        return f"SecretSync {self.namespace}/{self.name}"

    def as_secret_object(self) -> dict[str, Any]:
        """The Secret to write, in the shape ``secretsync`` checks; it is named like the SecretSync."""
        return {**self.secret_object, "secretName": self.name}


def parse(doc: dict[str, Any]) -> SecretSync:
    """A SecretSync from its API object (the API server has validated it against the CRD)."""
    meta, spec = doc.get("metadata") or {}, doc.get("spec") or {}
    status = doc.get("status") or {}
    secret_object = spec.get("secretObject")
    return SecretSync(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or "").strip(),
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        class_name=str(spec.get("secretProviderClassName") or ""),
        service_account=str(spec.get("serviceAccountName") or ""),
        secret_object=dict(secret_object) if isinstance(secret_object, dict) else {},
        force=str(spec.get("forceSynchronization") or ""),
        controller_name=str(spec.get("secretSyncControllerName") or ""),
        sync_hash=str(status.get("syncHash") or ""),
        conditions=list(status.get("conditions") or []),
    )


def reserved_metadata(secret_object: dict[str, Any]) -> tuple[ConditionReason, str] | None:
    """(reason, message) when the SecretSync sets the controller's own label or annotation
    (the CRD refuses both; this holds for objects that predate it). Upstream's words."""
    which = reserved(secret_object)
    if which is None:
        return None
    reason = ConditionReason.INVALID_LABEL if which is Reserved.LABEL else ConditionReason.INVALID_ANNOTATION
    return reason, reserved_message(which)


def sync_hash(data: dict[str, bytes], spc: SecretProviderClassObject, ss: SecretSync) -> str:
    """What was synced, and from which class and SecretSync spec: a new hash means a new sync.

    Upstream's recipe, byte for byte, so that a SecretSync synced by upstream's
    controller is not synced again here: ``data`` (the Secret's data as built,
    TLS keys split) as Go's ``json.Marshal`` writes a ``map[string][]byte`` (keys
    sorted, values base64, no spaces, an empty value ``null`` as the provider's
    protobuf leaves it nil), prefixed with its length, then the class's uid and
    generation, the SecretSync's uid and generation and ``forceSynchronization``
    joined by ``|``; PBKDF2-HMAC-SHA512, 100,000 rounds, the SecretSync's uid as
    the salt, 32 bytes. The stretching makes a leaked status hash useless for
    guessing a short secret, as the status is readable by anyone who may read
    the SecretSync."""
    spc_meta = spc.get("metadata") or {}
    encoded = {k: base64.b64encode(v).decode("ascii") if v else None for k, v in data.items()}
    content = json.dumps(encoded, sort_keys=True, separators=(",", ":")).encode()
    context = "|".join(
        [
            str(spc_meta.get("uid") or ""),
            str(spc_meta.get("generation") or 0),
            ss.uid,
            str(ss.generation),
            ss.force,
        ]
    )
    material = str(len(content)).encode() + b":" + content + context.encode()
    derived = hashlib.pbkdf2_hmac("sha512", material, ss.uid.encode(), _HASH_ROUNDS, dklen=32)
    return "v1:" + derived.hex()


def now() -> str:
    """The current time as the API writes timestamps."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[dict[str, Any]],
    kind: ConditionType,
    status: ConditionStatus,
    reason: ConditionReason,
    message: str,
    generation: int,
) -> list[dict[str, Any]]:
    """``conditions`` with the one of type ``kind`` set, as Kubernetes' meta.SetStatusCondition
    does: updated in place (the list keeps its order), appended when new; its transition time
    moves only when its status does."""
    new = {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "observedGeneration": generation,
        "lastTransitionTime": now(),
    }
    result = []
    for old in conditions:
        if old.get("type") == kind:
            if old.get("status") == status and old.get("lastTransitionTime"):
                new["lastTransitionTime"] = old["lastTransitionTime"]
            result.append(new)
        else:
            result.append(old)
    return result if any(c.get("type") == kind for c in conditions) else [*conditions, new]


def initial_conditions(conditions: list[dict[str, Any]], generation: int) -> list[dict[str, Any]]:
    """The conditions of a SecretSync before its first sync, as upstream writes them first."""
    conditions = set_condition(
        conditions,
        ConditionType.CREATED,
        ConditionStatus.UNKNOWN,
        ConditionReason.SYNC_STARTING,
        "",
        generation,
    )
    return set_condition(
        conditions,
        ConditionType.UPDATED,
        ConditionStatus.UNKNOWN,
        ConditionReason.NO_UPDATE_YET,
        "",
        generation,
    )
