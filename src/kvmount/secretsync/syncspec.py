"""The SecretSync object (``secret-sync.x-k8s.io/v1alpha1``): its names, its fields and the rules
its CRD and the sync controller hold it to before any sync. Pure names and checks, shared by the
controller (synccontroller/) and `kvmount validate`, so that the two never disagree."""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from kvmount.secretsync.data import SECRET_SYNC

GROUP = "secret-sync.x-k8s.io"
VERSION = "v1alpha1"
PLURAL = "secretsyncs"
KIND = "SecretSync"
API_VERSION = f"{GROUP}/{VERSION}"
# Reserved for the controller: a SecretSync may not set it on its Secret.
RESERVED_KEY = "secrets-store.sync.x-k8s.io"

# The fields the CRD defines (charts/kvmount/crds/secretsyncs.yaml); the API server drops others.
SPEC_FIELDS = (
    "secretProviderClassName",
    "serviceAccountName",
    "secretSyncControllerName",
    "forceSynchronization",
    "secretObject",
)
SECRET_OBJECT_FIELDS = ("type", "data", "labels", "annotations")
DATA_FIELDS = (SECRET_SYNC.source, SECRET_SYNC.target)
# The CRD's patterns (tests/secretsync/test_syncspec.py holds them equal to the CRD's).
FORCE_SYNCHRONIZATION = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9]+([-._a-zA-Z0-9]?[A-Za-z0-9])*)?$")
DATA_PATH = re.compile(r"^[A-Za-z0-9.]([-A-Za-z0-9]+([-._a-zA-Z0-9]?[A-Za-z0-9])*)?(\/([0-9]+))*$")
MAX_FIELD = 253


class Reserved(StrEnum):
    """Which of a Secret's maps sets the controller's reserved key."""

    LABEL = "label"
    ANNOTATION = "annotation"


def reserved(secret_object: Mapping[str, Any]) -> Reserved | None:
    """The controller's own check (upstream's), for objects that predate the CRD's rule: a
    non-empty reserved label, or the reserved annotation with any value."""
    labels = secret_object.get("labels") or {}
    if isinstance(labels, Mapping) and labels.get(RESERVED_KEY):
        return Reserved.LABEL
    annotations = secret_object.get("annotations") or {}
    if isinstance(annotations, Mapping) and RESERVED_KEY in annotations:
        return Reserved.ANNOTATION
    return None


def reserved_message(which: Reserved) -> str:
    """Upstream's words for a reserved label or annotation."""
    return f"{which} {RESERVED_KEY} is reserved for use by the Secrets Store Sync Controller"


def crd_reserved(keys: Mapping[str, Any]) -> list[str]:
    """The keys the CRD refuses in labels or annotations: any that starts with the reserved key."""
    return [key for key in keys if str(key).startswith(RESERVED_KEY)]


def field_problem(field: str, value: str, pattern: re.Pattern[str]) -> str | None:
    """Why the CRD refuses ``value`` for ``field`` (its length and pattern), or None."""
    if len(value) > MAX_FIELD:
        return f"{field} is {len(value)} characters; the API server accepts at most {MAX_FIELD}"
    if not pattern.fullmatch(value):
        shown = value if len(value) <= 64 else value[:61] + "..."
        return (
            f"{field} {shown!r} is refused by the API server: use letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit"
        )
    return None
