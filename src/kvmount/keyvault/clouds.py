"""Azure cloud environments: where to get tokens and how vault URLs are formed.

A custom environment (AzureStackCloud) is read from its file for each mount;
nothing goes through a process-wide environment variable, so concurrent
mounts with different clouds cannot see each other's settings.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
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
# Where upstream's documentation and AKS on Azure Stack put the file (a hostPath or
# subPath mount into the provider's pod); --cloud-env-dirs changes the list.
DEFAULT_CLOUD_ENV_DIRS = ("/etc/kubernetes", "/cloudEnv")
# An environment file is a few hundred bytes; anything larger is not one.
MAX_ENV_FILE_BYTES = 64 * 1024


def _inside(path: str, allowed_dirs: Sequence[str]) -> bool:
    real_parent = os.path.realpath(os.path.dirname(path))
    for allowed in allowed_dirs:
        root = os.path.realpath(allowed)
        if real_parent == root or real_parent.startswith(root.rstrip("/") + "/"):
            return True
    return False


def read_env_bytes(path: str, allowed_dirs: Sequence[str] | None) -> bytes:
    """The file's bytes, read only if it is a regular file of at most MAX_ENV_FILE_BYTES
    under one of ``allowed_dirs`` (None: anywhere). A class names this path, so a
    namespace user must not make the provider read /dev/zero, block on a FIFO or
    follow a link out of the allowed directories."""
    if not os.path.isabs(path) or os.path.normpath(path) != path or "\0" in path:
        raise InvalidSpec("cloudEnvFileName", f"{path!r} must be a clean absolute path")
    if allowed_dirs is not None and not _inside(path, allowed_dirs):
        raise InvalidSpec(
            "cloudEnvFileName",
            f"{path!r} is outside the provider's --cloud-env-dirs ({','.join(allowed_dirs)}); "
            "put the file there or add its directory to the flag",
        )
    # The parent is resolved (a subPath mount may sit behind links); the file itself is not.
    real = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(real, flags)
    except FileNotFoundError:
        raise InvalidSpec("cloudEnvFileName", f"{path!r} does not exist on the node") from None
    except OSError as err:
        raise InvalidSpec(
            "cloudEnvFileName", f"{path!r} cannot be opened as a regular file ({err.strerror})"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidSpec("cloudEnvFileName", f"{path!r} is not a regular file")
        if info.st_size > MAX_ENV_FILE_BYTES:
            raise InvalidSpec("cloudEnvFileName", f"{path!r} is larger than {MAX_ENV_FILE_BYTES} bytes")
        # Read one byte past the cap: a file growing after fstat is still refused.
        data = os.read(fd, MAX_ENV_FILE_BYTES + 1)
    except OSError as err:
        raise InvalidSpec("cloudEnvFileName", f"{path!r} cannot be read ({err.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_ENV_FILE_BYTES:
        raise InvalidSpec("cloudEnvFileName", f"{path!r} is larger than {MAX_ENV_FILE_BYTES} bytes")
    return data


def _read_env_file(path: str, allowed_dirs: Sequence[str] | None) -> Cloud:
    data = read_env_bytes(path, allowed_dirs)
    try:
        doc = json.loads(data)
    except ValueError:  # not JSON, not UTF-8, or a number past int()'s 4,300 digits
        raise InvalidSpec("cloudEnvFileName", f"{path!r} is not a readable JSON file") from None
    except RecursionError:  # thousands of [ fit in the 64 KiB a file may have
        raise InvalidSpec(
            "cloudEnvFileName", f"{path!r} is nested too deeply to be a cloud environment"
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


def resolve(
    cloud_name: str, env_file: str = "", default: str = "", env_dirs: Sequence[str] | None = None
) -> Cloud:
    """The cloud of a mount: its cloudName (else the provider's default), case-insensitive;
    a custom environment file is read only from ``env_dirs`` (None: from anywhere)."""
    key = (cloud_name or default or "AzurePublicCloud").upper()
    if key == STACK:
        if not env_file:
            raise InvalidSpec("cloudEnvFileName", "is required with cloudName AzureStackCloud")
        return _read_env_file(env_file, env_dirs)
    if key not in _KNOWN:
        names = ", ".join(c.name for c in _KNOWN.values())
        raise InvalidSpec("cloudName", f"{cloud_name!r} is not one of {names}, AzureStackCloud")
    return _KNOWN[key]
