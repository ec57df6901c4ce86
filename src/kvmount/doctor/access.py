"""Can this class's identity read each of its objects? Live, with the provider's own code.

The identity, token, SDK clients and reads are keyvault/'s (the mounter's
caches, fetch_version, history_versions, classify); a read that works is then
converted by the same pipeline a mount runs, so a wrong type or format shows
here too. Key Vault's answers are turned into verdicts by status and error
code only: no response body, value or token is ever printed.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError

from kvmount.doctor.report import Row, Verdict
from kvmount.keyvault import (
    TOKEN_AUDIENCE,
    Category,
    IdentityMode,
    KeyVaultError,
    KeyVaultMounter,
    ListingForbidden,
    MountParams,
    ObjectSpec,
    ObjectType,
    VaultClient,
    classify,
    failure_suffix,
    fetch_version,
    history_versions,
)

_PERMISSION = {ObjectType.SECRET: "secrets", ObjectType.KEY: "keys", ObjectType.CERT: "certificates"}
_ROLE = {
    ObjectType.SECRET: "Key Vault Secrets User",
    ObjectType.KEY: "Key Vault Crypto User",
    ObjectType.CERT: "Key Vault Certificate User",
}
_TYPE_FIX = "check objectType, objectFormat and objectEncoding against what the object holds"
_TOKEN_FIX = {
    IdentityMode.WORKLOAD: "federate the ServiceAccount with the client (subject "
    f"system:serviceaccount:NS:NAME, audience {TOKEN_AUDIENCE}) and check clientID and tenantID",
    IdentityMode.TOKEN_PROXY: "check the identity binding and the provider's --token-proxy-url",
    IdentityMode.SERVICE_PRINCIPAL: "check clientid and clientsecret in the nodePublishSecretRef Secret, "
    "and tenantID",
    IdentityMode.MANAGED: "assign the identity to the node's VM or scale set; check userAssignedIdentityID",
    IdentityMode.POD: "check aad-pod-identity's NMI on the node and the pod's AzureIdentityBinding",
}


def describe_identity(params: MountParams, source: str) -> str:
    """Which identity the provider uses, in words; ``source`` says where its proof comes from."""
    mode = params.identity
    if mode in (IdentityMode.WORKLOAD, IdentityMode.TOKEN_PROXY):
        what = f"{mode.value}: client {params.client_id}, tenant {params.tenant_id}"
    elif mode is IdentityMode.SERVICE_PRINCIPAL:
        what = f"service principal {params.sp_client_id}, tenant {params.tenant_id}"
    elif mode is IdentityMode.MANAGED:
        what = f"managed identity {params.client_id or '(system-assigned)'} of the node"
    else:
        what = f"pod identity of pod {params.pod_namespace}/{params.pod_name}, through NMI"
    return f"{what}{f' ({source})' if source else ''}"


def access_rows(params: MountParams, mounter: KeyVaultMounter, source: str = "") -> list[Row]:
    """Identity, token, then one row per object, each with a verdict and what to do."""
    rows = [Row("identity", Verdict.INFO, describe_identity(params, source))]
    try:
        cloud = mounter.cloud(params)
    except KeyVaultError as err:
        return [*rows, Row("cloud", Verdict.FAIL, str(err), "fix cloudName / cloudEnvFileName")]
    key, credential = mounter.credentials.get(params, cloud)
    try:
        token = credential.get_token(cloud.scope, tenant_id=params.tenant_id or None)
    except Exception as err:
        category = classify(err).value
        detail = f"no token for {cloud.scope}: {category}{failure_suffix(err)}"
        rows.append(Row("token", Verdict.FAIL, detail, _TOKEN_FIX[params.identity]))
        return rows + [Row(f"object {s.describe()}", Verdict.SKIP, "needs a token") for s in params.objects]
    minutes = max(0, int((token.expires_on - time.time()) // 60))
    rows.append(Row("token", Verdict.OK, f"issued for {cloud.scope}, valid for {minutes} min"))
    clients = mounter.clients.get(cloud.vault_url(params.vault_name), key, credential)
    for spec in params.objects:
        rows.append(_object_row(params, spec, clients, mounter))
    return rows


def _selection_row(params: MountParams, spec: ObjectSpec, mounter: KeyVaultMounter) -> Row:
    """A selecting entry: the mount's own listing, matching and reads, on this entry alone."""
    check = f"objects: {spec.describe()}"
    try:
        files = mounter.mount(replace(params, objects=(spec,)), 0o644).files
    except ListingForbidden:
        needed = f"{_PERMISSION[spec.type]}/list"
        return Row(
            check,
            Verdict.FAIL,
            f"forbidden (403): the identity lacks {needed} on vault {params.vault_name!r}; a selection "
            "lists the vault's objects",
            f"grant {needed} (with {_PERMISSION[spec.type]}/get) in the vault's access policy, or the role "
            f"{_ROLE[spec.type]!r} (RBAC)",
        )
    except KeyVaultError as err:
        return Row(check, Verdict.FAIL, str(err))
    if not files:
        return Row(check, Verdict.WARN, "matches nothing (allowEmpty)", "check the pattern and the tags")
    names = ", ".join(f.path for f in files[:4]) + (", ..." if len(files) > 4 else "")
    return Row(check, Verdict.OK, f"{len(files)} files; writes {names}")


def _object_row(params: MountParams, spec: ObjectSpec, clients: VaultClient, mounter: KeyVaultMounter) -> Row:
    if spec.selects:
        return _selection_row(params, spec, mounter)
    check = f"object {spec.describe()}"
    try:
        version = "" if spec.latest else spec.version
        if spec.has_history:
            versions = history_versions(clients, spec)
            if not versions:
                return Row(check, Verdict.FAIL, "no enabled version", "enable a version or add one")
            version = versions[0]
        expires = fetch_version(clients, spec, version).expires_on
    except Exception as err:
        return _failure_row(check, params.vault_name, spec, clients, err)
    try:
        # The mount's own pipeline on this object alone: conversion, encoding, format.
        files = mounter.mount(replace(params, objects=(spec,)), 0o644).files
    except KeyVaultError as err:
        if err.category in (Category.INVALID, Category.INTERNAL):
            return Row(check, Verdict.FAIL, f"readable, but cannot be written: {err}", _TYPE_FIX)
        return Row(check, Verdict.FAIL, str(err))
    names = ", ".join(f.path for f in files[:4]) + (", ..." if len(files) > 4 else "")
    if expires is not None and expires < datetime.now(UTC):
        return Row(
            check,
            Verdict.WARN,
            f"expired on {expires:%Y-%m-%d %H:%M} UTC (Key Vault still serves it); writes {names}",
            "rotate it: add a new version with a later expiry",
        )
    return Row(check, Verdict.OK, f"readable; writes {names}")


def _inner_code(err: Exception) -> str:
    error: Any = getattr(err, "error", None)
    inner = getattr(error, "innererror", None) or {}
    return str(inner.get("code", "")) if isinstance(inner, dict) else ""


def _failure_row(check: str, vault: str, spec: ObjectSpec, clients: VaultClient, err: Exception) -> Row:
    category = classify(err)
    status = f" ({getattr(err, 'status_code', None) or category.value})"
    permission = _PERMISSION[spec.type]
    if category is Category.NOT_FOUND:
        other = _other_kind(clients, spec)
        if other is not None:
            return Row(
                check,
                Verdict.FAIL,
                f"wrong type: vault {vault!r} has no {spec.type.value} {spec.name!r}, but a {other.value} of "
                "that name",
                f"set objectType: {other.value}",
            )
        if not spec.latest:
            return Row(
                check,
                Verdict.FAIL,
                f"not found{status}: no enabled version {spec.version!r}",
                "set objectVersion to an existing enabled version, or remove it for the newest",
            )
        return Row(
            check,
            Verdict.FAIL,
            f"not found{status} in vault {vault!r}",
            "create it, or correct objectName (names are per type) and keyvaultName",
        )
    if isinstance(err, HttpResponseError) and err.status_code == 403 and "Disabled" in _inner_code(err):
        which = f"version {spec.version!r}" if not spec.latest else "its current version"
        return Row(
            check,
            Verdict.FAIL,
            f"disabled (403): {which} is disabled",
            "enable it in Key Vault, or pin an enabled objectVersion",
        )
    if category is Category.FORBIDDEN:
        needed = f"{permission}/get" + (f" and {permission}/list" if spec.has_history else "")
        return Row(
            check,
            Verdict.FAIL,
            f"forbidden{status}: the identity lacks {needed} on vault {vault!r}",
            f"grant {needed} in the vault's access policy, or the role {_ROLE[spec.type]!r} (RBAC)",
        )
    if category is Category.UNAVAILABLE:
        return Row(
            check,
            Verdict.FAIL,
            f"vault {vault!r} unreachable{failure_suffix(err)}",
            "check keyvaultName, the cloud, DNS and the vault's firewall",
        )
    return Row(check, Verdict.FAIL, f"{category.value}{failure_suffix(err)}", "")


def _other_kind(clients: VaultClient, spec: ObjectSpec) -> ObjectType | None:
    """The other object type that has this name, if one can be read (a probe; its value is dropped)."""
    for kind in (ObjectType.KEY, ObjectType.CERT, ObjectType.SECRET):
        if kind is spec.type:
            continue
        try:
            clients.get_object(kind.value, spec.name, "")
        except Exception:  # any failure means "not known to be that type"
            continue
        return kind
    return None
