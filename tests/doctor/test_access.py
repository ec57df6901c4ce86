"""`kvmount doctor --class FILE`: the identity, its token and each object's access, against the
Key Vault double, with the real Azure SDK; 403 vs 404 vs disabled vs wrong type; no value printed."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from kvmount.cli import main
from tests.peers.keyvault_double import KeyVaultDouble

VAULT = "kvtest"


def write_class(path: Path, kv: KeyVaultDouble, objects: list[dict[str, object]], **params: str) -> Path:
    cloud = kv.write_cloud_env(path.parent / "cloud.json")
    doc = {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": "app"},
        "spec": {
            "provider": "azure",
            "parameters": {
                "keyvaultName": VAULT,
                "tenantID": kv.tenant,
                "cloudName": "AzureStackCloud",
                "cloudEnvFileName": str(cloud),
                "objects": yaml.safe_dump({"array": [yaml.safe_dump(o) for o in objects]}),
                **params,
            },
        },
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def service_principal(kv: KeyVaultDouble, tmp_path: Path, secret: str = "") -> tuple[Path, str]:
    client, password = f"sp-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    kv.register_aad_client(client, secret=password)
    path = tmp_path / "secrets.yaml"
    path.write_text(yaml.safe_dump({"clientid": client, "clientsecret": secret or password}))
    return path, password


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = main(["doctor", *args])
    return code, capsys.readouterr().out.splitlines()


def row(lines: list[str], needle: str, first: bool = False) -> str:
    """The one row (or the first) whose check column (after the verdict) contains ``needle``."""
    found = [line for line in lines if needle in line[6:].split("  ")[0]]
    assert found if first else len(found) == 1, (needle, lines)
    return found[0]


def test_each_object_gets_its_own_verdict(
    kv_env: KeyVaultDouble, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kv, tag = kv_env, uuid.uuid4().hex[:8]
    value = f"value-{uuid.uuid4().hex}"
    names = {k: f"{k}-{tag}" for k in ("ok", "denied", "missing", "disabled", "key", "history", "expired")}
    kv.put_secret(VAULT, names["ok"], value)
    kv.put_secret(VAULT, names["denied"], value)
    kv.deny_object(VAULT, "secrets", names["denied"])
    kv.put_secret(VAULT, names["disabled"], value, enabled=False)
    kv.create_key(VAULT, names["key"])
    kv.put_secret(VAULT, names["history"], value)
    kv.deny_object(VAULT, "secrets", names["history"])
    expired = kv.put_secret(VAULT, names["expired"], value)
    kv.update(
        VAULT, "secrets", names["expired"], expired["id"].rsplit("/", 1)[1], {"attributes": {"exp": 1e9}}
    )
    objects: list[dict[str, object]] = [
        {"objectName": names["ok"], "objectType": "secret"},
        {"objectName": names["denied"], "objectType": "secret"},
        {"objectName": names["missing"], "objectType": "secret"},
        {"objectName": names["disabled"], "objectType": "secret"},
        {"objectName": names["key"], "objectType": "secret"},
        {"objectName": names["history"], "objectType": "secret", "objectVersionHistory": 2},
        {"objectName": names["expired"], "objectType": "secret"},
    ]
    secrets, password = service_principal(kv, tmp_path)
    spc = write_class(tmp_path / "spc.yaml", kv, objects)

    code, lines = doctor(capsys, "--class", str(spc), "--secrets", str(secrets))

    assert code == 1
    assert "service principal sp-" in row(lines, "identity")
    assert row(lines, "token").startswith("ok ")
    assert row(lines, names["ok"]).startswith("ok ") and f"writes {names['ok']}" in row(lines, names["ok"])
    denied = row(lines, names["denied"])
    assert denied.startswith("FAIL") and "forbidden (403): the identity lacks secrets/get" in denied
    assert "-> grant secrets/get in the vault's access policy, or the role 'Key Vault Secrets User'" in denied
    assert "not found (404)" in row(lines, names["missing"]) and "-> create it" in row(
        lines, names["missing"]
    )
    disabled = row(lines, names["disabled"])
    assert "disabled (403): its current version is disabled -> enable it" in disabled
    wrong = row(lines, names["key"])
    assert "wrong type" in wrong and "but a key of that name -> set objectType: key" in wrong
    assert "lacks secrets/get and secrets/list" in row(lines, names["history"])
    expired_row = row(lines, names["expired"])
    assert expired_row.startswith("warn") and "expired on 2001-09-09 01:46 UTC" in expired_row
    assert "-> rotate it: add a new version with a later expiry" in expired_row
    output = "\n".join(lines)
    assert value not in output and password not in output


def test_an_identity_that_gets_no_token(
    kv_env: KeyVaultDouble, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"s-{uuid.uuid4().hex[:8]}"
    kv_env.put_secret(VAULT, name, "v")
    secrets, _ = service_principal(kv_env, tmp_path, secret="wrong-password")
    spc = write_class(tmp_path / "spc.yaml", kv_env, [{"objectName": name, "objectType": "secret"}])

    code, lines = doctor(capsys, "--class", str(spc), "--secrets", str(secrets))

    assert code == 1
    token = row(lines, "token")
    assert token.startswith("FAIL") and "no token for" in token and "AADSTS" in token
    assert "-> check clientid and clientsecret in the nodePublishSecretRef Secret" in token
    assert row(lines, name).startswith("skip") and "needs a token" in row(lines, name)
    assert "wrong-password" not in "\n".join(lines)


def test_a_clean_class_passes_and_json_has_the_rows(
    kv_env: KeyVaultDouble, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    name = f"s-{uuid.uuid4().hex[:8]}"
    kv_env.put_secret(VAULT, name, "v")
    secrets, _ = service_principal(kv_env, tmp_path)
    spc = write_class(tmp_path / "spc.yaml", kv_env, [{"objectName": name, "objectType": "secret"}])

    assert main(["doctor", "--class", str(spc), "--secrets", str(secrets), "--output", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["verdict"] for r in rows] == ["ok", "info", "ok", "ok"]
    assert rows[-1]["check"] == f"object secret {name!r}"


def test_an_invalid_class_stops_before_any_request(
    kv_env: KeyVaultDouble, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spc = write_class(tmp_path / "spc.yaml", kv_env, [{"objectName": "x", "objectType": "secrets"}])
    kv_env.reset_log()
    code, lines = doctor(capsys, "--class", str(spc))
    assert code == 1
    assert "spec.parameters.objects[0].objectType: 'secrets' is not one of secret, key, cert" in row(
        lines, "class"
    )
    assert kv_env.requests() == []


def test_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["doctor"]) == 2
    assert "choose --class" in capsys.readouterr().err
    (tmp_path / "x.yaml").write_text("kind: Pod\n")
    assert main(["doctor", "--class", str(tmp_path / "x.yaml")]) == 2
    assert "no SecretProviderClass" in capsys.readouterr().err
    assert main(["doctor", "--pod", "nonamespace"]) == 2
    assert "use NAMESPACE/NAME" in capsys.readouterr().err
    assert main(["doctor", "--pod", "ns/web", "--kubeconfig", str(tmp_path / "none")]) == 1
    out = capsys.readouterr().out
    assert (
        out.startswith("FAIL  API server  cannot configure the Kubernetes API client")
        and "Traceback" not in out
    )
    assert "-> check --kubeconfig" in out


def test_a_selection_lists_its_matches_and_a_403_on_the_listing_names_the_list_permission(
    kv_env: KeyVaultDouble, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tag = uuid.uuid4().hex[:8]
    for i in range(2):
        kv_env.put_secret(VAULT, f"sel-{tag}-{i}", "v", tags={"doctor": tag})
    objects: list[dict[str, object]] = [
        {"objectTags": {"doctor": tag}, "objectType": "secret", "objectAlias": "picked"},
        {"objectNamePattern": f"sel-{tag}-*", "objectType": "cert"},
    ]
    secrets, _ = service_principal(kv_env, tmp_path)
    spc = write_class(tmp_path / "spc.yaml", kv_env, objects)
    kv_env.deny_list(VAULT, "certificates")
    try:
        code, lines = doctor(capsys, "--class", str(spc), "--secrets", str(secrets))
    finally:
        kv_env.deny_list(VAULT, "certificates", deny=False)
    assert code == 1
    picked = row(lines, f"tagged {{'doctor': '{tag}'}}")
    assert picked.startswith("ok ") and f"2 files; writes picked/sel-{tag}-0, picked/sel-{tag}-1" in picked
    denied = row(lines, f"matching 'sel-{tag}-*'")
    assert denied.startswith("FAIL") and "forbidden (403): the identity lacks certificates/list" in denied
    assert "-> grant certificates/list" in denied
