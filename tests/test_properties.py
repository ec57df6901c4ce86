"""Property-based tests over what users and Key Vault hand the project: classes, objects,
file paths, certificates and the FlexVolume / KMS JSON. Whatever comes in, only the
project's own errors come out, and no accepted file path leaves its root.

Example counts stay modest (the "kvmount" profile) so the suite stays fast; no deadline,
since a loaded 2-core box makes single examples slow.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kvmount.base import numbers
from kvmount.base.yamlread import Unreadable
from kvmount.cli import COMMANDS, build_parser
from kvmount.driver.request import MAX_GID, PublishError, parse_gid
from kvmount.flexvolume.options import parse_json, translate
from kvmount.keyvault import (
    ContentOptions,
    Encoding,
    Format,
    KeyVaultError,
    Limits,
    ObjectSpec,
    ObjectType,
    output_paths,
    parse_mount,
    parse_permission,
)
from kvmount.keyvault.content import JsonWebKey, certificate_pem, public_key_pem, secret_files, split_pem
from kvmount.kms.config import parse_entry
from kvmount.kube.classes import parse_class
from kvmount.kube.errors import InvalidClass
from kvmount.secretsync.errors import SyncError
from kvmount.secretsync.tls import tls_chain, tls_key
from kvmount.validate.command import check_text
from kvmount.volume.atomic_writer import Payload, PayloadError, validate

settings.register_profile(
    "kvmount", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("kvmount")

ROOT = "/volume"
SP = {"clientid": "app", "clientsecret": "secret"}

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
# Path-like text: the characters that make paths interesting, and some that break them.
path_text = st.lists(st.sampled_from([*"ab./\\\x00 é-_", "..", "//"]), max_size=16).map("".join)


def stays_inside(path: str) -> bool:
    """The path, resolved under ROOT, does not leave it."""
    resolved = os.path.normpath(os.path.join(ROOT, path))
    return resolved == ROOT or resolved.startswith(ROOT + "/")


@given(json_values)
def test_parse_class_takes_any_document(doc: Any) -> None:
    with contextlib.suppress(InvalidClass):
        parse_class(doc, "SecretProviderClass x")


@given(json_values, json_values, json_values, json_values)
def test_parse_class_takes_any_fields(meta: Any, provider: Any, parameters: Any, secret_objects: Any) -> None:
    doc = {
        "metadata": meta,
        "spec": {"provider": provider, "parameters": parameters, "secretObjects": secret_objects},
    }
    try:
        spc = parse_class(doc, "SecretProviderClass x")
    except InvalidClass:
        return
    assert isinstance(spc.name, str) and all(isinstance(v, str) for v in spc.parameters.values())


object_fields = st.fixed_dictionaries(
    {},
    optional={
        "objectName": st.one_of(path_text, json_values),
        "objectType": st.sampled_from(["secret", "key", "cert", "blob", ""]),
        "objectAlias": st.one_of(path_text, json_values),
        "objectVersion": st.text(max_size=8),
        "objectVersionHistory": st.one_of(st.integers(-3, 10**12), st.text(max_size=4)),
        "objectEncoding": st.sampled_from(["utf-8", "hex", "base64", "x"]),
        "objectFormat": st.sampled_from(["pem", "pfx", "der"]),
        "filePermission": st.text(alphabet="0123456789x", max_size=5),
    },
)
# Known keys with values of any shape, and a few unknown keys.
object_fields = st.tuples(object_fields, st.dictionaries(st.text(max_size=6), json_values, max_size=2)).map(
    lambda known_and_other: {**known_and_other[1], **known_and_other[0]}
)


@given(st.lists(object_fields, max_size=5), st.booleans())
def test_object_validation_raises_only_invalid_spec_and_paths_stay_inside(
    objects: list[dict[str, Any]], as_documents: bool
) -> None:
    items: list[Any] = [yaml.safe_dump(o) for o in objects] if as_documents else objects
    attributes = {"keyvaultName": "kvtest", "tenantID": "t", "objects": yaml.safe_dump({"array": items})}
    try:
        params = parse_mount(attributes, SP, Limits(max_version_history=20, max_objects=50))
    except KeyVaultError:
        return
    paths = [path for spec in params.objects for path in output_paths(spec)]
    # What validation accepts, the writer accepts, inside the volume.
    validate(Payload(path, 0o644, b"") for path in paths)
    assert all(stays_inside(path) for path in paths)


@given(st.text(max_size=300))
def test_objects_yaml_of_any_text_is_invalid_spec_at_worst(raw: str) -> None:
    with contextlib.suppress(KeyVaultError):
        parse_mount({"keyvaultName": "kvtest", "tenantID": "t", "objects": raw}, SP)


@given(st.lists(st.tuples(path_text, st.integers(-1, 0o1000)), max_size=6))
def test_the_writer_accepts_only_paths_inside_the_volume(files: list[tuple[str, int]]) -> None:
    try:
        checked = validate(Payload(path, mode, b"x") for path, mode in files)
    except PayloadError:
        return
    assert all(stays_inside(path) for path in checked)
    assert all(0 <= f.mode <= 0o777 for f in checked.values())


SPEC = ObjectSpec("cert", ObjectType.SECRET)
blobs = st.binary(max_size=300)
pem_like = st.builds(
    lambda kind, body: f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n",
    st.sampled_from(["CERTIFICATE", "PRIVATE KEY", "RSA PRIVATE KEY", "X"]),
    st.one_of(st.text(max_size=80), blobs.map(lambda b: base64.b64encode(b).decode())),
)


@given(
    st.one_of(st.text(max_size=200), pem_like, blobs.map(lambda b: base64.b64encode(b).decode())),
    st.sampled_from([None, "application/x-pkcs12", "application/x-pem-file", "text/plain"]),
    st.sampled_from([None, "https://kv/keys/k/1"]),
    st.sampled_from(list(Encoding)),
    st.sampled_from(list(Format)),
    st.booleans(),
)
def test_secret_conversion_raises_only_key_vault_errors(
    value: str, content_type: str | None, key_id: str | None, encoding: Encoding, fmt: Format, split: bool
) -> None:
    spec = ObjectSpec("cert", ObjectType.SECRET, encoding=encoding, format=fmt)
    try:
        files = secret_files(spec, "cert", value, content_type, key_id, ContentOptions(True, split))
    except KeyVaultError:
        return
    assert [p for p, _ in files][-1] == "cert"


@given(blobs)
def test_certificate_and_pem_parsing_of_any_bytes(data: bytes) -> None:
    split_pem(data)
    with contextlib.suppress(KeyVaultError):
        certificate_pem(SPEC, data)


@given(
    st.sampled_from(["RSA", "RSA-HSM", "EC", "EC-HSM", "oct", ""]),
    st.one_of(st.none(), blobs),
    st.one_of(st.none(), blobs),
    st.sampled_from([None, "P-256", "P-384", "P-521", "P-999"]),
    st.one_of(st.none(), blobs),
    st.one_of(st.none(), blobs),
)
@example("RSA", b"\x00", b"\x00", None, None, None)  # n < 3 was a ValueError
@example("EC", None, None, "P-256", b"\x01", b"\x01")  # a point off the curve
def test_public_key_conversion_raises_only_key_vault_errors(
    kty: str, n: bytes | None, e: bytes | None, crv: str | None, x: bytes | None, y: bytes | None
) -> None:
    with contextlib.suppress(KeyVaultError):
        public_key_pem(SPEC, JsonWebKey(kty, n, e, crv, x, y))


@given(st.one_of(blobs, pem_like.map(str.encode)))
def test_tls_split_of_any_content_raises_only_sync_errors(content: bytes) -> None:
    for split in (tls_key, tls_chain):
        with contextlib.suppress(SyncError):
            split(content, "file tls.pem")


flex_options = st.dictionaries(
    st.sampled_from(
        [
            "keyvaultname",
            "keyvaultobjectnames",
            "keyvaultobjecttypes",
            "keyvaultobjectaliases",
            "keyvaultobjectversions",
            "tenantid",
            "usepodidentity",
            "usevmmanagedidentity",
            "cloudname",
            "kubernetes.io/secret/clientid",
            "kubernetes.io/secret/clientsecret",
            "nmiport",
            "other",
        ]
    ),
    st.one_of(st.text(max_size=30), st.text(alphabet=";ab=", max_size=12)),
    max_size=8,
)


@given(st.one_of(st.text(max_size=200), json_values.map(json.dumps), flex_options.map(json.dumps)))
@example('{"keyvaultname": "kv", "kubernetes.io/secret/clientsecret": "\\u0080"}')  # non-ASCII base64
@example("[" * 100_000)
def test_flexvolume_options_raise_only_invalid_spec(raw: str) -> None:
    with contextlib.suppress(KeyVaultError):
        translate(parse_json(raw), environ={})


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "KMS_PROVIDER",
                "encryptionKMSType",
                "AZURE_VAULT_URL",
                "AZURE_CLIENT_ID",
                "AZURE_TENANT_ID",
                "AZURE_AUTH_METHOD",
                "AZURE_AUTHORITY_HOST",
                "AZURE_CERT_SECRET_NAME",
                "AZURE_FEDERATED_TOKEN_FILE",
            ]
        ),
        st.one_of(
            json_values, st.sampled_from(["azure-kv", "https://[", "https://kv.example", "workload-identity"])
        ),
        max_size=9,
    )
)
def test_kms_entries_raise_only_invalid_spec(entry: dict[str, Any]) -> None:
    with contextlib.suppress(KeyVaultError):
        parse_entry("ceph", entry)


# Text a user may write where a number is wanted: other scripts' digits (which str.isdigit,
# int() and float() take), signs, Go's prefixes, underscores, exponents, spaces, and numbers
# past int()'s 4,300 digits.
number_text = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.text(
        st.sampled_from([*"0123456789+-_xXoObBeE.: ", "²", "٣", "१", "\U0001d7d9", "Ⅻ", "\x00", "n"]),
        max_size=24,
    ),
    st.integers(4290, 4400).map(lambda n: "9" * n),
    st.text(max_size=12),
)


def _flag_types() -> list[tuple[str, Any]]:
    """(command flag, type) of every typed flag of every command: ports, addresses, sizes,
    counts, intervals, durations, and the rest."""
    found = []
    for command in COMMANDS:
        if command == "flexvolume":
            continue
        made = build_parser(command)
        found += [(f"{command} {a.option_strings[-1]}", a.type) for a in made._actions if callable(a.type)]
    return found


FLAG_TYPES = _flag_types()


@given(st.one_of(number_text, st.tuples(st.text(max_size=4), number_text).map(":".join)))
@example("999999")
@example(":99999999")
def test_every_flag_of_every_command_refuses_with_its_own_error(text: str) -> None:
    assert len(FLAG_TYPES) > 40
    for _flag, kind in FLAG_TYPES:
        with contextlib.suppress(argparse.ArgumentTypeError):
            kind(text)


@given(number_text, st.integers(-(2**40), 2**40), st.integers(0, 2**40))
def test_numbers_are_ascii_and_in_range_or_refused(text: str, low: int, span: int) -> None:
    for parse in (numbers.decimal, numbers.go_integer):
        try:
            value = parse(text, low, low + span)
        except numbers.NumberError as err:
            assert len(str(err)) < 200
            continue
        assert text.isascii() and low <= value <= low + span
    with contextlib.suppress(numbers.NumberError):
        assert 0 <= numbers.port(text) <= 65535


@given(number_text)
def test_volume_mount_groups_raise_only_publish_errors(group: str) -> None:
    with contextlib.suppress(PublishError):
        gid = parse_gid(group)
        assert gid is None or (group.isascii() and 0 <= gid <= MAX_GID)


@given(number_text, number_text)
@example("9" * 5000, "0644")
def test_object_numbers_raise_only_invalid_spec(history: str, permission: str) -> None:
    """objectVersionHistory unquoted (an integer to yaml.v3) and filePermission, as written."""
    objects = (
        "array:\n  - |\n    objectName: a\n    objectType: secret\n"
        f"    objectVersionHistory: {history}\n    filePermission: {json.dumps(permission)}\n"
    )
    with contextlib.suppress(KeyVaultError):
        parse_mount({"keyvaultName": "kvtest", "tenantID": "t", "objects": objects}, SP)
    with contextlib.suppress(KeyVaultError):
        parse_permission("--permission", permission)


@given(number_text)
@example("²")
def test_flexvolume_nmiport_raises_only_invalid_spec(port: str) -> None:
    options = {
        "keyvaultname": "kvtest",
        "tenantid": "t",
        "keyvaultobjectnames": "a",
        "keyvaultobjecttypes": "secret",
        "nmiport": port,
    }
    try:
        flex = translate(options, environ={})
    except KeyVaultError:
        return
    assert port.isascii() and 0 < flex.nmi_port < 65536


@given(number_text)
@example("99999999")
def test_kms_vault_url_ports_raise_only_invalid_spec(port: str) -> None:
    entry = {"KMS_PROVIDER": "azure-kv", "AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t"}
    with contextlib.suppress(KeyVaultError):
        parse_entry("ceph", {**entry, "AZURE_VAULT_URL": f"https://kv.example:{port}"})


@given(number_text, st.sampled_from(["objects", "secretObjects", "key"]))
def test_validate_of_any_number_gives_findings_or_one_line(text: str, where: str) -> None:
    """A number anywhere in a manifest: findings, or Unreadable (one line, exit 2)."""
    history = text if where == "objects" else "1"
    key = text if where == "key" else "k"
    manifest = (
        "kind: SecretProviderClass\nmetadata: {name: a}\nspec:\n  provider: azure\n"
        f"  secretObjects: [{{secretName: s, type: Opaque, data: [{{objectName: a, key: {key}}}]}}]\n"
        "  parameters:\n    keyvaultName: kvtest\n    tenantId: t\n"
        f"    objects: 'array: [{{objectName: a, objectType: secret, objectVersionHistory: {history}}}]'\n"
    )
    with contextlib.suppress(Unreadable):
        check_text(manifest, "x.yaml")
