"""A mount's parameters and each object's spec, parsed and validated.

Parameter names are those of the upstream Azure provider's SecretProviderClass
(`keyvaultName`, `objects`, ...). Everything is checked here, before any
network call, so a typo fails fast instead of being silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import yaml

from kvmount.csi.attributes import POD_NAME, POD_NAMESPACE
from kvmount.keyvault.errors import InvalidSpec
from kvmount.keyvault.identity.choice import choose_identity
from kvmount.keyvault.jsonparts import check_path
from kvmount.keyvault.parameters import goyaml
from kvmount.keyvault.parameters.filenames import check_names, check_owned_paths
from kvmount.keyvault.parameters.findings import Findings, Problem, suggest
from kvmount.keyvault.parameters.limits import Limits, check_objects
from kvmount.keyvault.types import Encoding, Format, JsonPart, MountParams, ObjectSpec, ObjectType

VAULT_NAME = re.compile(r"^[-A-Za-z0-9]{3,24}$")
_OBJECT_KEYS = {
    "objectName",
    "objectType",
    "objectAlias",
    "objectVersion",
    "objectVersionHistory",
    "objectEncoding",
    "objectFormat",
    "filePermission",
    "jmesPath",
    "objectNamePattern",
    "objectTags",
    "allowEmpty",
}
# Key Vault's own bounds: names of at most 127 characters, at most 15 tags on an object.
MAX_PATTERN_LENGTH, MAX_TAGS = 127, 15
_JSON_PART_KEYS = {"path", "objectAlias"}
# The class parameters the provider reads, as upstream names them (tenantID is read as well as tenantId).
PARAMETERS = frozenset(
    {
        "keyvaultName",
        "tenantId",
        "tenantID",
        "clientID",
        "usePodIdentity",
        "useVMManagedIdentity",
        "userAssignedIdentityID",
        "useAzureTokenProxy",
        "cloudName",
        "cloudEnvFileName",
        "objects",
    }
)


def parse_permission(name: str, value: str) -> int:
    """An octal file mode, 0 to 0777, read as upstream reads it (Go's ParseInt base 8): "0644", "644"."""
    text = value.strip()
    mode = int(text, 8) if re.fullmatch(r"[+-]?[0-7]+", text) else -1
    if not 0 <= mode <= 0o777:
        raise InvalidSpec(name, f'{value!r} is not an octal file mode from 0 to 0777, e.g. "0644"')
    return mode


def clean_relative_path(name: str, path: str) -> str:
    """A file name inside the mount, cleaned as the driver's writer cleans it ("./x" and "a//b/"
    are "x" and "a/b"); absolute names and ".." components never leave the target."""
    if path.startswith("/"):
        raise InvalidSpec(name, f"file name {path!r} is absolute; use a relative name")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts or (parts and parts[0].startswith("..")):
        raise InvalidSpec(name, f"file name {path!r} must be a relative path without '..'")
    if not parts:
        raise InvalidSpec(name, f"file name {path!r} names no file")
    return "/".join(parts)


def object_items(raw: str) -> list[yaml.Node]:
    """The items of `objects`' array as YAML nodes (their marks give `kvmount validate` its lines)."""
    if not raw:
        raise InvalidSpec("objects", "is not set; list the Key Vault objects to mount under 'array'")
    doc = goyaml.compose("objects", raw)
    if doc is None:
        return []
    keys = goyaml.mapping("objects", doc, "one key, 'array', holding a list")
    if set(keys) != {"array"}:
        raise InvalidSpec("objects", "must be a YAML mapping with one key, 'array', holding a list")
    array = keys["array"]
    if goyaml.is_null(array):
        return []
    if not isinstance(array, yaml.SequenceNode):
        raise InvalidSpec("objects", "'array' must be a list of objects")
    return [item for item in array.value if not goyaml.is_null(item)]


def parse_object(item: yaml.Node, index: int) -> ObjectSpec:
    where = f"objects[{index}]"
    if isinstance(item, yaml.ScalarNode):
        # Upstream's form: each item is a YAML document of its own (`- |`).
        item = goyaml.compose(where, item.value) or yaml.MappingNode("tag:yaml.org,2002:map", [])
    fields = goyaml.mapping(where, item, "objectName, objectType, ...")
    unknown = sorted(k for k in fields if k not in _OBJECT_KEYS)
    if unknown:
        raise InvalidSpec(where, f"unknown key {unknown[0]!r}; {suggest(unknown[0], _OBJECT_KEYS)}")
    lists = ("objectVersionHistory", "jmesPath", "objectTags")
    text = {k: goyaml.string(f"{where}.{k}", v) for k, v in fields.items() if k not in lists}
    name, pattern = text.get("objectName", ""), text.get("objectNamePattern", "")
    tags = _tags(f"{where}.objectTags", fields.get("objectTags"))
    if name and (pattern or tags):
        raise InvalidSpec(
            where, "sets objectName and objectNamePattern / objectTags; name one object or select several"
        )
    if not (name or pattern or tags):
        raise InvalidSpec(f"{where}.objectName", "is required (or objectNamePattern / objectTags)")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InvalidSpec(f"{where}.objectNamePattern", f"is longer than {MAX_PATTERN_LENGTH} characters")
    if name:
        where = f"object {name!r}"
    kind = text.get("objectType", "")
    try:
        object_type = ObjectType(kind)
    except ValueError:
        problem = f"{kind!r} is not" if kind else "is required:"
        raise InvalidSpec(f"{where}.objectType", f"{problem} one of secret, key, cert") from None
    encoding_raw = text.get("objectEncoding", "")
    try:
        encoding = Encoding(encoding_raw.lower() or "utf-8")
    except ValueError:
        raise InvalidSpec(
            f"{where}.objectEncoding", f"{encoding_raw!r} is not one of utf-8, hex, base64"
        ) from None
    if encoding_raw and object_type is not ObjectType.SECRET:
        raise InvalidSpec(f"{where}.objectEncoding", "applies to secrets only")
    format_raw = text.get("objectFormat", "")
    try:
        fmt = Format(format_raw.lower() or "pem")
    except ValueError:
        raise InvalidSpec(f"{where}.objectFormat", f"{format_raw!r} is not one of pem, pfx") from None
    if fmt is Format.PFX and object_type is not ObjectType.SECRET:
        raise InvalidSpec(f"{where}.objectFormat", "pfx applies to secrets only (type secret)")
    history = goyaml.int32(f"{where}.objectVersionHistory", fields.get("objectVersionHistory"))
    if history < 0:
        raise InvalidSpec(f"{where}.objectVersionHistory", f"{history} is negative; use 0 or more")
    permission_raw = text.get("filePermission", "")
    permission = parse_permission(f"{where}.filePermission", permission_raw) if permission_raw else None
    alias = text.get("objectAlias", "")
    if alias:
        alias = clean_relative_path(f"{where}.objectAlias", alias)
    elif name:
        clean_relative_path(f"{where}.objectName", name)
    spec = ObjectSpec(
        name=name,
        type=object_type,
        alias=alias,
        version=text.get("objectVersion", ""),
        version_history=history,
        encoding=encoding,
        format=fmt,
        file_permission=permission,
        json_parts=_json_parts(where, fields.get("jmesPath")),
        name_pattern=pattern,
        tags=tags,
        allow_empty=_boolean(f"{where}.allowEmpty", text.get("allowEmpty", "")),
    )
    if spec.json_parts:
        _check_json_parts(where, spec)
    _check_selection(where, spec, set(fields))
    return spec


def _boolean(field: str, value: str) -> bool:
    if value.lower() not in ("", "true", "false"):
        raise InvalidSpec(field, f'{value!r} is not "true" or "false"')
    return value.lower() == "true"


def _tags(field: str, node: yaml.Node | None) -> tuple[tuple[str, str], ...]:
    """`objectTags`: a mapping of tag names to the values an object must carry."""
    if goyaml.is_null(node):
        return ()
    assert node is not None
    entries = goyaml.mapping(field, node, "tag names to values")
    if len(entries) > MAX_TAGS:
        raise InvalidSpec(field, f"has {len(entries)} tags; a Key Vault object carries at most {MAX_TAGS}")
    return tuple(sorted((key, goyaml.string(f"{field}.{key}", value)) for key, value in entries.items()))


def _check_selection(where: str, spec: ObjectSpec, given: set[str]) -> None:
    """A selecting entry fetches each match's current version as if named, and nothing else."""
    if not spec.selects:
        if spec.allow_empty:
            raise InvalidSpec(f"{where}.allowEmpty", "applies to objectNamePattern / objectTags only")
        return
    for key in ("objectVersion", "objectVersionHistory", "jmesPath"):
        if key in given:
            raise InvalidSpec(f"{where}.{key}", "cannot be combined with objectNamePattern / objectTags")


def _json_parts(where: str, node: yaml.Node | None) -> tuple[JsonPart, ...]:
    """`jmesPath` in the AWS provider's shape: a list of {path, objectAlias}."""
    field = f"{where}.jmesPath"
    if goyaml.is_null(node):
        return ()
    if not isinstance(node, yaml.SequenceNode):
        raise InvalidSpec(field, "must be a list of entries with a path and an objectAlias")
    parts: list[JsonPart] = []
    for i, item in enumerate(node.value):
        entry = f"{field}[{i}]"
        fields = goyaml.mapping(entry, item, "path and objectAlias")
        unknown = sorted(k for k in fields if k not in _JSON_PART_KEYS)
        if unknown:
            raise InvalidSpec(entry, f"unknown key {unknown[0]!r}; {suggest(unknown[0], _JSON_PART_KEYS)}")
        path = goyaml.string(f"{entry}.path", fields.get("path"))
        alias = goyaml.string(f"{entry}.objectAlias", fields.get("objectAlias"))
        for key, value in (("path", path), ("objectAlias", alias)):
            if not value:
                raise InvalidSpec(f"{entry}.{key}", "is required")
        check_path(f"{entry}.path", path)
        parts.append(JsonPart(path, clean_relative_path(f"{entry}.objectAlias", alias)))
    return tuple(parts)


def _check_json_parts(where: str, spec: ObjectSpec) -> None:
    """`jmesPath` reads one secret's text: no history, no other type, no decoding first."""
    field = f"{where}.jmesPath"
    if spec.type is not ObjectType.SECRET:
        raise InvalidSpec(field, "applies to secrets only (type secret)")
    if spec.has_history:
        raise InvalidSpec(field, "cannot be combined with objectVersionHistory above 1; pin objectVersion")
    if spec.encoding is not Encoding.UTF8 or spec.format is not Format.PEM:
        raise InvalidSpec(field, "reads the value as JSON text; remove objectEncoding and objectFormat")


def output_paths(spec: ObjectSpec) -> list[str]:
    """The files an object writes: one, or one per version of its history (above 1, as upstream)."""
    if spec.has_history:
        return [f"{spec.file_name}/{i}" for i in range(spec.version_history)]
    return list(spec.file_names)


def _check_no_collisions(objects: list[ObjectSpec]) -> None:
    check_owned_paths((path, f"object {spec.name!r}") for spec in objects for path in output_paths(spec))


def check_selected(objects: list[ObjectSpec], limits: Limits) -> None:
    """A mount's objects once its selections are listed: the caps and the files, again."""
    check_objects(objects, limits)
    check_names(objects)
    _check_no_collisions(objects)


def _vault_name(attributes: Mapping[str, str]) -> str:
    vault = attributes.get("keyvaultName", "")
    if not VAULT_NAME.fullmatch(vault):
        raise InvalidSpec(
            "keyvaultName",
            f"{vault!r} is not a Key Vault name: 3 to 24 characters of letters, digits and '-'",
        )
    return vault


def _parse(
    attributes: Mapping[str, str],
    secrets: Mapping[str, str] | None,
    findings: Findings,
    limits: Limits | None = None,
) -> MountParams | None:
    for key, value in attributes.items():
        if not isinstance(value, str):
            raise InvalidSpec(f"attributes.{key}", "must be a string")
    # Upstream trims every parameter it reads; a stray space in a class must mean the same here.
    attributes = {key: value.strip() for key, value in attributes.items()}
    vault = findings.check(_vault_name, attributes)
    identity = findings.check(choose_identity, attributes, secrets)
    items = findings.check(object_items, attributes.get("objects", "")) or []
    parsed = [findings.check(parse_object, item, i, index=i) for i, item in enumerate(items)]
    objects = [spec for spec in parsed if spec is not None]
    # Paths are listed only for a mount within the caps (a history of 10^9 is not listed).
    before = len(findings.found)
    findings.check(check_objects, objects, limits or Limits())
    findings.check(check_names, objects)
    if len(findings.found) == before:
        findings.check(_check_no_collisions, objects)
    if vault is None or identity is None or len(objects) < len(parsed) or findings.found:
        return None
    return MountParams(
        vault_name=vault,
        tenant_id=identity.tenant,
        cloud_name=attributes.get("cloudName", ""),
        cloud_env_file=attributes.get("cloudEnvFileName", ""),
        identity=identity.mode,
        client_id=identity.client_id,
        objects=tuple(objects),
        pod_name=attributes.get(POD_NAME, ""),
        pod_namespace=attributes.get(POD_NAMESPACE, ""),
        service_account_token=identity.token,
        sp_client_id=identity.sp_id,
        sp_client_secret=identity.sp_secret,
    )


def parse_mount(
    attributes: Mapping[str, str], secrets: Mapping[str, str] | None, limits: Limits | None = None
) -> MountParams:
    """Validate everything a mount needs, before any network call; raises the first problem."""
    params = _parse(attributes, secrets, Findings(collect=False), limits)
    assert params is not None  # without collecting, every problem raised
    return params


def mount_problems(attributes: Mapping[str, str], secrets: Mapping[str, str] | None) -> list[Problem]:
    """Every problem parse_mount would refuse (it raises the first), for `kvmount validate`."""
    findings = Findings(collect=True)
    _parse(attributes, secrets, findings)
    return findings.found
