"""The SecretSync API (``secret-sync.x-k8s.io/v1alpha1``), as upstream's sync controller defines it.

Field names, condition types and reasons are upstream's, so that a SecretSync
written for upstream, and tooling that reads its status, work unchanged.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, assert_never

from kvmount.kube.objects import SecretProviderClassObject
from kvmount.secretsync.errors import SyncReason

GROUP = "secret-sync.x-k8s.io"
VERSION = "v1alpha1"
PLURAL = "secretsyncs"
KIND = "SecretSync"
API_VERSION = f"{GROUP}/{VERSION}"
# Reserved for the controller: a SecretSync may not set it on its Secret.
RESERVED_KEY = "secrets-store.sync.x-k8s.io"


class ConditionType(StrEnum):
    CREATED = "SecretCreated"
    UPDATED = "SecretUpdated"


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


# The key derivation makes a leaked status hash useless for guessing a short secret.
_HASH_ROUNDS = 100_000


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
    """(reason, message) when the SecretSync sets the controller's own label or annotation."""
    labels = secret_object.get("labels") or {}
    if labels.get(RESERVED_KEY):
        return (
            ConditionReason.INVALID_LABEL,
            f"spec.secretObject.labels may not set {RESERVED_KEY}: the controller sets it",
        )
    if RESERVED_KEY in (secret_object.get("annotations") or {}):
        return ConditionReason.INVALID_ANNOTATION, f"spec.secretObject.annotations may not set {RESERVED_KEY}"
    return None


def sync_hash(data: dict[str, bytes], spc: SecretProviderClassObject, ss: SecretSync) -> str:
    """What was synced, and from which class and SecretSync spec: a new hash means a new sync.

    Salted with the SecretSync's uid and stretched, since the status is
    readable by anyone who may read the SecretSync."""
    spc_meta = spc.get("metadata") or {}
    content = json.dumps({k: v.hex() for k, v in sorted(data.items())}).encode()
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
    ok: bool,
    reason: ConditionReason,
    message: str,
    generation: int,
) -> list[dict[str, Any]]:
    """``conditions`` with the one of type ``kind`` replaced; its transition time moves only when
    its status does, as Kubernetes conditions do."""
    status = "True" if ok else "False"
    old = next((c for c in conditions if c.get("type") == kind), None)
    changed = old is None or old.get("status") != status
    new = {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "observedGeneration": generation,
        "lastTransitionTime": now() if changed or old is None else old.get("lastTransitionTime", now()),
    }
    return [c for c in conditions if c.get("type") != kind] + [new]


def initial_conditions(generation: int) -> list[dict[str, Any]]:
    """The conditions of a SecretSync the controller has just seen, as upstream sets them."""
    conditions = set_condition(
        [],
        ConditionType.CREATED,
        False,
        ConditionReason.SYNC_STARTING,
        "Starting the first sync.",
        generation,
    )
    return set_condition(
        conditions,
        ConditionType.UPDATED,
        False,
        ConditionReason.NO_UPDATE_YET,
        "No update attempted yet.",
        generation,
    )
