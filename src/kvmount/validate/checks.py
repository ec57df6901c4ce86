"""One SecretProviderClass document -> findings, each with its line, field, severity and fix.

The provider's own checks (keyvault/parameters/objects.py: mount_problems) and the
driver's Secret sync checks (secretsync/data.py: entry_problems, metadata) are
called, never restated, so `kvmount validate` and a mount never disagree.
Added here is only what neither component sees: what the API server would
refuse or silently drop (non-string parameters, unknown fields), and names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import yaml

from kvmount.base import yamlread
from kvmount.csi.attributes import POD_NAME, POD_NAMESPACE, SA_TOKENS
from kvmount.csi.provider_client import NAME as PROVIDER_NAME
from kvmount.keyvault import (
    IDENTITY_BINDING_AUDIENCE,
    PARAMETERS,
    TOKEN_AUDIENCE,
    goyaml,
    mount_problems,
    output_paths,
    parse_mount,
    suggest,
)
from kvmount.kube.classes import GROUP, ROTATION_INTERVAL_ANNOTATION, rotation_interval
from kvmount.kube.names import name_problem
from kvmount.secretsync.data import entry_problems, metadata
from kvmount.secretsync.errors import SyncError, SyncReason
from kvmount.validate.document import ObjectItem, entries, line, locate, object_lines, scalar

KIND = "SecretProviderClass"
VERSIONS = ("v1", "v1alpha1")
PROVIDER = "azure"  # the socket kvmount's provider serves: azure.sock
_SPEC_KEYS = ("provider", "parameters", "secretObjects")
_SECRET_OBJECT_KEYS = ("secretName", "type", "data", "labels", "annotations")
_DATA_KEYS = ("objectName", "key")
_UNKNOWN_KEY = re.compile(r"unknown key '([^']+)'")
# The field a Secret sync check's message starts with: a class's secretObjects[i] or a SecretSync's
# secretObject, then maybe one of its data entries, then maybe a field of it.
_SYNC_FIELD = re.compile(r"^(spec\.secretObjects?(?:\[\d+\])?(?:\.data\[\d+\])?(?:\.[A-Za-z]+)?)")
# What the driver adds at mount time; offline, stand-ins let the class's own checks run.
_POD_STAND_INS = {POD_NAME: "validate", POD_NAMESPACE: "validate"}
_TOKEN_STAND_IN = json.dumps(
    {
        audience: {"token": "stand-in", "expirationTimestamp": ""}
        for audience in (TOKEN_AUDIENCE, IDENTITY_BINDING_AUDIENCE)
    }
)
_SECRET_STAND_IN = {"clientid": "stand-in", "clientsecret": "stand-in"}


def stand_in(parameters: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """A class's parameters plus stand-ins for what the driver adds at mount time (the pod, its
    service account token, the node-publish Secret), so the class's own checks can run offline."""
    stand_ins = {**_POD_STAND_INS, SA_TOKENS: _TOKEN_STAND_IN}
    return {**stand_ins, **parameters}, dict(_SECRET_STAND_IN)


class Severity(StrEnum):
    ERROR = "error"  # the API server, the driver or the provider refuses it
    WARNING = "warning"  # accepted, but ignored or probably not what was meant


@dataclass(frozen=True)
class Finding:
    severity: Severity
    field: str
    message: str  # the problem and the fix
    line: int = 0  # 1-based; 0 when unknown (a class read from the API server)


def check_class(doc: yaml.Node) -> list[Finding] | None:
    """Findings for one document; None when it is not a SecretProviderClass (a Pod in the same file)."""
    checked = check_class_files(doc)
    return None if checked is None else checked[0]


def check_class_files(doc: yaml.Node) -> tuple[list[Finding], list[str] | None] | None:
    """check_class's findings, and the files the class writes (None when unsure: its spec has
    errors), which a SecretSync of the class may name."""
    top = entries(doc)
    kind = scalar(top.get("kind", (doc, None))[1])
    if kind != KIND:
        return None
    found: list[Finding] = []

    def add(severity: Severity, path: str, message: str) -> None:
        found.append(Finding(severity, path, message, locate(doc, path)))

    api = scalar(top.get("apiVersion", (doc, None))[1])
    group, _, version = api.partition("/")
    if group != GROUP or version not in VERSIONS:
        add(Severity.ERROR, "apiVersion", f"{api!r} is not served; use {GROUP}/v1")
    elif version == "v1alpha1":
        add(Severity.WARNING, "apiVersion", f"{api} is deprecated; use {GROUP}/v1")
    meta = entries(top.get("metadata", (doc, None))[1])
    names(add, meta, "class")
    _annotations(add, entries(meta.get("annotations", (doc, None))[1]))
    spec_pair = top.get("spec")
    if spec_pair is None or not isinstance(spec_pair[1], yaml.MappingNode):
        add(Severity.ERROR, "spec", "is missing; set spec.provider and spec.parameters")
        return found, None
    spec = entries(spec_pair[1])
    unknown_keys(add, "spec", spec, _SPEC_KEYS, "the API server drops it")
    _provider(add, spec)
    files = _parameters(add, found, doc, spec)
    _secret_objects(add, spec, files)
    return sorted(found, key=lambda f: f.line), files


# The add(severity, path, message) of one check_class call.
Add = Callable[[Severity, str, str], None]


def names(add: Add, meta: dict[str, tuple[yaml.Node, yaml.Node]], what: str) -> str:
    """Checks metadata.name and metadata.namespace as the API server will; returns the name."""
    name = scalar(meta["name"][1]) if "name" in meta else ""
    problem = name_problem("metadata.name", name) if name else f"metadata.name is missing; name the {what}"
    if problem:
        add(Severity.ERROR, "metadata.name", problem.removeprefix("metadata.name "))
    namespace = scalar(meta["namespace"][1]) if "namespace" in meta else ""
    ns_problem = name_problem("metadata.namespace", namespace, label=True) if namespace else None
    if ns_problem:
        add(Severity.ERROR, "metadata.namespace", ns_problem.removeprefix("metadata.namespace "))
    return name


def _annotations(add: Add, annotations: dict[str, tuple[yaml.Node, yaml.Node]]) -> None:
    pair = annotations.get(ROTATION_INTERVAL_ANNOTATION)
    if pair is not None:
        try:
            rotation_interval(scalar(pair[1]))
        except ValueError as err:
            add(Severity.ERROR, "metadata.annotations", f"{ROTATION_INTERVAL_ANNOTATION}: {err}")


def unknown_keys(add: Add, where: str, keys: dict[str, Any], known: tuple[str, ...], effect: str) -> None:
    for key in keys:
        if key not in known:
            add(Severity.WARNING, f"{where}.{key}", f"unknown field, {effect}; {suggest(key, known)}")


def _provider(add: Add, spec: dict[str, tuple[yaml.Node, yaml.Node]]) -> None:
    provider = scalar(spec["provider"][1]) if "provider" in spec else ""
    if not provider:
        add(Severity.ERROR, "spec.provider", f"is missing; set it to {PROVIDER!r}")
    elif not PROVIDER_NAME.fullmatch(provider):
        add(
            Severity.ERROR,
            "spec.provider",
            f"{provider[:40]!r} is not a provider name the driver accepts: up to 30 letters, digits, "
            f"'_' or '-'; use {PROVIDER!r}",
        )
    elif provider != PROVIDER:
        add(
            Severity.WARNING,
            "spec.provider",
            f"{provider!r}: the driver will look for {provider}.sock, and kvmount's provider serves "
            f"{PROVIDER}.sock; use {PROVIDER!r} unless another provider is installed",
        )


def _parameters(
    add: Add, found: list[Finding], doc: yaml.Node, spec: dict[str, tuple[yaml.Node, yaml.Node]]
) -> list[str] | None:
    """Checks the parameters as the provider will; returns the files the class writes (None if unsure)."""
    node = spec["parameters"][1] if "parameters" in spec else None
    if node is not None and not isinstance(node, yaml.MappingNode) and scalar(node):
        add(Severity.ERROR, "spec.parameters", "must be a map of strings")
        return None
    params = entries(node)
    attributes: dict[str, str] = {}
    for key, (_, value) in params.items():
        where = f"spec.parameters.{key}"
        if not isinstance(value, yaml.ScalarNode):
            add(Severity.ERROR, where, "must be a string, not a list or map")
            continue
        if value.tag != "tag:yaml.org,2002:str" and not value.style:
            add(Severity.ERROR, where, f'the API server accepts strings only; quote it: "{value.value}"')
        attributes[key] = str(value.value)
        if key not in PARAMETERS and not key.startswith("csi.storage.k8s.io/"):
            add(
                Severity.WARNING,
                where,
                f"unknown parameter, the provider ignores it; {suggest(key, PARAMETERS)}",
            )
    objects_pair = params.get("objects")
    items = object_lines(objects_pair[1], line(objects_pair[0])) if objects_pair else []
    full, secrets = stand_in(attributes)
    problems = mount_problems(full, secrets)
    for problem in problems:
        err = problem.error
        message = str(err).removeprefix(f"{err.field}: ")
        path, at = _mount_place(doc, err.field, message, problem.index, items)
        found.append(Finding(Severity.ERROR, path, message, at))
    if problems:
        return None
    return [path for spec_ in parse_mount(full, secrets).objects for path in output_paths(spec_)]


def _mount_place(
    doc: yaml.Node, field: str, message: str, index: int | None, items: list[ObjectItem]
) -> tuple[str, int]:
    """The path and line of a provider check's field: a parameter, or an object's item or field."""
    item: ObjectItem | None = None
    if index is not None and index < len(items):
        item = items[index]
    elif field.startswith("object '"):
        named = [it for it in items if field.startswith(f"object {it.name!r}")]
        item = named[-1] if named else None
    if item is not None:
        where = f"spec.parameters.objects[{item.index}]"
        rest = field.removeprefix(f"object {item.name!r}.")
        top = re.split(r"[.\[]", rest, maxsplit=1)[0]
        if rest != top and top in item.fields:  # a field of one of jmesPath's entries
            return f"{where}.{rest}", item.fields[top]
        unknown = _UNKNOWN_KEY.search(message)
        key = unknown.group(1) if unknown else field.rpartition(".")[2]
        if key in item.fields:
            return (where if unknown else f"{where}.{key}"), item.fields[key]
        return where, item.line
    first = re.split(r"[ .\[]", field, maxsplit=1)[0]
    return f"spec.parameters.{field}", locate(doc, f"spec.parameters.{first}")


def _secret_objects(add: Add, spec: dict[str, tuple[yaml.Node, yaml.Node]], files: list[str] | None) -> None:
    node = spec["secretObjects"][1] if "secretObjects" in spec else None
    if node is None or goyaml.is_null(node):
        return
    if not isinstance(node, yaml.SequenceNode):
        add(Severity.ERROR, "spec.secretObjects", "must be a list of {secretName, type, data}")
        return
    for i, entry_node in enumerate(node.value):
        where = f"spec.secretObjects[{i}]"
        fields = entries(entry_node)
        unknown_keys(add, where, fields, _SECRET_OBJECT_KEYS, "the API server drops it")
        data = fields.get("data")
        if data is not None and isinstance(data[1], yaml.SequenceNode):
            for j, item in enumerate(data[1].value):
                unknown_keys(add, f"{where}.data[{j}]", entries(item), _DATA_KEYS, "the API server drops it")
        try:
            entry = yamlread.read(yaml.safe_load, yaml.serialize(entry_node))
        except yamlread.Unreadable as err:
            add(Severity.ERROR, where, str(err))
            continue
        for problem in entry_problems(entry, files or [], where):
            # Which files the class writes is known only once its objects are valid.
            if problem.reason is not SyncReason.OBJECT_NOT_MOUNTED or files is not None:
                sync_finding(add, where, problem)
        if isinstance(entry, dict):
            try:
                metadata(entry, where)
            except SyncError as problem:
                sync_finding(add, where, problem)


def sync_finding(add: Add, where: str, problem: SyncError) -> None:
    text = str(problem)
    match = _SYNC_FIELD.match(text)
    path = match.group(1) if match else where
    add(Severity.ERROR, path, text[len(path) :].lstrip(" :") or text)
