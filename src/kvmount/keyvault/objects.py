"""A mount's parameters and each object's spec, parsed and validated.

Parameter names are those of the upstream Azure provider's SecretProviderClass
(`keyvaultName`, `objects`, ...). Everything is checked here, before any
network call, so a typo fails fast instead of being silently ignored.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import yaml

from kvmount.keyvault.errors import InvalidSpec

VAULT_NAME = re.compile(r"^[-A-Za-z0-9]{3,24}$")
# Pod information the CSI driver adds to the attributes.
POD_NAME = "csi.storage.k8s.io/pod.name"
POD_NAMESPACE = "csi.storage.k8s.io/pod.namespace"
POD_UID = "csi.storage.k8s.io/pod.uid"
SERVICE_ACCOUNT_TOKENS = "csi.storage.k8s.io/serviceAccount.tokens"
# The audience of the service account token that workload identity exchanges.
TOKEN_AUDIENCE = "api://AzureADTokenExchange"


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

    @property
    def file_name(self) -> str:
        return self.alias or self.name

    @property
    def id(self) -> str:
        """The object's id in MountResponse.object_version, as upstream."""
        return f"{self.type.value}/{self.name}"

    def describe(self) -> str:
        version = f" version {self.version!r}" if self.version else ""
        return f"{self.type.value} {self.name!r}{version}"


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


_OBJECT_KEYS = {
    "objectName",
    "objectType",
    "objectAlias",
    "objectVersion",
    "objectVersionHistory",
    "objectEncoding",
    "objectFormat",
    "filePermission",
}
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"", "0", "f", "F", "false", "FALSE", "False"}


def parse_bool(name: str, value: str) -> bool:
    # The spellings Go's strconv.ParseBool accepts, which upstream users rely on.
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidSpec(name, f'{value!r} is not a boolean; use "true" or "false"')


def parse_permission(name: str, value: str) -> int:
    """An octal file mode such as "0644", 0 to 0777."""
    if not re.fullmatch(r"0?[0-7]{1,3}|0o[0-7]{1,3}", value.strip()):
        raise InvalidSpec(name, f'{value!r} is not an octal file mode from 0 to 0777, e.g. "0644"')
    return int(value.strip().removeprefix("0o"), 8)


def check_relative_path(name: str, path: str) -> None:
    """A file name inside the mount: relative, clean, never leaving the target."""
    if not path:
        raise InvalidSpec(name, "file name is empty")
    if path.startswith("/"):
        raise InvalidSpec(name, f"file name {path!r} is absolute; use a relative name")
    parts = path.split("/")
    if ".." in parts or posixpath.normpath(path) != path or path.startswith(".."):
        raise InvalidSpec(name, f"file name {path!r} must be a clean relative path without '..'")


def _object_list(raw: str) -> list[object]:
    try:
        doc = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise InvalidSpec("objects", f"is not valid YAML ({_yaml_where(err)})") from None
    if doc is None:
        return []
    if not isinstance(doc, dict) or set(doc) != {"array"} or not isinstance(doc["array"], list):
        raise InvalidSpec("objects", "must be a YAML mapping with one key, 'array', holding a list")
    return list(doc["array"])


def _yaml_where(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "syntax error"


def _field(doc: Mapping[str, object], key: str, where: str) -> str:
    value = doc.get(key, "")
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str | int):
        raise InvalidSpec(f"{where}.{key}", "must be a string")
    return str(value)


def parse_object(item: object, index: int) -> ObjectSpec:
    where = f"objects[{index}]"
    if isinstance(item, str):
        try:
            item = yaml.safe_load(item)
        except yaml.YAMLError as err:
            raise InvalidSpec(where, f"is not valid YAML ({_yaml_where(err)})") from None
    if not isinstance(item, dict):
        raise InvalidSpec(where, "must be a YAML mapping with objectName and objectType")
    unknown = sorted(str(k) for k in item if k not in _OBJECT_KEYS)
    if unknown:
        raise InvalidSpec(where, f"unknown key {unknown[0]!r}; known keys: {', '.join(sorted(_OBJECT_KEYS))}")
    name = _field(item, "objectName", where)
    if not name:
        raise InvalidSpec(f"{where}.objectName", "is required")
    where = f"object {name!r}"
    kind = _field(item, "objectType", where)
    try:
        object_type = ObjectType(kind)
    except ValueError:
        raise InvalidSpec(f"{where}.objectType", f"{kind!r} is not one of secret, key, cert") from None
    encoding_raw = _field(item, "objectEncoding", where)
    try:
        encoding = Encoding(encoding_raw.lower() or "utf-8")
    except ValueError:
        raise InvalidSpec(
            f"{where}.objectEncoding", f"{encoding_raw!r} is not one of utf-8, hex, base64"
        ) from None
    if encoding_raw and object_type is not ObjectType.SECRET:
        raise InvalidSpec(f"{where}.objectEncoding", "applies to secrets only")
    format_raw = _field(item, "objectFormat", where)
    try:
        fmt = Format(format_raw.lower() or "pem")
    except ValueError:
        raise InvalidSpec(f"{where}.objectFormat", f"{format_raw!r} is not one of pem, pfx") from None
    if fmt is Format.PFX and object_type is not ObjectType.SECRET:
        raise InvalidSpec(f"{where}.objectFormat", "pfx applies to secrets only (type secret)")
    history_raw = _field(item, "objectVersionHistory", where) or "0"
    try:
        history = int(history_raw)
    except ValueError:
        raise InvalidSpec(f"{where}.objectVersionHistory", f"{history_raw!r} is not a whole number") from None
    if history < 0:
        raise InvalidSpec(f"{where}.objectVersionHistory", f"{history} is negative; use 0 or more")
    permission_raw = _field(item, "filePermission", where)
    permission = parse_permission(f"{where}.filePermission", permission_raw) if permission_raw else None
    spec = ObjectSpec(
        name=name,
        type=object_type,
        alias=_field(item, "objectAlias", where),
        version=_field(item, "objectVersion", where),
        version_history=history,
        encoding=encoding,
        format=fmt,
        file_permission=permission,
    )
    check_relative_path(f"{where}.objectAlias" if spec.alias else f"{where}.objectName", spec.file_name)
    return spec


def output_paths(spec: ObjectSpec) -> list[str]:
    """The files an object writes: one, or one per version of its history."""
    if spec.version_history > 0:
        return [f"{spec.file_name}/{i}" for i in range(spec.version_history)]
    return [spec.file_name]


def _check_no_collisions(objects: list[ObjectSpec]) -> None:
    owners: dict[str, str] = {}
    for spec in objects:
        for path in output_paths(spec):
            other = owners.get(path)
            if other is not None:
                raise InvalidSpec(
                    f"object {spec.name!r}",
                    f"writes file {path!r}, which {other} writes too; set a distinct objectAlias",
                )
            owners[path] = f"object {spec.name!r}"
    # A file may not also be a directory of another object's history.
    paths = set(owners)
    for path in paths:
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent in paths:
            raise InvalidSpec(f"{owners[path]}", f"file {path!r} lies under file {parent!r}; rename one")


def _service_account_token(attributes: Mapping[str, str]) -> str:
    raw = attributes.get(SERVICE_ACCOUNT_TOKENS, "")
    if not raw:
        return ""
    try:
        tokens = json.loads(raw)
        token = tokens[TOKEN_AUDIENCE]["token"]
    except (ValueError, KeyError, TypeError):
        raise InvalidSpec(
            SERVICE_ACCOUNT_TOKENS,
            f"has no token for audience {TOKEN_AUDIENCE}; add it to the CSIDriver's tokenRequests",
        ) from None
    if not isinstance(token, str):
        raise InvalidSpec(SERVICE_ACCOUNT_TOKENS, f"token for {TOKEN_AUDIENCE} is not a string")
    return token


def _node_publish_secret(secrets: Mapping[str, str] | None) -> tuple[str, str]:
    # Upstream reads clientid / clientsecret; users spell the keys in any case.
    lowered = {k.lower(): v for k, v in (secrets or {}).items()}
    return lowered.get("clientid", ""), lowered.get("clientsecret", "")


def parse_mount(attributes: Mapping[str, str], secrets: Mapping[str, str] | None) -> MountParams:
    """Validate everything a mount needs, before any network call."""
    for key, value in attributes.items():
        if not isinstance(value, str):
            raise InvalidSpec(f"attributes.{key}", "must be a string")
    vault = attributes.get("keyvaultName", "")
    if not VAULT_NAME.fullmatch(vault):
        raise InvalidSpec(
            "keyvaultName",
            f"{vault!r} is not a Key Vault name: 3 to 24 characters of letters, digits and '-'",
        )
    tenant = attributes.get("tenantID") or attributes.get("tenantId", "")
    use_pod = parse_bool("usePodIdentity", attributes.get("usePodIdentity", ""))
    use_vm = parse_bool("useVMManagedIdentity", attributes.get("useVMManagedIdentity", ""))
    client_id = attributes.get("clientID", "")
    user_assigned = attributes.get("userAssignedIdentityID", "")
    chosen = [
        name
        for name, on in (
            ("usePodIdentity", use_pod),
            ("useVMManagedIdentity", use_vm),
            ("clientID", bool(client_id)),
        )
        if on
    ]
    if len(chosen) > 1:
        raise InvalidSpec(
            " and ".join(chosen),
            "choose one identity mode: workload identity (clientID), useVMManagedIdentity or usePodIdentity",
        )
    if user_assigned and not use_vm:
        raise InvalidSpec("userAssignedIdentityID", 'needs useVMManagedIdentity: "true"')
    sp_id, sp_secret = _node_publish_secret(secrets)
    token = ""
    if client_id:
        mode = IdentityMode.WORKLOAD
        token = _service_account_token(attributes)
        if not token:
            raise InvalidSpec(
                SERVICE_ACCOUNT_TOKENS,
                f"is missing; workload identity (clientID) needs the CSIDriver to request a token "
                f"for audience {TOKEN_AUDIENCE}",
            )
    elif use_vm:
        mode = IdentityMode.MANAGED
    elif use_pod:
        mode = IdentityMode.POD
        if not attributes.get(POD_NAME) or not attributes.get(POD_NAMESPACE):
            raise InvalidSpec(POD_NAME, "and pod.namespace are required for usePodIdentity")
    else:
        mode = IdentityMode.SERVICE_PRINCIPAL
        if not sp_id or not sp_secret:
            raise InvalidSpec(
                "nodePublishSecretRef",
                "has no clientid and clientsecret; set them in the node-publish secret, or choose "
                "workload identity (clientID), useVMManagedIdentity or usePodIdentity",
            )
    if mode in (IdentityMode.WORKLOAD, IdentityMode.SERVICE_PRINCIPAL) and not tenant:
        raise InvalidSpec("tenantID", f"is required for {mode.value}")
    objects = [parse_object(item, i) for i, item in enumerate(_object_list(attributes.get("objects", "")))]
    _check_no_collisions(objects)
    return MountParams(
        vault_name=vault,
        tenant_id=tenant,
        cloud_name=attributes.get("cloudName", ""),
        cloud_env_file=attributes.get("cloudEnvFileName", ""),
        identity=mode,
        client_id=client_id or user_assigned,
        objects=tuple(objects),
        pod_name=attributes.get(POD_NAME, ""),
        pod_namespace=attributes.get(POD_NAMESPACE, ""),
        service_account_token=token,
        sp_client_id=sp_id,
        sp_client_secret=sp_secret,
    )
