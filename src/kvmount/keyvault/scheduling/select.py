"""Objects selected by `objectNamePattern` and `objectTags`: the vault's listing of a type, matched.

A selecting entry becomes one named entry per match (sorted by name), each then fetched as
if the class had named it. Patterns are shell-style globs (fnmatch), case-sensitive as Key
Vault's names are; a glob's matching is linear in the name, so no pattern makes the provider
backtrack. Each page of a listing is one answer against the caps (--max-object-bytes, and
--max-mount-bytes while it arrives).
"""

from __future__ import annotations

import fnmatch
import time
import urllib.parse
from dataclasses import dataclass, replace
from typing import Any

from kvmount.keyvault.errors import Category, KeyVaultError, ListingForbidden
from kvmount.keyvault.failures import classify, describe_failure, failure_suffix
from kvmount.keyvault.http.vault_client import VaultClient
from kvmount.keyvault.parameters.limits import ReadCap
from kvmount.keyvault.types import ObjectSpec, ObjectType


@dataclass(frozen=True)
class Listed:
    """One object of a vault's listing: what selection looks at, nothing of its value."""

    name: str
    enabled: bool
    expires: float | None
    tags: tuple[tuple[str, str], ...]


def _listed(item: dict[str, Any]) -> Listed | None:
    object_id = item.get("kid") or item.get("id")
    parts = urllib.parse.urlsplit(str(object_id or "")).path.strip("/").split("/")
    if len(parts) < 2 or not parts[1]:
        return None
    attributes = item.get("attributes")
    attributes = attributes if isinstance(attributes, dict) else {}
    exp = attributes.get("exp")
    tags = item.get("tags")
    tags = tags if isinstance(tags, dict) else {}
    return Listed(
        name=parts[1],
        enabled=attributes.get("enabled") is not False,
        expires=float(exp) if isinstance(exp, int | float) else None,
        tags=tuple(sorted((str(k), str(v)) for k, v in tags.items())),
    )


def list_type(
    client: VaultClient, kind: ObjectType, deadline: float | None, kw: dict[str, Any], cap: ReadCap
) -> list[Listed]:
    """Every object of a type in the vault (nextLinks on the vault's host only); each page is one
    answer against ``cap``, and only what selection looks at is kept of it."""
    listed: list[Listed] = []
    with cap:
        for page in client.list_objects(kind.value, deadline, **kw):
            listed += [one for one in map(_listed, page) if one is not None]
            cap.reset()
    return listed


def matching(
    vault: str, spec: ObjectSpec, listed: list[Listed], now: float | None = None
) -> list[ObjectSpec]:
    """The named entries a selecting entry stands for: its enabled, unexpired matches.
    None is NOT_FOUND unless the entry allows it."""
    now = time.time() if now is None else now
    names = sorted(
        one.name
        for one in listed
        if one.enabled
        and (one.expires is None or one.expires > now)
        and (not spec.name_pattern or fnmatch.fnmatchcase(one.name, spec.name_pattern))
        and set(spec.tags) <= set(one.tags)
    )
    if not names and not spec.allow_empty:
        raise KeyVaultError(
            f"keyvault {vault!r}: {spec.describe()}: no enabled, unexpired {spec.type.value} matches; "
            'check the pattern and tags, or set allowEmpty: "true" to mount none',
            Category.NOT_FOUND,
        )
    return [
        replace(spec, name=name, alias=f"{spec.alias}/{name}" if spec.alias else "", name_pattern="", tags=())
        for name in names
    ]


def listing_failure(vault: str, spec: ObjectSpec, err: Exception) -> KeyVaultError:
    """A failed listing; a 403 names the permission a selection needs, which a named object does not."""
    if classify(err) is Category.FORBIDDEN:
        return ListingForbidden(
            f"keyvault {vault!r}: {spec.describe()}: access denied listing the vault's "
            f"{spec.type.value}s; grant the identity the list permission on {spec.type.value}s "
            f"(get alone reads named objects only){failure_suffix(err)}"
        )
    return describe_failure(vault, spec, err)
