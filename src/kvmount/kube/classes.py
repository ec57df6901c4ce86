"""The SecretProviderClass: its API coordinates and its parsing, field by field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kvmount.kube.errors import InvalidClass

GROUP = "secrets-store.csi.x-k8s.io"
VERSION = "v1"
CLASSES = "secretproviderclasses"


@dataclass(frozen=True)
class SecretProviderClass:
    namespace: str
    name: str
    provider: str
    parameters: dict[str, str]
    # Kept as the API returns them, for Kubernetes Secret sync.
    secret_objects: list[dict[str, Any]] = field(default_factory=list)


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
        raise InvalidClass(what, "spec.provider is missing; set it to the provider's name (e.g. azure)")
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
    )
