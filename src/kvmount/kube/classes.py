"""The SecretProviderClass: its API coordinates and its parsing, field by field."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from kvmount.base.flags import go_duration
from kvmount.kube.errors import InvalidClass

GROUP = "secrets-store.csi.x-k8s.io"
VERSION = "v1"
CLASSES = "secretproviderclasses"
# How often the driver's reconciler rotates this class's volumes (a Go duration, at least 1s),
# instead of its --rotation-poll-interval.
ROTATION_INTERVAL_ANNOTATION = "kvmount.io/rotation-poll-interval"


@dataclass(frozen=True)
class SecretProviderClass:
    namespace: str
    name: str
    provider: str
    parameters: dict[str, str]
    # Kept as the API returns them, for Kubernetes Secret sync.
    secret_objects: list[dict[str, Any]] = field(default_factory=list)
    rotation_interval: float | None = None  # seconds, from ROTATION_INTERVAL_ANNOTATION


def rotation_interval(value: str) -> float:
    """The period ROTATION_INTERVAL_ANNOTATION sets, in seconds; ValueError saying why it is none."""
    try:
        seconds = go_duration(value.strip())
    except argparse.ArgumentTypeError as err:
        raise ValueError(str(err)) from None
    if seconds < 1:
        raise ValueError(f"{value!r} is too short; a rotation period is at least 1s")
    return seconds


def _rotation_interval(what: str, meta: dict[str, Any]) -> float | None:
    annotations = meta.get("annotations") or {}
    value = annotations.get(ROTATION_INTERVAL_ANNOTATION) if isinstance(annotations, dict) else None
    if value is None:
        return None
    try:
        return rotation_interval(str(value))
    except ValueError as err:
        raise InvalidClass(what, f"metadata.annotations[{ROTATION_INTERVAL_ANNOTATION!r}]: {err}") from None


def parse_class(doc: object, what: str) -> SecretProviderClass:
    """A SecretProviderClass from its API object or a class file; raises InvalidClass naming the field.

    ``doc`` is whatever was read (a user's YAML in standalone mode): each field's type is checked
    here, so it is not taken as a SecretProviderClassObject."""
    if not isinstance(doc, dict):
        raise InvalidClass(what, "not an object")
    meta = doc.get("metadata") or {}
    if not isinstance(meta, dict):
        raise InvalidClass(what, "metadata must be a mapping (name, namespace)")
    for key in ("name", "namespace"):
        if not isinstance(meta.get(key) or "", str):
            raise InvalidClass(what, f"metadata.{key} must be a string")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise InvalidClass(what, "spec is missing")
    provider = spec.get("provider")
    if not isinstance(provider, str) or not provider:
        # upstream's words first ("provider not set in ns/name"), which alerts match
        where = f"{meta.get('namespace') or 'default'}/{meta.get('name') or ''}"
        raise InvalidClass(
            f"provider not set in {where}",
            f"{what}: spec.provider is missing; set it to the provider's name (e.g. azure)",
        )
    params = spec.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidClass(what, "spec.parameters must be a map of strings")
    for key, value in params.items():
        if not isinstance(value, str):
            raise InvalidClass(what, f"spec.parameters.{key} must be a string; quote it in YAML")
    secret_objects = spec.get("secretObjects") or []
    if not isinstance(secret_objects, list):
        raise InvalidClass(what, "spec.secretObjects must be a list")
    return SecretProviderClass(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        provider=provider,
        parameters={str(k): v for k, v in params.items()},
        secret_objects=secret_objects,
        rotation_interval=_rotation_interval(what, meta),
    )
