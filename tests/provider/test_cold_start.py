"""The first mounts of an identity: one challenge, one token request and one discovery of the
authority, however many objects and mounts ask at once; later mounts ask for none of them."""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.peers.keyvault_double import KeyVaultDouble
from tests.provider.conftest import VAULT, Provider


def _auth_requests(keyvault: KeyVaultDouble) -> Counter[str]:
    """Challenges (unauthenticated vault requests) and Azure AD requests, by method and path."""
    found: Counter[str] = Counter()
    for r in keyvault.requests():
        if r.get("service") == "keyvault" and r.get("status") == 401:
            found["challenge"] += 1
        elif r.get("service") in ("aad", "proxy"):
            found[f"{r['method']} {r.get('path', r.get('host'))}"] += 1
    return found


def test_concurrent_first_mounts_share_one_token(
    provider: Provider, keyvault: KeyVaultDouble, sp: dict[str, str]
) -> None:
    names = [f"cold-{os.urandom(4).hex()}" for _ in range(10)]
    for name in names:
        keyvault.put_secret(VAULT, name, f"value of {name}")
    attributes = provider.attributes([{"objectName": n, "objectType": "secret"} for n in names])
    keyvault.reset_log()
    keyvault.set_latency(200)  # every fetch of every mount is waiting while the first one authenticates
    try:
        with ThreadPoolExecutor(5) as pool:
            responses: list[Any] = list(pool.map(lambda _: provider.mount(attributes, sp), range(5)))
    finally:
        keyvault.set_latency(0)
    assert all(len(r.files) == 10 for r in responses)
    auth = _auth_requests(keyvault)
    assert auth["challenge"] == 1, auth
    tokens = [k for k in auth if k.endswith("/token")]
    assert len(tokens) == 1 and auth[tokens[0]] == 1, auth
    # Each discovery document of the authority (metadata, instance discovery) is asked for once.
    assert auth and all(count == 1 for count in auth.values()), auth

    keyvault.reset_log()
    provider.mount(attributes, sp)
    assert _auth_requests(keyvault) == Counter(), "a later mount built a new credential or client"
