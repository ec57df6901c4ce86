"""Validation of a mount's parameters: every bad input is refused with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvmount.csi.attributes import SA_TOKENS
from kvmount.keyvault import (
    Encoding,
    Format,
    IdentityMode,
    InvalidSpec,
    ObjectType,
    clouds,
    output_paths,
    parse_mount,
)

SP = {"clientid": "app", "clientsecret": "s3cret-value"}


def objects(*items: str) -> str:
    body = "\n".join("  - |\n" + "\n".join(f"    {line}" for line in item.splitlines()) for item in items)
    return f"array:\n{body}\n"


def attrs(**extra: str) -> dict[str, str]:
    base = {
        "keyvaultName": "kvtest",
        "tenantID": "tenant",
        "objects": objects("objectName: a\nobjectType: secret"),
    }
    base.update(extra)
    return base


def test_full_object_spec_is_parsed() -> None:
    params = parse_mount(
        attrs(
            objects=objects(
                "objectName: tls\nobjectType: secret\nobjectAlias: tls.pfx\nobjectFormat: pfx\n"
                "objectEncoding: base64\nfilePermission: '0600'",
                "objectName: k\nobjectType: key\nobjectVersion: abc",
                "objectName: c\nobjectType: cert\nobjectVersionHistory: 3",
            )
        ),
        SP,
    )
    tls, key, cert = params.objects
    assert (tls.file_name, tls.format, tls.encoding, tls.file_permission) == (
        "tls.pfx",
        Format.PFX,
        Encoding.BASE64,
        0o600,
    )
    assert (key.type, key.version, key.id) == (ObjectType.KEY, "abc", "key/k")
    assert cert.version_history == 3
    assert params.identity is IdentityMode.SERVICE_PRINCIPAL
    assert params.sp_client_secret == "s3cret-value"
    assert "s3cret-value" not in repr(params)


def test_tenant_id_spellings_and_case_insensitive_secret_keys() -> None:
    params = parse_mount(
        {"keyvaultName": "kvtest", "tenantId": "t2", "objects": "array: []"},
        {"ClientID": "a", "ClientSecret": "b"},
    )
    assert (params.tenant_id, params.sp_client_id, params.sp_client_secret) == ("t2", "a", "b")


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ({"keyvaultName": "kv"}, "keyvaultName", "3 to 24"),
        ({"keyvaultName": "kv_bad!"}, "keyvaultName", "3 to 24"),
        ({"keyvaultName": "k" * 25}, "keyvaultName", "3 to 24"),
        (
            {"objects": objects("objectName: a\nobjectType: secret\nobjectVerison: 1")},
            "objects[0]",
            "objectVerison",
        ),
        (
            {"objects": objects("objectName: a\nobjectType: secret", "objectName: a\nobjectType: key")},
            "object 'a'",
            "distinct objectAlias",
        ),
        (
            {"objects": objects("objectName: a\nobjectType: secret\nobjectAlias: /etc/passwd")},
            "objectAlias",
            "absolute",
        ),
        ({"objects": objects("objectName: a\nobjectType: secret\nobjectAlias: ../x")}, "objectAlias", ".."),
        (
            {"objects": objects("objectName: a\nobjectType: secret\nobjectAlias: x/../../y")},
            "objectAlias",
            "..",
        ),
        (
            {"objects": objects("objectName: a\nobjectType: secret\nfilePermission: '0999'")},
            "filePermission",
            "octal",
        ),
        (
            {"objects": objects("objectName: a\nobjectType: secret\nfilePermission: rw")},
            "filePermission",
            "octal",
        ),
        (
            {"objects": objects("objectName: a\nobjectType: secret\nfilePermission: '01777'")},
            "filePermission",
            "octal",
        ),
        (
            {"objects": objects("objectName: a\nobjectType: secret\nobjectVersionHistory: -1")},
            "objectVersionHistory",
            "negative",
        ),
        ({"objects": objects("objectName: a\nobjectType: blob")}, "objectType", "secret, key, cert"),
        (
            {"objects": objects("objectName: a\nobjectType: key\nobjectFormat: pfx")},
            "objectFormat",
            "secrets only",
        ),
        (
            {"objects": objects("objectName: a\nobjectType: secret\nobjectFormat: der")},
            "objectFormat",
            "pem, pfx",
        ),
        (
            {"objects": objects("objectName: a\nobjectType: secret\nobjectEncoding: utf-16")},
            "objectEncoding",
            "utf-8, hex, base64",
        ),
        (
            {"objects": objects("objectName: a\nobjectType: cert\nobjectEncoding: hex")},
            "objectEncoding",
            "secrets only",
        ),
        ({"objects": objects("objectType: secret")}, "objectName", "required"),
        ({"objects": "array: [unclosed"}, "objects", "YAML"),
        ({"objects": "- a\n- b"}, "objects", "'array'"),
        (
            {"usePodIdentity": "true", "useVMManagedIdentity": "true"},
            "usePodIdentity and useVMManagedIdentity",
            "one identity",
        ),
        (
            {"clientID": "c", "useVMManagedIdentity": "true"},
            "useVMManagedIdentity and clientID",
            "one identity",
        ),
        ({"usePodIdentity": "maybe"}, "usePodIdentity", "boolean"),
        ({"objects": ""}, "objects", "not set"),
        ({"objects": "  \n "}, "objects", "not set"),
        (
            {"objects": objects("objectName: a\nobjectType: secret\nobjectVersionHistory: '2'")},
            "objectVersionHistory",
            "unquoted",
        ),
        (
            {"objects": objects("objectName: a\nobjectType: secret\nfilePermission: 0o644")},
            "filePermission",
            "octal",
        ),
        ({"objects": objects("objectName: a\nobjectType: secret\nobjectName: b")}, "objects[0]", "twice"),
        (
            {"objects": objects("objectName: a\nobjectType: secret\nobjectAlias: ./")},
            "objectAlias",
            "names no file",
        ),
        ({"objects": objects("objectName: a\nobjectType: secret\nobjectAlias: ./../x")}, "objectAlias", ".."),
        (
            {
                "objects": objects(
                    "objectName: a\nobjectType: secret", "objectName: b\nobjectType: secret\nobjectAlias: ./a"
                )
            },
            "object 'b'",
            "distinct objectAlias",
        ),
        ({"clientID": "c"}, SA_TOKENS, "api://AzureADTokenExchange"),
        (
            {"clientID": "c", SA_TOKENS: '{"other": {"token": "t"}}'},
            SA_TOKENS,
            "audience",
        ),
        # Deeper than json recurses: once RecursionError, INTERNAL from the provider.
        ({"clientID": "c", SA_TOKENS: "[" * 100_000}, SA_TOKENS, "audience"),
        ({"tenantID": ""}, "tenantID", "required"),
        ({"usePodIdentity": "true"}, "pod.name", "required"),
    ],
)
def test_bad_input_is_refused_naming_the_field(extra: dict[str, str], field: str, words: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_mount(attrs(**extra), SP)
    message = str(info.value)
    assert field in message
    assert words in message
    assert "s3cret-value" not in message


@pytest.mark.parametrize(
    ("written", "mode"),
    [("0644", 0o644), ("0755", 0o755), ("0600", 0o600), ("400", 0o400), ("'0644'", 0o644), ('"440"', 0o440)],
)
def test_file_permission_is_the_scalar_as_written(written: str, mode: int) -> None:
    # Unquoted 0644 is the integer 420 to a YAML 1.1 reader; upstream's Go reader sees the text "0644".
    params = parse_mount(
        attrs(objects=objects(f"objectName: a\nobjectType: secret\nfilePermission: {written}")), SP
    )
    assert params.objects[0].file_permission == mode


@pytest.mark.parametrize(("written", "history"), [("2", 2), ("010", 8), ("0x3", 3), ("2.0", 2), ("~", 0)])
def test_history_is_read_as_upstream_reads_an_integer(written: str, history: int) -> None:
    params = parse_mount(
        attrs(objects=objects(f"objectName: a\nobjectType: secret\nobjectVersionHistory: {written}")), SP
    )
    assert params.objects[0].version_history == history


def test_history_of_one_is_the_plain_file() -> None:
    params = parse_mount(
        attrs(objects=objects("objectName: a\nobjectType: secret\nobjectVersionHistory: 1")), SP
    )
    assert [output_paths(o) for o in params.objects] == [["a"]]
    params = parse_mount(
        attrs(objects=objects("objectName: a\nobjectType: secret\nobjectVersionHistory: 2")), SP
    )
    assert [output_paths(o) for o in params.objects] == [["a/0", "a/1"]]


def test_names_and_values_are_trimmed() -> None:
    params = parse_mount(
        attrs(
            keyvaultName=" kvtest ",
            tenantID=" tenant\t",
            cloudName=" AzurePublicCloud ",
            objects=objects(
                "objectName: ' plain '\nobjectType: ' secret '\nobjectAlias: ' p '\nfilePermission: ' 0600 '"
            ),
        ),
        SP,
    )
    (spec,) = params.objects
    assert (params.vault_name, params.tenant_id, params.cloud_name) == (
        "kvtest",
        "tenant",
        "AzurePublicCloud",
    )
    assert (spec.name, spec.type, spec.file_name, spec.file_permission) == (
        "plain",
        ObjectType.SECRET,
        "p",
        0o600,
    )


@pytest.mark.parametrize(
    ("alias", "clean"), [("./x", "x"), ("dir/", "dir"), ("a//b", "a/b"), ("a..b", "a..b"), ("./d/./e", "d/e")]
)
def test_aliases_are_cleaned_as_the_driver_writes_them(alias: str, clean: str) -> None:
    params = parse_mount(
        attrs(objects=objects(f"objectName: a\nobjectType: secret\nobjectAlias: {alias}")), SP
    )
    assert params.objects[0].file_name == clean


def test_objects_array_may_be_empty() -> None:
    assert parse_mount(attrs(objects="array: []"), SP).objects == ()
    assert parse_mount(attrs(objects="array:"), SP).objects == ()


def test_stray_user_assigned_identity_is_ignored() -> None:
    params = parse_mount(attrs(userAssignedIdentityID="stray"), SP)
    assert (params.identity, params.client_id) == (IdentityMode.SERVICE_PRINCIPAL, "")


def test_service_principal_needs_the_node_publish_secret() -> None:
    with pytest.raises(InvalidSpec, match="nodePublishSecretRef"):
        parse_mount(attrs(), None)


def test_history_files_may_not_collide_with_another_object() -> None:
    with pytest.raises(InvalidSpec, match="a/1"):
        parse_mount(
            attrs(
                objects=objects(
                    "objectName: a\nobjectType: secret\nobjectVersionHistory: 2",
                    "objectName: b\nobjectType: secret\nobjectAlias: a/1",
                )
            ),
            SP,
        )


def test_identity_modes() -> None:
    tokens = json.dumps({"api://AzureADTokenExchange": {"token": "sa-jwt", "expirationTimestamp": "x"}})
    wi = parse_mount(attrs(clientID="cid", **{SA_TOKENS: tokens}), None)
    assert (wi.identity, wi.client_id, wi.service_account_token) == (IdentityMode.WORKLOAD, "cid", "sa-jwt")
    mi = parse_mount(attrs(useVMManagedIdentity="true", userAssignedIdentityID="uid", tenantID=""), None)
    assert (mi.identity, mi.client_id) == (IdentityMode.MANAGED, "uid")
    pod = parse_mount(
        attrs(
            usePodIdentity="True",
            **{"csi.storage.k8s.io/pod.name": "p", "csi.storage.k8s.io/pod.namespace": "ns"},
        ),
        None,
    )
    assert (pod.identity, pod.pod_name, pod.pod_namespace) == (IdentityMode.POD, "p", "ns")


def test_cloud_scopes_and_environment_files(tmp_path: Path) -> None:
    assert clouds.resolve("").scope == "https://vault.azure.net/.default"
    assert clouds.resolve("azurechinacloud").vault_url("kv") == "https://kv.vault.azure.cn"
    env = {
        "name": "AzureStackCloud",
        "activeDirectoryEndpoint": "https://login.stack/",
        "keyVaultDNSSuffix": "vault.stack",
    }
    path = tmp_path / "env.json"
    path.write_text(json.dumps(env))
    assert clouds.resolve("AzureStackCloud", str(path)).scope == "https://vault.stack/.default"
    path.write_text(json.dumps({**env, "keyVaultEndpoint": "https://vault.stack.example/"}))
    stack = clouds.resolve("AzureStackCloud", str(path))
    assert (stack.scope, stack.vault_url("kv")) == (
        "https://vault.stack.example/.default",
        "https://kv.vault.stack",
    )
    path.write_text(json.dumps({**env, "keyVaultEndpoint": "vault.stack"}))
    with pytest.raises(InvalidSpec, match="keyVaultEndpoint must be an https:// URL"):
        clouds.resolve("AzureStackCloud", str(path))
