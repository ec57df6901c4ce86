"""The types of a mount: its objects' kinds, encodings and formats, the identity modes, one
object's spec and a mount's checked parameters. A leaf: everything else in keyvault/ builds on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

# The audience of the service account token that workload identity exchanges.
TOKEN_AUDIENCE = "api://AzureADTokenExchange"
# The audience of the token that identity binding (useAzureTokenProxy) exchanges.
IDENTITY_BINDING_AUDIENCE = "api://AKSIdentityBinding"


class ObjectType(StrEnum):
    SECRET = "secret"
    KEY = "key"
    CERT = "cert"


class Encoding(StrEnum):
    UTF8 = "utf-8"
    HEX = "hex"
    BASE64 = "base64"


class Format(StrEnum):
    PEM = "pem"
    PFX = "pfx"


class IdentityMode(StrEnum):
    WORKLOAD = "workload-identity"
    MANAGED = "managed-identity"
    POD = "pod-identity"
    SERVICE_PRINCIPAL = "service-principal"
    TOKEN_PROXY = "identity-binding"  # useAzureTokenProxy


@dataclass(frozen=True)
class JsonPart:
    """One entry of an object's `jmesPath`: the file ``alias`` holds what ``path`` selects."""

    path: str
    alias: str


@dataclass(frozen=True)
class ObjectSpec:
    name: str
    type: ObjectType
    alias: str = ""
    version: str = ""
    version_history: int = 0
    encoding: Encoding = Encoding.UTF8
    format: Format = Format.PEM
    file_permission: int | None = None
    json_parts: tuple[JsonPart, ...] = ()
    # Selection instead of a name: every enabled, unexpired object of the type whose name
    # matches the glob and which carries every tag; ``name`` is then "" until expanded.
    name_pattern: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    allow_empty: bool = False

    @property
    def selects(self) -> bool:
        return bool(self.name_pattern or self.tags)

    @property
    def file_name(self) -> str:
        return self.alias or self.name

    @property
    def writes_whole(self) -> bool:
        """With `jmesPath`, the whole secret is written only under an objectAlias of its own."""
        return not self.json_parts or bool(self.alias)

    @property
    def file_names(self) -> tuple[str, ...]:
        """The files of one version: the whole object's (if written), then each JSON part's."""
        if self.selects:  # a directory of the matches' files, if any; known once listed
            return (self.alias,) if self.alias else ()
        whole = (self.file_name,) if self.writes_whole else ()
        return whole + tuple(part.alias for part in self.json_parts)

    @property
    def has_history(self) -> bool:
        """Upstream's rule: a history of 0 or 1 is the plain file, one version."""
        return self.version_history > 1

    @property
    def latest(self) -> bool:
        """No pinned version: "latest" is how users spell the newest."""
        return self.version in ("", "latest")

    @property
    def id(self) -> str:
        """The object's id in MountResponse.object_version, as upstream."""
        return f"{self.type.value}/{self.name}"

    def describe(self) -> str:
        if self.selects:
            return f"{self.type.value}s {self.selection()}"
        version = f" version {self.version!r}" if self.version else ""
        return f"{self.type.value} {self.name!r}{version}"

    def selection(self) -> str:
        """What a selecting entry asks for, as its messages name it."""
        said = [f"matching {self.name_pattern!r}"] if self.name_pattern else []
        said += [f"tagged {dict(self.tags)!r}"] if self.tags else []
        return " and ".join(said)


@dataclass(frozen=True)
class MountParams:
    vault_name: str
    tenant_id: str
    cloud_name: str
    cloud_env_file: str
    identity: IdentityMode
    client_id: str  # workload identity, or the user-assigned managed identity
    objects: tuple[ObjectSpec, ...]
    pod_name: str = ""
    pod_namespace: str = ""
    # The service account token for workload identity; never logged.
    service_account_token: str = field(default="", repr=False)
    # clientid / clientsecret of the node-publish secret; never logged.
    sp_client_id: str = ""
    sp_client_secret: str = field(default="", repr=False)
