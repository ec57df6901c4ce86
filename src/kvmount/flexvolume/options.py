"""kubelet's FlexVolume options -> the provider's mount attributes and secrets.

Option names are those of the original Azure Key Vault FlexVolume driver, so
existing pod specs keep working. They are only translated here; what they
mean is checked by ``keyvault.objects.parse_mount``, as for the provider.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml

from kvmount.base import numbers
from kvmount.csi.attributes import POD_NAME, POD_NAMESPACE, POD_UID
from kvmount.keyvault import NMI_PORT, InvalidSpec

KUBELET_PREFIX = "kubernetes.io/"
SECRET_PREFIX = "kubernetes.io/secret/"
# What go-autorest (and so the original driver) read for AzureStackCloud.
ENVIRONMENT_FILE_VAR = "AZURE_ENVIRONMENT_FILEPATH"
SEPARATOR = ";"

# option (plural, ";"-separated) -> (legacy singular option, field in an object spec)
_LISTS = {
    "keyvaultobjectnames": ("keyvaultobjectname", "objectName"),
    "keyvaultobjecttypes": ("keyvaultobjecttype", "objectType"),
    "keyvaultobjectversions": ("keyvaultobjectversion", "objectVersion"),
    "keyvaultobjectaliases": ("keyvaultobjectalias", "objectAlias"),
}
# option -> provider attribute, passed on unchanged
_SCALARS = {
    "keyvaultname": "keyvaultName",
    "tenantid": "tenantID",
    "cloudname": "cloudName",
    "cloudenvfilename": "cloudEnvFileName",
    "usepodidentity": "usePodIdentity",
    "usevmmanagedidentity": "useVMManagedIdentity",
    "vmmanagedidentityclientid": "userAssignedIdentityID",
}
_POD_INFO = {
    "kubernetes.io/pod.name": POD_NAME,
    "kubernetes.io/pod.namespace": POD_NAMESPACE,
    "kubernetes.io/pod.uid": POD_UID,
}
# Required by driver versions before 0.0.13 but never needed to read a vault.
_IGNORED = {"resourcegroup", "subscriptionid"}
_KNOWN = sorted({*_LISTS, *(s for s, _ in _LISTS.values()), *_SCALARS, *_IGNORED, "nmiport"})


@dataclass(frozen=True)
class FlexOptions:
    attributes: dict[str, str]
    # The node-publish secret (decoded clientid / clientsecret); never logged.
    secrets: dict[str, str] = field(repr=False)
    nmi_port: int = NMI_PORT


def parse_json(raw: str) -> dict[str, str]:
    """kubelet's options argument: a JSON object of strings."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        # The text may hold the (base64) client secret, so it is not quoted back.
        raise InvalidSpec("options", "is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidSpec("options", "must be a JSON object")
    for key, value in doc.items():
        if not isinstance(value, str):
            raise InvalidSpec(key, "must be a string")
    return doc


def _pick(options: Mapping[str, str], plural: str, singular: str) -> str:
    if plural in options and singular in options:
        raise InvalidSpec(plural, f"and {singular} are both set; use {plural} only")
    return options.get(plural, options.get(singular, ""))


def _objects(options: Mapping[str, str]) -> str:
    """The objects as the provider's `objects` YAML (a mapping with `array`)."""
    columns: dict[str, list[str]] = {}
    for plural, (singular, _) in _LISTS.items():
        raw = _pick(options, plural, singular)
        columns[plural] = [entry.strip() for entry in raw.split(SEPARATOR)] if raw.strip() else []
    names = columns["keyvaultobjectnames"]
    if not names:
        raise InvalidSpec("keyvaultobjectnames", "is required: the ';'-separated names of the objects")
    for position, name in enumerate(names, 1):
        if not name:
            raise InvalidSpec("keyvaultobjectnames", f"entry {position} is empty")
    if not columns["keyvaultobjecttypes"]:
        raise InvalidSpec("keyvaultobjecttypes", "is required: one of secret, key, cert for each object")
    for plural, values in columns.items():
        optional = plural in ("keyvaultobjectversions", "keyvaultobjectaliases")
        if (values or not optional) and len(values) != len(names):
            raise InvalidSpec(
                plural,
                f"has {len(values)} entries but keyvaultobjectnames has {len(names)}; "
                f"give one per object, separated by '{SEPARATOR}'",
            )
    array = []
    for i in range(len(names)):
        spec = {_LISTS[p][1]: values[i] for p, values in columns.items() if values and values[i]}
        array.append(spec)
    text: str = yaml.safe_dump({"array": array}, sort_keys=False)
    return text


def _decode_secret(key: str, value: str) -> str:
    # kubelet base64-encodes secret values; whitespace is tolerated as the original did.
    compact = "".join(value.split())
    try:
        return base64.b64decode(compact, validate=True).decode("utf-8")
    except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 once decoded
        raise InvalidSpec(key, "is not base64 of UTF-8 text") from None


def _nmi_port(raw: str) -> int:
    if not raw:
        return NMI_PORT
    try:
        return numbers.port(raw, zero=False)
    except numbers.NumberError:
        raise InvalidSpec("nmiport", f"{raw[:40]!r} is not a port number (1-65535)") from None


def translate(options: Mapping[str, str], environ: Mapping[str, str] | None = None) -> FlexOptions:
    """kubelet's options as the attributes and secrets the Key Vault mount takes."""
    environ = os.environ if environ is None else environ
    unknown = sorted(k for k in options if not k.startswith(KUBELET_PREFIX) and k not in _KNOWN)
    if unknown:
        raise InvalidSpec(unknown[0], f"is not an option of azure/kv; known options: {', '.join(_KNOWN)}")
    if not options.get("keyvaultname"):
        raise InvalidSpec("keyvaultname", "is required: the name of the Key Vault")
    attributes = {attr: options[opt] for opt, attr in _SCALARS.items() if opt in options}
    attributes["objects"] = _objects(options)
    # A node may name the AzureStackCloud environment file once, for every volume.
    if "cloudEnvFileName" not in attributes and environ.get(ENVIRONMENT_FILE_VAR):
        attributes["cloudEnvFileName"] = environ[ENVIRONMENT_FILE_VAR]
    attributes.update({attr: options[opt] for opt, attr in _POD_INFO.items() if opt in options})
    secrets = {
        key.removeprefix(SECRET_PREFIX): _decode_secret(key, value)
        for key, value in options.items()
        if key.startswith(SECRET_PREFIX)
    }
    return FlexOptions(attributes, secrets, _nmi_port(options.get("nmiport", "")))
