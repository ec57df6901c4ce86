"""P pods mounting the same objects with the same identity cost one Key Vault read per object:
reads in flight are shared, and rotation polls take a read completed within the window. A new
mount never takes a completed read, so it sees every change made before it started."""

from __future__ import annotations

import base64
import json
import os
from concurrent.futures import ThreadPoolExecutor

from kvmount.csi.attributes import SA_TOKENS
from tests.peers.keyvault_double import KeyVaultDouble
from tests.provider.conftest import VAULT, Provider


def reads(keyvault: KeyVaultDouble, names: list[str]) -> int:
    return sum(
        1
        for r in keyvault.requests()
        if r.get("service") == "keyvault" and r["method"] == "GET" and r.get("status") == 200
        and any(f"/secrets/{n}" in str(r["path"]) for n in names)
    )  # fmt: skip


def seeded(keyvault: KeyVaultDouble, count: int) -> list[str]:
    names = [f"co-{os.urandom(4).hex()}" for _ in range(count)]
    for name in names:
        keyvault.put_secret(VAULT, name, f"value of {name}")
    return names


def test_pods_with_one_identity_share_reads(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]
) -> None:
    names = seeded(keyvault, 3)
    attributes = provider.attributes([{"objectName": n, "objectType": "secret"} for n in names])
    provider.mount(attributes, sp)  # the credential's token, so the pods below start together
    keyvault.reset_log()
    keyvault.set_latency(1500)  # each read stays in flight while the other pods arrive
    try:
        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(lambda _: provider.mount(attributes, sp), range(6)))
    finally:
        keyvault.set_latency(0)
    assert all(
        {f.path: f.contents for f in r.files} == {n: f"value of {n}".encode() for n in names}
        for r in responses
    )
    assert reads(keyvault, names) == len(names)


def test_a_mount_after_a_change_sees_it_while_rotation_polls_may_share(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]
) -> None:
    [name] = seeded(keyvault, 1)
    attributes = provider.attributes([{"objectName": name, "objectType": "secret"}])
    first = provider.mount(attributes, sp)
    current = {v.id: v.version for v in first.object_version}
    keyvault.reset_log()
    assert [f.contents for f in provider.mount(attributes, sp, current=current).files] == [
        f"value of {name}".encode()
    ]
    assert reads(keyvault, [name]) == 0, "a rotation poll within the window is answered from the last read"
    keyvault.put_secret(VAULT, name, "changed")
    assert [f.contents for f in provider.mount(attributes, sp).files] == [b"changed"]


def test_other_identities_never_share(provider: Provider, keyvault: KeyVaultDouble) -> None:
    names = seeded(keyvault, 2)
    attributes = provider.attributes([{"objectName": n, "objectType": "secret"} for n in names])
    principals = []
    for i in range(3):
        client, secret = f"co-app-{i}-{os.urandom(3).hex()}", f"co-secret-{os.urandom(8).hex()}"
        keyvault.register_aad_client(client, secret=secret)
        principals.append({"clientid": client, "clientsecret": secret})
    keyvault.reset_log()
    polled = {f"secret/{n}": "any" for n in names}
    for secrets in principals:
        provider.mount(attributes, secrets, current=polled)  # polls, which may share within one identity
    assert reads(keyvault, names) == len(names) * len(principals)


def sa_token(subject: str) -> str:
    def part(doc: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part({'sub': subject, 'jti': os.urandom(6).hex()})}.sig"


def test_workload_identity_pods_of_one_service_account_share_but_each_proves_its_token(
    provider: Provider, keyvault: KeyVaultDouble
) -> None:
    names = seeded(keyvault, 2)
    objects = [{"objectName": n, "objectType": "secret"} for n in names]

    def attributes(subject: str) -> dict[str, str]:
        tokens = json.dumps({"api://AzureADTokenExchange": {"token": sa_token(subject)}})
        return provider.attributes(objects, clientID="wi-shared", **{SA_TOKENS: tokens})

    keyvault.reset_log()
    current: dict[str, str] = {}
    for _ in range(3):
        # Rotation polls of three pods: after the first read, the others take it.
        response = provider.mount(attributes("system:serviceaccount:shop:web"), current=current or None)
        current = {v.id: v.version for v in response.object_version}
    assert reads(keyvault, names) == len(names)
    exchanges = [r for r in keyvault.requests() if r.get("service") == "aad" and "token" in str(r["path"])]
    assert len(exchanges) == 3, "each pod's own token is exchanged before it is served"
    provider.mount(attributes("system:serviceaccount:shop:other"), current=current)
    assert reads(keyvault, names) == 2 * len(names), "another service account reads for itself"
