"""The token requests' transport: the reads' bounded transport, with a cap meant for token answers.

Every credential's token requests (azure-identity's to Azure AD and IMDS, MSAL's
authority metadata, aad-pod-identity's NMI, identity binding's token proxy) go through
a ``TokenTransport``: http/transport.py's VaultTransport, so each answer is bounded
as a Key Vault answer is, while it arrives. Its decoded bytes (a gzip body inflated
piece by piece) are counted against the transport's cap (keyvault/parameters/limits.py
TokenCap, --max-token-answer-bytes), and it must arrive whole within the read timeout
and, on a thread that runs a mount's fetch, by the mount's deadline (http/retry.py
``fetch_deadline``, which ends connecting too), whatever the pace of its bytes. A slow answer fails as
``TokenAnswerTimeout``, which is no azure-core error, so no retry policy sends the
request again: an endpoint that keeps an answer 30 s (or past the mount's end) is
failing, and the driver retries the whole mount.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from azure.core.exceptions import ServiceResponseTimeoutError
from azure.core.rest import HttpRequest

from kvmount.keyvault.http.connections import ByteCap
from kvmount.keyvault.http.retry import fetch_deadline
from kvmount.keyvault.http.transport import ReadResponse, VaultTransport

# The reads' bounds (keyvault/scheduling/fetch.py): a token answer is as small as theirs.
CONNECT_TIMEOUT, READ_TIMEOUT = 10.0, 30.0


class TokenAnswerTimeout(Exception):
    """A token answer did not arrive whole in time; its message names the bound, never the answer."""


class TokenTransport(VaultTransport):
    """VaultTransport for many credentials' token requests (one pool per origin, thread-safe);
    ``cap`` makes the ByteCap of each answer."""

    def __init__(
        self,
        cap: Callable[[], ByteCap],
        connection_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        super().__init__(connection_timeout, read_timeout, default_cap=cap)

    def send(self, request: HttpRequest, **kwargs: Any) -> ReadResponse:
        deadline = getattr(fetch_deadline, "deadline", None)
        if deadline is not None:
            kwargs.setdefault("mount_deadline", deadline)
            # Connecting ends with the mount too (VaultTransport refuses a spent deadline).
            connect = kwargs.get("connection_timeout") or self.connection_config.timeout
            kwargs["connection_timeout"] = max(0.001, min(connect, deadline - time.monotonic()))
        try:
            return super().send(request, **kwargs)
        except ServiceResponseTimeoutError as err:
            read = kwargs.get("read_timeout") or self.connection_config.read_timeout
            raise TokenAnswerTimeout(
                f"the token answer of {request.url.partition('?')[0]} did not arrive whole within "
                f"{read:g} s (the read timeout) or the deadline of its mount or call"
            ) from err
