"""Azure cloud environments: where to get tokens and how vault URLs are formed.

A custom environment (AzureStackCloud) is read from its file for each mount;
nothing goes through a process-wide environment variable, so concurrent
mounts with different clouds cannot see each other's settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kvmount.keyvault.errors import InvalidSpec


@dataclass(frozen=True)
class Cloud:
    name: str
    aad_endpoint: str  # the authority host, e.g. https://login.microsoftonline.com/
    vault_dns_suffix: str  # e.g. vault.azure.net
    custom: bool = False  # custom authorities are not in Microsoft's instance discovery
    # Key Vault's resource (token audience): an environment file's keyVaultEndpoint; by
    # default https://<DNS suffix>, which is what it is in every public cloud.
    vault_resource: str = ""

    def vault_url(self, vault_name: str) -> str:
        return f"https://{vault_name}.{self.vault_dns_suffix}"

    @property
    def scope(self) -> str:
        """The token scope of Key Vault in this cloud."""
        resource = self.vault_resource or f"https://{self.vault_dns_suffix}"
        return f"{resource.rstrip('/')}/.default"


_KNOWN = {
    "AZUREPUBLICCLOUD": Cloud("AzurePublicCloud", "https://login.microsoftonline.com/", "vault.azure.net"),
    "AZUREUSGOVERNMENTCLOUD": Cloud(
        "AzureUSGovernmentCloud", "https://login.microsoftonline.us/", "vault.usgovcloudapi.net"
    ),
    "AZURECHINACLOUD": Cloud("AzureChinaCloud", "https://login.chinacloudapi.cn/", "vault.azure.cn"),
    "AZUREGERMANCLOUD": Cloud(
        "AzureGermanCloud", "https://login.microsoftonline.de/", "vault.microsoftazure.de"
    ),
}
STACK = "AZURESTACKCLOUD"
_ENV_KEYS = ("name", "activeDirectoryEndpoint", "keyVaultDNSSuffix")


def _read_env_file(path: str) -> Cloud:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        raise InvalidSpec("cloudEnvFileName", f"{path!r} does not exist on the node") from None
    except (OSError, ValueError) as err:
        raise InvalidSpec(
            "cloudEnvFileName", f"{path!r} is not a readable JSON file ({type(err).__name__})"
        ) from None
    if not isinstance(doc, dict):
        raise InvalidSpec("cloudEnvFileName", f"{path!r} must hold a JSON object")
    missing = [k for k in _ENV_KEYS if not isinstance(doc.get(k), str) or not doc[k]]
    if missing:
        raise InvalidSpec("cloudEnvFileName", f"{path!r} lacks {', '.join(missing)}")
    resource = doc.get("keyVaultEndpoint") or ""
    if not isinstance(resource, str) or (resource and not resource.startswith("https://")):
        raise InvalidSpec("cloudEnvFileName", f"{path!r}: keyVaultEndpoint must be an https:// URL")
    return Cloud(
        name=doc["name"],
        aad_endpoint=doc["activeDirectoryEndpoint"],
        vault_dns_suffix=doc["keyVaultDNSSuffix"].strip("."),
        custom=True,
        vault_resource=resource,
    )


def resolve(cloud_name: str, env_file: str = "", default: str = "") -> Cloud:
    """The cloud of a mount: its cloudName (else the provider's default), case-insensitive."""
    key = (cloud_name or default or "AzurePublicCloud").upper()
    if key == STACK:
        if not env_file:
            raise InvalidSpec("cloudEnvFileName", "is required with cloudName AzureStackCloud")
        return _read_env_file(env_file)
    if key not in _KNOWN:
        names = ", ".join(c.name for c in _KNOWN.values())
        raise InvalidSpec("cloudName", f"{cloud_name!r} is not one of {names}, AzureStackCloud")
    return _KNOWN[key]
