"""Fetching objects and their versions from Key Vault, concurrently.

One mount's objects (and the versions of an object's history) are fetched in
parallel with a bound. Clients (http/vault_client.py) are cached per vault and
identity, so their connections, challenge and the credential's tokens are reused
across mounts.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar, cast

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ResourceNotFoundError,
    ServiceResponseTimeoutError,
)

from kvmount.keyvault.content import JsonWebKey
from kvmount.keyvault.errors import Category, KeyVaultError
from kvmount.keyvault.failures import classify, describe_failure, outage
from kvmount.keyvault.http.retry import BudgetRetryPolicy, fetch_deadline
from kvmount.keyvault.http.transport import VaultTransport
from kvmount.keyvault.http.vault_client import VaultClient, version_of
from kvmount.keyvault.parameters.limits import DEFAULT_MAX_OBJECT_BYTES, ContentBudget, ReadCap
from kvmount.keyvault.scheduling.coalesce import Coalescer
from kvmount.keyvault.scheduling.fairpool import BatchTimeout, FairPool
from kvmount.keyvault.scheduling.select import Listed, list_type, listing_failure, matching
from kvmount.keyvault.scheduling.stale import StaleCache, StaleServe
from kvmount.keyvault.types import ObjectSpec, ObjectType

T = TypeVar("T")
# READ_TIMEOUT is the time a whole answer has to arrive (keyvault/connections.py).
CONNECT_TIMEOUT, READ_TIMEOUT = 10.0, 30.0

# Retries inside one call stay short: the driver retries the whole mount.
CLIENT_OPTIONS: dict[str, Any] = {
    "retry_policy": BudgetRetryPolicy(retry_total=2),
    "connection_timeout": CONNECT_TIMEOUT,
    "read_timeout": READ_TIMEOUT,
}


def read_transport(max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES) -> VaultTransport:
    """The bounded transport of one vault's reads: each answer whole within READ_TIMEOUT and,
    unless a call brings a cap of its own, at most ``max_object_bytes`` decoded
    (--max-object-bytes); the provider's clients and `kvmount kms`'s SecretClient."""
    return VaultTransport(CONNECT_TIMEOUT, READ_TIMEOUT, default_cap=partial(ReadCap, max_object_bytes))


def call_options(deadline: float | None, cap: ReadCap | None = None) -> dict[str, Any]:
    """Per-call SDK options that end the call, its retries, its reads and this thread's token
    requests at ``deadline``, and bound each answer by ``cap`` (else the transport's own)."""
    fetch_deadline.deadline = deadline
    capped = {} if cap is None else {"cap": cap}
    if deadline is None:
        return capped
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ServiceResponseTimeoutError("the mount's time budget is spent")
    return {
        **capped,
        "mount_deadline": deadline,
        "timeout": remaining,
        "connection_timeout": min(CONNECT_TIMEOUT, remaining),
        "read_timeout": min(READ_TIMEOUT, remaining),
    }


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


# Told of each Key Vault request: (object type, failure category or "", seconds); the provider's metrics.
RequestObserver = Callable[[str, str, float], None]


def _unobserved(object_type: str, category: str, seconds: float) -> None: ...


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
                    self._transports[vault_url] = read_transport()
                transport = self._transports[vault_url]
                client = VaultClient(vault_url, credential, retry, transport, self._user_agent)
                self._entries[key] = client
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
                for unused in self._transports.keys() - {url for url, _ in self._entries}:
                    self._transports.pop(unused).close()
            self._entries.move_to_end(key)
            return client


def _timed(observe: RequestObserver, object_type: str, call: Callable[[], T]) -> T:
    start = time.perf_counter()
    try:
        result = call()
    except Exception as err:
        observe(object_type, classify(err).value, time.perf_counter() - start)
        raise
    observe(object_type, "", time.perf_counter() - start)
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
    observe: RequestObserver = _unobserved,
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
    listed = list(enumerate(_timed(observe, spec.type.value, listing)))
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
    observe: RequestObserver = _unobserved,
    cap: ReadCap | None = None,
) -> Fetched:
    """One version (``version`` "" for the current one), its answer bounded by ``cap``."""
    cap = cap or ReadCap()
    kw = call_options(deadline, cap)
    kind = spec.type.value
    with cap:
        doc = _timed(observe, kind, lambda: client.get_object(kind, spec.name, version, deadline, **kw))
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


def _listing_size(listed: list[Listed]) -> int:
    """About the bytes a listing holds in memory: names and tags, and each entry's own objects."""
    return sum(64 + len(one.name) + sum(len(k) + len(v) for k, v in one.tags) for one in listed)


# A mount runs at most this many of its fetches at once. At 20 ms per request that is
# 300 reads/s for one mount (50 objects in about 0.2 s); letting one mount wake every
# worker instead cost CPU in GIL hand-offs without being faster when Key Vault answers
# quickly (bench/RESULTS.md: 0.5 ms of CPU per object with 2 to 4 at once, 0.74 with 16).
# Concurrent mounts still use the whole pool (--max-concurrent-fetches).
PER_MOUNT = 6


@dataclass(frozen=True)
class MountReads:
    """One mount's reads. Identical reads by one ``principal`` (everything that decides the
    right to read) are shared; ``since``: when the mount began (time.monotonic()), it takes no
    read that began earlier and has completed, so it sees every change made before it; None
    marks a rotation poll (see Coalescer.run). Past ``deadline`` (time.monotonic()) the mount
    fails as UNAVAILABLE; ``budget`` counts the bytes as they arrive (--max-mount-bytes) and
    caps each answer (--max-object-bytes). ``stale`` collects the reads answered from the
    stale cache during a Key Vault outage."""

    vault: str
    client: VaultClient
    principal: str = ""
    since: float | None = None
    deadline: float | None = None
    budget: ContentBudget | None = None
    stale: list[StaleServe] = field(default_factory=list)


class Fetcher:
    """Runs mounts' fetches on a shared, bounded pool, each mount served in turn; with a
    coalescer, identical reads are shared node-wide; with a stale cache, reads failed by an
    outage are answered with the same principal's last content. ``observe`` is told of each
    request."""

    def __init__(
        self,
        max_concurrency: int = 8,
        coalescer: Coalescer | None = None,
        observe: RequestObserver | None = None,
        stale: StaleCache | None = None,
    ) -> None:
        self._pool = FairPool(max_concurrency, name="kvfetch")
        self._shared = coalescer or Coalescer(0)
        self._stale = stale or StaleCache(0, 0)
        self._observe = observe or _unobserved

    def fetch_all(self, mount: MountReads, specs: Iterable[ObjectSpec]) -> list[list[Fetched]]:
        """For each spec, its fetched versions: one, or its history newest first."""
        specs = list(specs)
        plans = [[s.version] for s in specs]
        if any(s.has_history for s in specs):
            plans = self._run_all(mount, lambda spec: self._versions_of(mount, spec), specs)
        jobs = [(spec, version) for spec, versions in zip(specs, plans, strict=True) for version in versions]
        results = self._run_all(mount, lambda job: self._fetch_one(mount, job), jobs)
        grouped: list[list[Fetched]] = [[] for _ in specs]
        index = {id(spec): i for i, spec in enumerate(specs)}
        for (spec, _), fetched in zip(jobs, results, strict=True):
            grouped[index[id(spec)]].append(fetched)
        return grouped

    def expand(self, mount: MountReads, specs: list[ObjectSpec]) -> list[ObjectSpec]:
        """Each selecting entry replaced by its matches, named; one type's listing is shared."""
        selecting = [s for s in specs if s.selects]
        if not selecting:
            return specs
        listed = self._run_all(mount, lambda spec: self._listing(mount, spec), selecting)
        found = {id(s): matching(mount.vault, s, one) for s, one in zip(selecting, listed, strict=True)}
        return [named for s in specs for named in (found[id(s)] if s.selects else [s])]

    def _listing(self, mount: MountReads, spec: ObjectSpec) -> list[Listed]:
        key = (mount.client.vault_url, mount.principal, spec.type, "", "", "objects")
        cap = ReadCap() if mount.budget is None else mount.budget.cap()

        def read() -> list[Listed]:
            kw = call_options(mount.deadline, cap)
            listing = partial(list_type, mount.client, spec.type, mount.deadline, kw, cap)
            return _timed(self._observe, spec.type.value, listing)

        failure = partial(listing_failure, mount.vault, spec)
        return self._read(mount, spec, key, read, _listing_size, failure)

    def _read(
        self,
        mount: MountReads,
        spec: ObjectSpec,
        key: tuple[Any, ...],
        read: Callable[[], T],
        size: Callable[[T], int],
        failure: Callable[[Exception], KeyVaultError] | None = None,
    ) -> T:
        """A shared read; when Key Vault is out, the principal's last content for ``key``.
        ``failure`` words the error (default: the object's)."""
        try:
            value = self._shared.run(key, read, since=mount.since)
        except Exception as err:
            reason = outage(err)
            kept = self._stale.get(key) if reason else None
            if kept is None:
                if classify(err) in (Category.NOT_FOUND, Category.FORBIDDEN):
                    self._stale.drop(key[:4])  # gone or taken away: none of its versions (or listing) again
                raise (failure or partial(describe_failure, mount.vault, spec))(err) from None
            assert reason is not None
            mount.stale.append(StaleServe(spec.describe(), kept[1], reason))
            return cast(T, kept[0])
        self._stale.keep(key, value, size(value))
        return value

    def _versions_of(self, mount: MountReads, spec: ObjectSpec) -> list[str]:
        if not spec.has_history:
            return [spec.version]
        version = "" if spec.latest else spec.version
        key = (mount.client.vault_url, mount.principal, spec.type, spec.name, version, "history")
        cap = None if mount.budget is None else mount.budget.cap()
        listing = partial(history_versions, mount.client, spec, 0, mount.deadline, self._observe, cap)
        listed = self._read(mount, spec, key, listing, lambda versions: sum(map(len, versions)))
        return listed[: spec.version_history]

    def _fetch_one(self, mount: MountReads, job: tuple[ObjectSpec, str]) -> Fetched:
        spec, version = job
        key = (mount.client.vault_url, mount.principal, spec.type, spec.name, version)
        cap = None if mount.budget is None else mount.budget.cap()
        read = partial(fetch_version, mount.client, spec, version, mount.deadline, self._observe, cap)
        fetched = self._read(mount, spec, key, read, _size)
        if mount.budget is not None:
            mount.budget.take(spec, _size(fetched))
        # A shared read may have been made for another spec of the same object.
        return replace(fetched, spec=spec)

    def _run_all(self, mount: MountReads, func: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        try:
            return self._pool.map(func, items, mount.deadline, PER_MOUNT)
        except BatchTimeout as late:
            spec = late.item if isinstance(late.item, ObjectSpec) else late.item[0]
            raise KeyVaultError(
                f"keyvault {mount.vault!r}: {spec.describe()}: no answer within the mount's time budget; "
                "Key Vault or the network is slow or failing; retry later",
                Category.UNAVAILABLE,
            ) from None

    def shutdown(self) -> None:
        self._pool.shutdown()
