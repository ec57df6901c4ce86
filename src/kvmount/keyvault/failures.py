"""Azure's failures as kvmount's error categories, with messages safe to show: the vault,
the object, what to do, the HTTP status and Azure AD error code, never a response body."""

from __future__ import annotations

import re

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    IncompleteReadError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import CredentialUnavailableError

from kvmount.keyvault.errors import AnswerTooLarge, Category, KeyVaultError, TokenAnswerTooLarge
from kvmount.keyvault.http.token_transport import TokenAnswerTimeout
from kvmount.keyvault.types import ObjectSpec

_AADSTS = re.compile(r"AADSTS\d+")


def token_bound(err: BaseException) -> KeyVaultError | None:
    """A token answer refused at a bound (--max-token-answer-bytes, the read timeout), as a
    KeyVaultError naming it, whichever wrapping the credential gave it (azure-identity
    raises ClientAuthenticationError or CredentialUnavailableError from what its transport
    raised); None when ``err`` has no such cause."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, TokenAnswerTooLarge):
            return cause
        if isinstance(cause, TokenAnswerTimeout):
            return KeyVaultError(f"no token: {cause}", Category.UNAVAILABLE)
        cause = cause.__cause__ or cause.__context__
    return None


def classify(err: Exception) -> Category:
    bound = token_bound(err)
    if bound is not None:
        return bound.category
    if isinstance(err, KeyVaultError):
        return err.category
    if isinstance(err, ResourceNotFoundError):
        return Category.NOT_FOUND
    if isinstance(err, CredentialUnavailableError):
        return Category.UNAVAILABLE
    if isinstance(err, ClientAuthenticationError):
        return Category.FORBIDDEN if err.status_code == 403 else Category.UNAUTHENTICATED
    # A body cut short is the network failing mid-answer, as a reset is.
    if isinstance(err, ServiceRequestError | ServiceResponseError | IncompleteReadError):
        return Category.UNAVAILABLE
    if isinstance(err, HttpResponseError):
        status = err.status_code or 0
        if status == 403:
            return Category.FORBIDDEN
        if status == 401:
            return Category.UNAUTHENTICATED
        if status == 429 or status >= 500:
            return Category.UNAVAILABLE
    return Category.INTERNAL


def outage(err: Exception) -> str | None:
    """Why Key Vault could not answer, when it is an outage stale content may ride out:
    throttling (after the retries), a 5xx, or a connection that failed or timed out.
    None for every other failure (403, 404, a token refused, bad content...)."""
    if isinstance(err, ServiceRequestError | ServiceResponseError | IncompleteReadError):
        return "Key Vault unreachable"
    if isinstance(err, HttpResponseError) and not isinstance(err, ClientAuthenticationError):
        status = err.status_code or 0
        if status == 429 or status >= 500:
            return f"Key Vault unavailable (HTTP {status})"
    return None


_ADVICE = {
    Category.NOT_FOUND: "not found; check objectName, objectVersion and keyvaultName",
    Category.FORBIDDEN: "access denied or the version is disabled; grant the identity get permission "
    "on this object type, or enable the version",
    Category.UNAUTHENTICATED: "no token could be had for the mount's identity; check tenantID, the "
    "client id and its credential",
    Category.UNAVAILABLE: "Key Vault or the identity endpoint is unreachable or failing; retry later",
    Category.INTERNAL: "unexpected failure",
}


def describe_failure(vault: str, spec: ObjectSpec | None, err: Exception) -> KeyVaultError:
    """An error naming the vault and object (if any), safe to show: no response bodies."""
    category = classify(err)
    what = f"{spec.describe()}: " if spec else ""
    bound = token_bound(err)
    if bound is not None:
        return KeyVaultError(f"keyvault {vault!r}: {what}{bound}", category)
    if isinstance(err, AnswerTooLarge):  # raised by the transport, which knows no object
        return KeyVaultError(f"keyvault {vault!r}: {what}{err}", category)
    if isinstance(err, KeyVaultError):
        return KeyVaultError(f"keyvault {vault!r}: {err}", category)
    return KeyVaultError(f"keyvault {vault!r}: {what}{_ADVICE[category]}{failure_suffix(err)}", category)


def failure_suffix(err: Exception) -> str:
    """The HTTP status and Azure AD error code of a failure, safe to show: never its body."""
    suffix = ""
    status = getattr(err, "status_code", None)
    if status:
        suffix += f" (HTTP {status})"
    code = _AADSTS.search(str(err))
    if code:
        suffix += f" ({code.group(0)})"
    return suffix
