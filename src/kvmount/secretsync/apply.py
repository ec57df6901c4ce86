"""A SecretSync's Secret written by server-side apply, as upstream's sync controller writes it.

The whole Secret (type, data, labels, annotations, the single owner) is applied
with upstream's field manager, so a Secret upstream's controller wrote stays
this controller's, a label or annotation dropped from the SecretSync leaves the
Secret, and fields other writers own are left to them. Whether the controller
may write the Secret at all (an allowed type, a single SecretSync owner, not
somebody else's Secret) is the admission policies' call, as upstream; their
refusal, or any other API error, comes back as an ApiError with the API
server's own message, which names keys and policies, never values.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from kvmount.kube.rest import ApiError, Patch, RestClient, path
from kvmount.secretsync.writer import Owner

__all__ = ["FIELD_MANAGER", "LEGACY_MANAGER", "apply_secret"]

FIELD_MANAGER = "secrets-store-sync-controller"
# The manager of Secrets written by earlier kvmount versions (read, then create or replace):
# their fields are taken over, not fought over.
LEGACY_MANAGER = "kvmount"


def _legacy_conflict(err: ApiError) -> bool:
    """Whether a 409 from an apply lists only conflicts with kvmount's earlier writer."""
    if err.status != 409:
        return False
    try:
        causes = json.loads(err.body)["details"]["causes"]
    except (TypeError, ValueError, KeyError):
        return False
    return bool(causes) and all(f'"{LEGACY_MANAGER}"' in str(c.get("message", "")) for c in causes)


def apply_secret(
    rest: RestClient,
    namespace: str,
    name: str,
    secret_type: str,
    data: Mapping[str, bytes],
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    owner: Owner,
) -> None:
    """Apply the Secret ``namespace/name``; raises ApiError or Unreachable."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
            "ownerReferences": [owner.reference()],
        },
        "type": secret_type,
        "data": {k: base64.b64encode(v).decode("ascii") for k, v in data.items()},
    }
    if annotations:
        body["metadata"]["annotations"] = dict(annotations)
    where = path("v1", "secrets", namespace, name)
    try:
        applied = rest.patch(where, body, Patch.APPLY, fieldManager=FIELD_MANAGER)
    except ApiError as err:
        # As upstream, no force: a field another writer set to another value is a conflict,
        # except the fields kvmount's own earlier writer set.
        if not _legacy_conflict(err):
            raise
        applied = rest.patch(where, body, Patch.APPLY, fieldManager=FIELD_MANAGER, force="true")
    _drop_legacy_manager(rest, where, applied)


def _drop_legacy_manager(rest: RestClient, where: str, secret: Mapping[str, Any]) -> None:
    """Forget the earlier writer's claims, which it shares with the apply where the values agree:
    left in place, a label later removed from the SecretSync would stay on the Secret. Once
    dropped they are gone, so later applies find nothing to drop."""
    meta = secret.get("metadata") or {}
    fields = meta.get("managedFields") or []
    kept = [f for f in fields if f.get("manager") != LEGACY_MANAGER]
    if kept and len(kept) < len(fields):
        # resourceVersion: only the object just applied (409 otherwise; the next sync applies again).
        patch = {"metadata": {"resourceVersion": meta.get("resourceVersion"), "managedFields": kept}}
        rest.patch(where, patch, Patch.MERGE, fieldManager=FIELD_MANAGER)
