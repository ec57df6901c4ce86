"""Everything that talks to Azure Key Vault: a mount's parameters, its identity, the reads, the files.

The front door: code outside keyvault/ imports these names from ``kvmount.keyvault`` only. Each
loads its module on first use (PEP 562), so `kvmount validate` and the provider's start-up, which
need the parameters and the errors, never load the Azure SDK or cryptography.

Rooms: ``types`` and ``errors`` (leaves), ``parameters/`` (pure checks), ``identity/`` (the
choice of identity, then its credential), ``http/`` (one vault over HTTP), ``scheduling/`` (the
fetch pool), ``content`` (objects -> file bytes), ``clouds``, and ``mount`` (the pipeline).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kvmount.keyvault.clouds import DEFAULT_CLOUD_ENV_DIRS
    from kvmount.keyvault.content import ContentOptions
    from kvmount.keyvault.errors import (
        AnswerTooLarge,
        Category,
        InvalidSpec,
        KeyVaultError,
        ListingForbidden,
    )
    from kvmount.keyvault.failures import classify, failure_suffix, token_bound
    from kvmount.keyvault.http.vault_client import VaultClient
    from kvmount.keyvault.identity.choice import NMI_PORT
    from kvmount.keyvault.identity.credentials import CredentialOptions, token_options
    from kvmount.keyvault.mount import File, KeyVaultMounter, MountResult, Settings
    from kvmount.keyvault.parameters import goyaml
    from kvmount.keyvault.parameters.findings import Problem, suggest
    from kvmount.keyvault.parameters.limits import (
        DEFAULT_MAX_MOUNT_BYTES,
        DEFAULT_MAX_OBJECT_BYTES,
        DEFAULT_MAX_OBJECTS,
        DEFAULT_MAX_TOKEN_ANSWER_BYTES,
        DEFAULT_MAX_VERSION_HISTORY,
        Limits,
    )
    from kvmount.keyvault.parameters.objects import (
        PARAMETERS,
        mount_problems,
        object_items,
        output_paths,
        parse_mount,
        parse_permission,
    )
    from kvmount.keyvault.scheduling.fetch import (
        CLIENT_OPTIONS,
        RequestObserver,
        call_options,
        fetch_version,
        history_versions,
        read_transport,
    )
    from kvmount.keyvault.scheduling.stale import DEFAULT_STALE_CACHE_BYTES, StaleServe
    from kvmount.keyvault.types import (
        IDENTITY_BINDING_AUDIENCE,
        TOKEN_AUDIENCE,
        Encoding,
        Format,
        IdentityMode,
        MountParams,
        ObjectSpec,
        ObjectType,
    )

__all__ = [
    "CLIENT_OPTIONS",
    "DEFAULT_CLOUD_ENV_DIRS",
    "DEFAULT_MAX_MOUNT_BYTES",
    "DEFAULT_MAX_OBJECTS",
    "DEFAULT_MAX_OBJECT_BYTES",
    "DEFAULT_MAX_TOKEN_ANSWER_BYTES",
    "DEFAULT_MAX_VERSION_HISTORY",
    "DEFAULT_STALE_CACHE_BYTES",
    "IDENTITY_BINDING_AUDIENCE",
    "NMI_PORT",
    "PARAMETERS",
    "TOKEN_AUDIENCE",
    "AnswerTooLarge",
    "Category",
    "ContentOptions",
    "CredentialOptions",
    "Encoding",
    "File",
    "Format",
    "IdentityMode",
    "InvalidSpec",
    "KeyVaultError",
    "KeyVaultMounter",
    "Limits",
    "ListingForbidden",
    "MountParams",
    "MountResult",
    "ObjectSpec",
    "ObjectType",
    "Problem",
    "RequestObserver",
    "Settings",
    "StaleServe",
    "VaultClient",
    "call_options",
    "classify",
    "failure_suffix",
    "fetch_version",
    "goyaml",
    "history_versions",
    "mount_problems",
    "object_items",
    "output_paths",
    "parse_mount",
    "parse_permission",
    "read_transport",
    "suggest",
    "token_bound",
    "token_options",
]

# Where each name lives, for __getattr__ (the imports above say it for mypy;
# tests/keyvault/test_front_door.py holds the three lists equal).
_HOMES: dict[str, tuple[str, ...]] = {
    "errors": ("AnswerTooLarge", "Category", "InvalidSpec", "KeyVaultError", "ListingForbidden"),
    "types": (
        "IDENTITY_BINDING_AUDIENCE",
        "TOKEN_AUDIENCE",
        "Encoding",
        "Format",
        "IdentityMode",
        "MountParams",
        "ObjectSpec",
        "ObjectType",
    ),
    "parameters.objects": (
        "PARAMETERS",
        "mount_problems",
        "object_items",
        "output_paths",
        "parse_mount",
        "parse_permission",
    ),
    "parameters.findings": ("Problem", "suggest"),
    "parameters.limits": (
        "DEFAULT_MAX_MOUNT_BYTES",
        "DEFAULT_MAX_OBJECT_BYTES",
        "DEFAULT_MAX_OBJECTS",
        "DEFAULT_MAX_TOKEN_ANSWER_BYTES",
        "DEFAULT_MAX_VERSION_HISTORY",
        "Limits",
    ),
    "clouds": ("DEFAULT_CLOUD_ENV_DIRS",),
    "identity.choice": ("NMI_PORT",),
    "identity.credentials": ("CredentialOptions", "token_options"),
    "content": ("ContentOptions",),
    "http.vault_client": ("VaultClient",),
    "failures": ("classify", "failure_suffix", "token_bound"),
    "scheduling.fetch": (
        "CLIENT_OPTIONS",
        "RequestObserver",
        "call_options",
        "fetch_version",
        "history_versions",
        "read_transport",
    ),
    "scheduling.stale": ("DEFAULT_STALE_CACHE_BYTES", "StaleServe"),
    "mount": ("File", "KeyVaultMounter", "MountResult", "Settings"),
}
# Modules offered whole: the `objects` YAML read as Go reads it, for `kvmount validate`'s lines.
_MODULES = {"goyaml": "parameters.goyaml"}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


# Hidden from mypy, which sees the imports above: a misspelt name then fails the type check.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        if name in _MODULES:
            value: object = importlib.import_module(f"{__name__}.{_MODULES[name]}")
        elif name in _HOME_OF:
            value = getattr(importlib.import_module(f"{__name__}.{_HOME_OF[name]}"), name)
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return __all__
