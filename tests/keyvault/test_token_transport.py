"""The token requests' transport at the double's token endpoints: forms sent as requests sent
them, and a slow answer ended at the read timeout or the fetch's deadline, never retried."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
from azure.core.pipeline import Pipeline
from azure.core.rest import HttpRequest

from kvmount.keyvault.http.retry import BudgetRetryPolicy, fetch_deadline
from kvmount.keyvault.http.token_transport import TokenAnswerTimeout, TokenTransport
from kvmount.keyvault.http.transport import ReadResponse
from kvmount.keyvault.parameters.limits import TokenCap
from tests.peers.keyvault_double import Fault, KeyVaultDouble


@pytest.fixture
def client(kv_env: KeyVaultDouble) -> Iterator[tuple[str, str]]:
    """A service principal of the AAD double: (client id, secret); faults cleared after."""
    client_id, secret = f"app-{os.urandom(4).hex()}", f"s-{os.urandom(8).hex()}"
    kv_env.register_aad_client(client_id, secret=secret)
    yield client_id, secret
    kv_env.set_faults()
    fetch_deadline.deadline = None


def token_request(kv: KeyVaultDouble, client: tuple[str, str]) -> HttpRequest:
    form = {"grant_type": "client_credentials", "client_id": client[0], "client_secret": client[1],
            "scope": kv.scope}  # fmt: skip
    return HttpRequest("POST", f"{kv.authority}/{kv.tenant}/oauth2/v2.0/token", data=form)


def test_a_form_is_sent_urlencoded_and_its_token_answered(
    kv_env: KeyVaultDouble, client: tuple[str, str]
) -> None:
    answer = TokenTransport(TokenCap).send(token_request(kv_env, client))
    assert answer.status_code == 200 and json.loads(answer.content)["access_token"]


def dripped(kv: KeyVaultDouble, client: tuple[str, str]) -> None:
    kv.set_faults(Fault("drip", count=100, seconds=0.5, size=100_000, service="aad", client=client[0]))


def test_a_drip_ends_at_the_read_timeout_once(kv_env: KeyVaultDouble, client: tuple[str, str]) -> None:
    dripped(kv_env, client)
    pipeline: Pipeline[HttpRequest, ReadResponse] = Pipeline(
        TokenTransport(TokenCap, read_timeout=2), [BudgetRetryPolicy(retry_total=3)]
    )
    started = time.monotonic()
    with pytest.raises(TokenAnswerTimeout, match="within 2 s"):
        pipeline.run(token_request(kv_env, client))
    assert time.monotonic() - started < 6  # one attempt: a retry would have taken 2 s more each
    drips = [r for r in kv_env.requests() if r.get("fault") == "drip" and r.get("service") == "aad"]
    assert len(drips) == 1


def test_a_drip_ends_at_the_fetchs_deadline(kv_env: KeyVaultDouble, client: tuple[str, str]) -> None:
    dripped(kv_env, client)
    fetch_deadline.deadline = time.monotonic() + 1.5
    started = time.monotonic()
    with pytest.raises(TokenAnswerTimeout, match="the deadline of its mount"):
        TokenTransport(TokenCap).send(token_request(kv_env, client))
    assert time.monotonic() - started < 5
