"""azure-core's retry policy, with one set of retryable status codes for all its copies.

azure-core's RetryPolicy builds, in every instance, a set of about 500 status codes
(408, 429, 500, 502-504 and everything from 506 up): 16 KiB. The provider keeps a
pipeline per vault and identity (keyvault/vault_client.py) and azure-identity one per
credential, each with its own policy (a policy links to the next one in its pipeline,
so policies cannot be shared), and so a node paid 32 KiB per identity for copies of
the same set: about a third of what an identity costs (bench/RESULTS.md). azure-core
only reads the set (``is_retry``), so policies with the same codes share one.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from azure.core.pipeline.policies import RetryPolicy

# One set per distinct set of codes; the dict keeps it alive for the process.
_SHARED: dict[frozenset[int], set[int]] = {}


class SharedCodesRetryPolicy(RetryPolicy[Any, Any]):
    """RetryPolicy, whose retryable status codes are a set shared with every other copy."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        codes = frozenset(self._retry_on_status_codes)
        shared = _SHARED.get(codes)
        if shared is None:
            shared = _SHARED.setdefault(codes, set(codes))
        self._retry_on_status_codes = shared


# The deadline (time.monotonic()) of the fetch running on this thread, if any
# (set by keyvault/fetch.py's call_options).
fetch_deadline = threading.local()


class BudgetRetryPolicy(SharedCodesRetryPolicy):
    """The SDK's retries, whose waits (Retry-After or backoff) end at the fetch's
    deadline: a server asking for an hour's pause must not hold a mount for an hour."""

    def sleep(self, settings: dict[str, Any], transport: Any, response: Any = None) -> None:
        wait = (self.get_retry_after(response) if response else None) or self.get_backoff_time(settings)
        deadline: float | None = getattr(fetch_deadline, "deadline", None)
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - time.monotonic()))
        if wait > 0:
            transport.sleep(wait)
