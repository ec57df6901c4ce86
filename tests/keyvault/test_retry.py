"""Retry policies share one set of retryable status codes: the same retries as azure-core's
RetryPolicy, without a 16 KiB copy of the set in every pipeline of every identity."""

from __future__ import annotations

import json
from typing import Any

import pytest
from azure.core.pipeline.policies import RetryPolicy

from kvmount.csi.attributes import SA_TOKENS
from kvmount.keyvault import clouds, parse_mount
from kvmount.keyvault.http.retry import BudgetRetryPolicy, SharedCodesRetryPolicy
from kvmount.keyvault.identity.credentials import build_credential


def test_same_codes_as_azure_core_and_one_set_for_all() -> None:
    first, second = SharedCodesRetryPolicy(retry_total=2), SharedCodesRetryPolicy()
    assert first._retry_on_status_codes == RetryPolicy()._retry_on_status_codes
    assert first._retry_on_status_codes is second._retry_on_status_codes
    assert first.total_retries == 2 and second.total_retries == RetryPolicy().total_retries
    # The Key Vault pipelines' own policy (one per vault and identity) shares it too.
    assert BudgetRetryPolicy(retry_total=2)._retry_on_status_codes is first._retry_on_status_codes


def test_extra_codes_get_a_set_of_their_own() -> None:
    plain = SharedCodesRetryPolicy()
    extra = SharedCodesRetryPolicy(retry_on_status_codes=[404])
    assert 404 in extra._retry_on_status_codes and 404 not in plain._retry_on_status_codes
    assert (
        extra._retry_on_status_codes
        is SharedCodesRetryPolicy(retry_on_status_codes=[404])._retry_on_status_codes
    )


def _retry_policies(root: object) -> list[RetryPolicy[Any, Any]]:
    """The retry policies reachable from a credential through the SDK's own objects."""
    seen: set[int] = set()
    found: list[RetryPolicy[Any, Any]] = []
    todo: list[object] = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, RetryPolicy):
            found.append(obj)
        elif isinstance(obj, list | tuple):
            todo.extend(obj)
        elif type(obj).__module__.startswith(("azure.", "msal")) and hasattr(obj, "__dict__"):
            todo.extend(vars(obj).values())
    return found


TOKENS = json.dumps({"api://AzureADTokenExchange": {"token": "sa-jwt", "expirationTimestamp": "x"}})


@pytest.mark.parametrize(
    ("attributes", "secrets"),
    [
        ({"clientID": "cid", SA_TOKENS: TOKENS}, None),
        ({}, {"clientid": "app", "clientsecret": "s3cret-value"}),
    ],
    ids=["workload identity", "service principal"],
)
def test_credentials_token_pipelines_share_the_codes(
    attributes: dict[str, str], secrets: dict[str, str] | None
) -> None:
    objects = "array:\n  - |\n    objectName: a\n    objectType: secret\n"
    params = parse_mount(
        {"keyvaultName": "kvtest", "tenantID": "t", "objects": objects, **attributes}, secrets
    )
    policies = _retry_policies(build_credential(params, clouds.resolve("")))
    assert policies, "the credential's token pipeline has a retry policy"
    assert all(isinstance(p, SharedCodesRetryPolicy) for p in policies)
    assert {id(p._retry_on_status_codes) for p in policies} == {
        id(SharedCodesRetryPolicy()._retry_on_status_codes)
    }
