"""`objectNamePattern` and `objectTags`: objects selected from the vault's listing, over the
provider's socket against the Key Vault double. The tests share the vault `kvother`; each
names its objects (and a tag) after itself, so that no test sees another's."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from kvmount.proto import v1alpha1_pb2 as pb
from tests.peers.keyvault_double import KeyVaultDouble
from tests.provider.conftest import Provider, start_provider, stop_provider
from tests.provider.test_mount import files, modes, versions
from tests.support import starts_process

VAULT = "kvother"


@pytest.fixture
def p() -> str:
    """This test's prefix of object names (and its tag's value)."""
    return f"sel{os.urandom(4).hex()}"


def mount(provider: Provider, sp: dict[str, str], *objects: dict[str, Any]) -> pb.MountResponse:
    return provider.mount(provider.attributes(list(objects), keyvaultName=VAULT), sp)


def refusal(provider: Provider, sp: dict[str, str], *objects: dict[str, Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        mount(provider, sp, *objects)
    return caught.value


def put(kv: KeyVaultDouble, name: str, value: str, **extra: Any) -> str:
    """A new version of a secret; its version."""
    return str(kv.put_secret(VAULT, name, value, **extra)["id"].rsplit("/", 1)[1])


def test_a_pattern_selects_enabled_unexpired_matches_into_the_alias_directory(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], p: str
) -> None:
    for name in ("app1-a", "app1-b", "app2-c", "app1-off", "app1-old", "APP1-upper"):
        put(keyvault, f"{p}-{name}", f"value of {name}", enabled=name != "app1-off")
    old = put(keyvault, f"{p}-app1-old", "expired")
    keyvault.update(VAULT, "secrets", f"{p}-app1-old", old, {"attributes": {"exp": int(time.time()) - 60}})
    entry = {
        "objectNamePattern": f"{p}-app1-*",
        "objectType": "secret",
        "objectAlias": "app1",
        "filePermission": "0440",
    }
    response = mount(provider, sp, entry)
    # Case-sensitive as Key Vault's names are; disabled and expired objects are left out.
    assert files(response) == {f"app1/{p}-app1-a": b"value of app1-a", f"app1/{p}-app1-b": b"value of app1-b"}
    assert set(modes(response).values()) == {0o440}
    assert set(versions(response)) == {f"secret/{p}-app1-a", f"secret/{p}-app1-b"}
    # Without an alias the files are named by the objects; encodings apply to every match.
    put(keyvault, f"{p}-hex-1", "cafe")
    put(keyvault, f"{p}-hex-2", "00ff")
    hexed = {"objectNamePattern": f"{p}-hex-[0-9]", "objectType": "secret", "objectEncoding": "hex"}
    assert files(mount(provider, sp, hexed)) == {f"{p}-hex-1": b"\xca\xfe", f"{p}-hex-2": b"\x00\xff"}


def test_tags_select_every_type_and_all_pairs_must_match(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], p: str
) -> None:
    put(keyvault, f"{p}-web-prod", "wp", tags={"run": p, "team": "web", "env": "prod"})
    put(keyvault, f"{p}-web-dev", "wd", tags={"run": p, "team": "web", "env": "dev"})
    put(keyvault, f"{p}-db-prod", "dp", tags={"run": p, "team": "db", "env": "prod"})
    key = {"kty": "EC", "crv": "P-256", "tags": {"run": p}}
    keyvault.vault_call(VAULT, "POST", f"/keys/{p}-signing/create", key)
    web_prod = {"objectTags": {"run": p, "team": "web", "env": "prod"}, "objectType": "secret"}
    assert files(mount(provider, sp, web_prod)) == {f"{p}-web-prod": b"wp"}
    prod = {
        "objectNamePattern": "*-prod",
        "objectTags": {"run": p},
        "objectType": "secret",
        "objectAlias": "p",
    }
    assert files(mount(provider, sp, prod)) == {f"p/{p}-db-prod": b"dp", f"p/{p}-web-prod": b"wp"}
    keys = files(mount(provider, sp, {"objectTags": {"run": p}, "objectType": "key"}))
    assert list(keys) == [f"{p}-signing"] and keys[f"{p}-signing"].startswith(b"-----BEGIN PUBLIC KEY-----")


def test_a_change_of_tags_or_state_is_seen_by_the_next_mount(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], p: str
) -> None:
    a = put(keyvault, f"{p}-a", "A", tags={"mount": p})
    put(keyvault, f"{p}-b", "B", tags={"mount": "no"})
    put(keyvault, f"{p}-d", "D", tags={"mount": p})
    entry = {"objectTags": {"mount": p}, "objectType": "secret"}
    assert set(files(mount(provider, sp, entry))) == {f"{p}-a", f"{p}-d"}
    # b re-tagged (a new version with the tag) in, a disabled and d deleted out.
    b = put(keyvault, f"{p}-b", "B2", tags={"mount": p})
    keyvault.update(VAULT, "secrets", f"{p}-a", a, {"attributes": {"enabled": False}})
    keyvault.vault_call(VAULT, "DELETE", f"/secrets/{p}-d")
    response = mount(provider, sp, entry)
    assert files(response) == {f"{p}-b": b"B2"}
    assert versions(response) == {f"secret/{p}-b": b}


def test_zero_matches_is_not_found_naming_the_pattern_unless_allowed(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], p: str
) -> None:
    put(keyvault, f"{p}-other", "x")
    entry: dict[str, Any] = {"objectNamePattern": f"{p}-app9-*", "objectType": "secret"}
    err = refusal(provider, sp, entry)
    assert err.code() is grpc.StatusCode.NOT_FOUND
    assert f"'{p}-app9-*'" in (err.details() or "") and "allowEmpty" in (err.details() or "")
    named = {"objectName": f"{p}-other", "objectType": "secret"}
    assert files(mount(provider, sp, {**entry, "allowEmpty": "true"}, named)) == {f"{p}-other": b"x"}


def test_a_403_on_the_listing_names_the_list_permission(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], p: str
) -> None:
    put(keyvault, f"{p}-s", "x")
    keyvault.deny_list(VAULT, "certificates")
    try:
        err = refusal(provider, sp, {"objectNamePattern": f"{p}-*", "objectType": "cert"})
        assert err.code() is grpc.StatusCode.PERMISSION_DENIED
        message = err.details() or ""
        assert "list permission on certs" in message and "(HTTP 403)" in message
        # Named objects, and the other types' listings, need no more than before.
        assert files(mount(provider, sp, {"objectNamePattern": f"{p}-*", "objectType": "secret"})) == {
            f"{p}-s": b"x"
        }
    finally:
        keyvault.deny_list(VAULT, "certificates", deny=False)


def test_two_matches_writing_one_file_are_refused(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], p: str
) -> None:
    put(keyvault, f"{p}-x", "1")
    put(keyvault, f"{p}-y", "2")
    selected = {"objectNamePattern": f"{p}-*", "objectType": "secret"}
    err = refusal(provider, sp, selected, {"objectName": f"{p}-x", "objectType": "secret"})
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and f"writes file '{p}-x'" in (err.details() or "")


def test_listing_pages_are_followed(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], p: str
) -> None:
    for i in range(60):
        put(keyvault, f"{p}-many-{i:02}", str(i))
    keyvault.reset_log()
    got = files(mount(provider, sp, {"objectNamePattern": f"{p}-many-*", "objectType": "secret"}))
    assert got == {f"{p}-many-{i:02}": str(i).encode() for i in range(60)}
    pages = [r for r in keyvault.requests() if r["path"] == "/secrets" and r["status"] == 200]
    assert len(pages) >= 3 and all("$skiptoken" in r["query"] for r in pages[1:])


@pytest.fixture(scope="module")
@starts_process
def capped(keyvault: KeyVaultDouble, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    caps = ("--max-objects-per-mount=3", "--max-mount-bytes=16384")
    started = start_provider(Path(tmp_path_factory.mktemp("capped")), keyvault, *caps)
    yield started
    stop_provider(started)


def test_matches_count_against_the_mount_caps(
    capped: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], p: str
) -> None:
    for i in range(4):
        put(keyvault, f"{p}-c-{i}", "v")
    put(keyvault, f"{p}-big-1", "x" * 9000)
    put(keyvault, f"{p}-big-2", "x" * 9000)
    assert len(files(mount(capped, sp, {"objectNamePattern": f"{p}-c-[012]", "objectType": "secret"}))) == 3
    err = refusal(capped, sp, {"objectNamePattern": f"{p}-c-*", "objectType": "secret"})
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "--max-objects-per-mount" in (
        err.details() or ""
    )
    err = refusal(capped, sp, {"objectNamePattern": f"{p}-big-*", "objectType": "secret"})
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "--max-mount-bytes" in (err.details() or "")


def test_a_next_link_to_another_host_is_not_followed(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str], p: str
) -> None:
    for i in range(30):
        put(keyvault, f"{p}-n", str(i))  # 30 versions: two pages of versions
        put(keyvault, f"{p}-m{i}", str(i))  # and of objects
    keyvault.set_next_link_base(f"https://kvtest.vault.localhost:{keyvault.port}")
    keyvault.reset_log()
    try:
        selected = {"objectNamePattern": f"{p}-*", "objectType": "secret"}
        history = {"objectName": f"{p}-n", "objectType": "secret", "objectVersionHistory": 2}
        for entry in (selected, history):
            err = refusal(provider, sp, entry)
            assert err.code() is grpc.StatusCode.INTERNAL
    finally:
        keyvault.set_next_link_base()
    # The vault's token never went to the other host: kvtest saw no request at all.
    seen = {(r["vault"], r["path"]) for r in keyvault.requests() if r.get("service") == "keyvault"}
    assert ("kvother", "/secrets") in seen and ("kvother", f"/secrets/{p}-n/versions") in seen
    assert not [vault for vault, _ in seen if vault != "kvother"]
