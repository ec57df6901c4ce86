"""Fetching objects and their versions from Key Vault, concurrently.

One mount's objects (and the versions of an object's history) are fetched in
parallel with a bound. Clients (keyvault/vault_client.py) are cached per vault and
identity, so their connections, challenge and the credential's tokens are reused
across mounts.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    IncompleteReadError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.identity import CredentialUnavailableError

from kvmount.keyvault.coalesce import Coalescer
from kvmount.keyvault.content import JsonWebKey
from kvmount.keyvault.errors import AnswerTooLarge, Category, KeyVaultError
from kvmount.keyvault.fairpool import BatchTimeout, FairPool
from kvmount.keyvault.limits import ContentBudget, ReadCap
from kvmount.keyvault.objects import ObjectSpec, ObjectType
from kvmount.keyvault.retry import BudgetRetryPolicy, fetch_deadline
from kvmount.keyvault.transport import VaultTransport
from kvmount.keyvault.vault_client import VaultClient, version_of

T = TypeVar("T")
# READ_TIMEOUT is the time a whole answer has to arrive (keyvault/connections.py).
CONNECT_TIMEOUT, READ_TIMEOUT = 10.0, 30.0

# Retries inside one call stay short: the driver retries the whole mount.
CLIENT_OPTIONS: dict[str, Any] = {
    "retry_policy": BudgetRetryPolicy(retry_total=2),
    "connection_timeout": CONNECT_TIMEOUT,
    "read_timeout": READ_TIMEOUT,
}


def call_options(deadline: float | None, cap: ReadCap) -> dict[str, Any]:
    """Per-call SDK options that end the call, its retries and its reads at ``deadline``,
    and bound each answer by ``cap``."""
    fetch_deadline.deadline = deadline
    if deadline is None:
        return {"cap": cap}
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ServiceResponseTimeoutError("the mount's time budget is spent")
    return {
        "cap": cap,
        "mount_deadline": deadline,
        "timeout": remaining,
        "connection_timeout": min(CONNECT_TIMEOUT, remaining),
        "read_timeout": min(READ_TIMEOUT, remaining),
    }


_AADSTS = re.compile(r"AADSTS\d+")


@dataclass(frozen=True)
class Fetched:
    """One object version as Key Vault returned it."""

    spec: ObjectSpec
    version: str
    secret_value: str | None = None
    content_type: str | None = None
    # Set when the secret is a certificate's (its key's id): only those are converted and split.
    key_id: str | None = None
    key: JsonWebKey | None = None
    certificate_der: bytes | None = None
    # Key Vault still serves a version after its expiry; `kvmount doctor` warns about it.
    expires_on: datetime | None = None


def _observe(object_type: str, category: str, seconds: float) -> None:
    """Replaced by the provider with its metrics hook."""


observe_request: Callable[[str, str, float], None] = _observe


def classify(err: Exception) -> Category:
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


class ClientCache:
    """Vault clients by (vault URL, identity key), least recently used evicted; the
    clients of one vault share its connection pool."""

    def __init__(self, max_entries: int = 256, user_agent: str = "") -> None:
        self._entries: OrderedDict[tuple[str, str], VaultClient] = OrderedDict()
        self._transports: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._max = max_entries
        # user_agent: the SDK's UserAgentPolicy puts it in front of its own.
        self._user_agent = user_agent

    def get(self, vault_url: str, identity: str, credential: TokenCredential) -> VaultClient:
        key = (vault_url, identity)
        with self._lock:
            client = self._entries.get(key)
            if client is None:
                # A policy belongs to one pipeline (it links to the next), so each client has its own.
                retry = BudgetRetryPolicy(retry_total=2)
                if vault_url not in self._transports:
                    self._transports[vault_url] = VaultTransport(CONNECT_TIMEOUT, READ_TIMEOUT)
                transport = self._transports[vault_url]
                client = VaultClient(vault_url, credential, retry, transport, self._user_agent)
                self._entries[key] = client
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
                for unused in self._transports.keys() - {url for url, _ in self._entries}:
                    self._transports.pop(unused).close()
            self._entries.move_to_end(key)
            return client


def _timed(object_type: str, call: Callable[[], T]) -> T:
    start = time.perf_counter()
    try:
        result = call()
    except Exception as err:
        observe_request(object_type, classify(err).value, time.perf_counter() - start)
        raise
    observe_request(object_type, "", time.perf_counter() - start)
    return result


def _attributes(doc: dict[str, Any]) -> dict[str, Any]:
    attributes = doc.get("attributes")
    return attributes if isinstance(attributes, dict) else {}


def _expiry(doc: dict[str, Any]) -> datetime | None:
    exp = _attributes(doc).get("exp")
    return datetime.fromtimestamp(exp, UTC) if isinstance(exp, int | float) else None


def _base64url(value: Any) -> bytes | None:
    """A JWK field as the SDK decodes it (base64url, padding optional)."""
    if not isinstance(value, str):
        return None
    return base64.b64decode(value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4))


def history_versions(
    client: VaultClient,
    spec: ObjectSpec,
    limit: int | None = None,
    deadline: float | None = None,
    cap: ReadCap | None = None,
) -> list[str]:
    """The newest enabled versions, newest first, starting at objectVersion when
    one is set; at most ``limit`` (default the spec's history, 0 for all). Each
    page of the listing is bounded by ``cap``."""
    cap = cap or ReadCap()
    kw = call_options(deadline, cap)
    id_field = "kid" if spec.type is ObjectType.KEY else "id"

    def listing() -> list[dict[str, Any]]:
        with cap:
            return list(client.list_versions(spec.type.value, spec.name, deadline, **kw))

    # Creation times have one-second resolution; on a tie, the later-listed is taken as newer.
    listed = list(enumerate(_timed(spec.type.value, listing)))
    items = [
        i
        for _, i in sorted(
            listed, key=lambda ii: (_attributes(ii[1]).get("created") or 0, ii[0]), reverse=True
        )
    ]
    versions = [
        version_of(str(i.get(id_field, ""))) for i in items if _attributes(i).get("enabled") is not False
    ]
    if not spec.latest:
        if spec.version not in versions:
            raise ResourceNotFoundError(f"version {spec.version} is not an enabled version")
        versions = versions[versions.index(spec.version) :]
    limit = spec.version_history if limit is None else limit
    return versions[:limit] if limit else versions


def fetch_version(
    client: VaultClient,
    spec: ObjectSpec,
    version: str,
    deadline: float | None = None,
    cap: ReadCap | None = None,
) -> Fetched:
    """One version (``version`` "" for the current one), its answer bounded by ``cap``."""
    cap = cap or ReadCap()
    kw = call_options(deadline, cap)
    kind = spec.type.value
    with cap:
        doc = _timed(kind, lambda: client.get_object(kind, spec.name, version, deadline, **kw))
    if spec.type is ObjectType.SECRET:
        value, content_type, key_id = doc.get("value"), doc.get("contentType"), doc.get("kid")
        return Fetched(
            spec,
            version_of(str(doc.get("id", ""))),
            value if isinstance(value, str) else None,
            content_type if isinstance(content_type, str) else None,
            key_id if isinstance(key_id, str) else None,
            expires_on=_expiry(doc),
        )
    if spec.type is ObjectType.KEY:
        jwk = doc.get("key")
        jwk = jwk if isinstance(jwk, dict) else {}
        crv = jwk.get("crv")
        key = JsonWebKey(
            str(jwk.get("kty", "")),
            _base64url(jwk.get("n")),
            _base64url(jwk.get("e")),
            crv if isinstance(crv, str) else None,
            _base64url(jwk.get("x")),
            _base64url(jwk.get("y")),
        )
        return Fetched(spec, version_of(str(jwk.get("kid", ""))), key=key, expires_on=_expiry(doc))
    cer = doc.get("cer")
    der = base64.b64decode(cer) if isinstance(cer, str) else b""
    return Fetched(spec, version_of(str(doc.get("id", ""))), certificate_der=der, expires_on=_expiry(doc))


def _size(fetched: Fetched) -> int:
    """About the bytes an object version holds, for --max-mount-bytes."""
    if fetched.secret_value is not None:
        return len(fetched.secret_value)
    if fetched.certificate_der is not None:
        return len(fetched.certificate_der)
    return 1024  # a public key: a few hundred bytes


# A mount runs at most this many of its fetches at once. At 20 ms per request that is
# 300 reads/s for one mount (50 objects in about 0.2 s); letting one mount wake every
# worker instead cost CPU in GIL hand-offs without being faster when Key Vault answers
# quickly (bench/RESULTS.md: 0.5 ms of CPU per object with 2 to 4 at once, 0.74 with 16).
# Concurrent mounts still use the whole pool (--max-concurrent-fetches).
PER_MOUNT = 6


class Fetcher:
    """Runs mounts' fetches on a shared, bounded pool, each mount served in turn."""

    def __init__(self, max_concurrency: int = 8) -> None:
        self._pool = FairPool(max_concurrency, name="kvfetch")

    def fetch_all(
        self,
        vault: str,
        clients: VaultClient,
        specs: Iterable[ObjectSpec],
        coalescer: Coalescer | None = None,
        principal: str = "",
        since: float | None = None,
        deadline: float | None = None,
        budget: ContentBudget | None = None,
    ) -> list[list[Fetched]]:
        """For each spec, its fetched versions: one, or its history newest first.

        With a coalescer, identical reads by the same principal are shared;
        ``principal`` must name everything that decides the right to read.
        ``since`` is when the mount began (time.monotonic()): it takes no read
        that began earlier and has completed, so it sees every change made
        before it. None marks a rotation poll (see Coalescer.run).
        Past ``deadline`` (time.monotonic()) the mount fails as UNAVAILABLE;
        ``budget`` counts the bytes as they arrive (--max-mount-bytes), and caps
        each answer (--max-object-bytes).
        """
        specs = list(specs)
        shared = coalescer or Coalescer(0)

        def guarded(spec: ObjectSpec, call: Callable[[], T]) -> T:
            try:
                return call()
            except Exception as err:
                raise describe_failure(vault, spec, err) from None

        def versions_of(spec: ObjectSpec) -> list[str]:
            if not spec.has_history:
                return [spec.version]
            version = "" if spec.latest else spec.version
            key = (clients.vault_url, principal, spec.type, spec.name, version, "history")

            def listing() -> list[str]:
                return history_versions(clients, spec, 0, deadline, None if budget is None else budget.cap())

            listed = guarded(spec, lambda: shared.run(key, listing, since=since))
            return listed[: spec.version_history]

        def fetch_one(job: tuple[ObjectSpec, str]) -> Fetched:
            spec, version = job
            key = (clients.vault_url, principal, spec.type, spec.name, version)

            def read() -> Fetched:
                return fetch_version(
                    clients, spec, version, deadline, None if budget is None else budget.cap()
                )

            fetched = guarded(spec, lambda: shared.run(key, read, since=since))
            if budget is not None:
                budget.take(spec, _size(fetched))
            # A shared read may have been made for another spec of the same object.
            return replace(fetched, spec=spec)

        def run_all(func: Callable[[Any], Any], items: list[Any]) -> list[Any]:
            try:
                return self._pool.map(func, items, deadline, PER_MOUNT)
            except BatchTimeout as late:
                spec = late.item if isinstance(late.item, ObjectSpec) else late.item[0]
                raise KeyVaultError(
                    f"keyvault {vault!r}: {spec.describe()}: no answer within the mount's time budget; "
                    "Key Vault or the network is slow or failing; retry later",
                    Category.UNAVAILABLE,
                ) from None

        needs_listing = any(s.has_history for s in specs)
        plans = run_all(versions_of, specs) if needs_listing else [[s.version] for s in specs]
        jobs = [(spec, version) for spec, versions in zip(specs, plans, strict=True) for version in versions]
        results = run_all(fetch_one, jobs)
        grouped: list[list[Fetched]] = [[] for _ in specs]
        index = {id(spec): i for i, spec in enumerate(specs)}
        for (spec, _), fetched in zip(jobs, results, strict=True):
            grouped[index[id(spec)]].append(fetched)
        return grouped

    def shutdown(self) -> None:
        self._pool.shutdown()
