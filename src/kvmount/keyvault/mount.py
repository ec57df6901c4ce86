"""A mount's Key Vault objects as files: identity, fetch and content together.

The provider's gRPC Mount, `kvmount mount` and the FlexVolume driver all come
through here, so each object is named, fetched and converted the same way.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from kvmount.keyvault import clouds
from kvmount.keyvault.content import (
    ContentOptions,
    certificate_pem,
    check_split_paths,
    public_key_pem,
    secret_files,
)
from kvmount.keyvault.failures import describe_failure
from kvmount.keyvault.http.retry import fetch_deadline
from kvmount.keyvault.identity.choice import NMI_PORT
from kvmount.keyvault.identity.credentials import (
    CredentialCache,
    CredentialOptions,
    principal_key,
    prove,
)
from kvmount.keyvault.identity.token_proxy import TokenProxy
from kvmount.keyvault.jsonparts import json_part_files
from kvmount.keyvault.parameters.limits import ContentBudget, Limits
from kvmount.keyvault.parameters.objects import check_selected, parse_mount
from kvmount.keyvault.scheduling.coalesce import Coalescer
from kvmount.keyvault.scheduling.fetch import (
    ClientCache,
    Fetched,
    Fetcher,
    MountReads,
    RequestObserver,
)
from kvmount.keyvault.scheduling.stale import DEFAULT_STALE_CACHE_BYTES, StaleCache, StaleServe
from kvmount.keyvault.types import MountParams, ObjectType


@dataclass(frozen=True)
class File:
    path: str
    mode: int
    contents: bytes


@dataclass(frozen=True)
class MountResult:
    files: list[File]
    # (id, version) pairs as upstream reports them in MountResponse.object_version: one per file.
    versions: list[tuple[str, str]]
    # Objects answered from the stale cache because Key Vault was out (--serve-stale-on-error).
    stale: list[StaleServe] = field(default_factory=list)


@dataclass(frozen=True)
class Settings:
    """Node-wide settings of whoever mounts: the provider's flags."""

    content: ContentOptions = field(default_factory=ContentOptions)
    default_cloud: str = ""
    max_concurrency: int = 8
    nmi_port: int = NMI_PORT
    # Identical reads of one principal share a read in flight; rotation polls also
    # take a read completed within this window (0: nothing is shared).
    coalesce_seconds: float = 5.0
    # --custom-user-agent: added to the User-Agent of Key Vault and token requests.
    user_agent: str = ""
    # --token-proxy-url and --sni-name: where identity binding sends its token requests.
    token_proxy_url: str = ""
    sni_name: str = ""
    # --cloud-env-dirs: where cloudEnvFileName may point (None: anywhere, for `kvmount mount`).
    cloud_env_dirs: tuple[str, ...] | None = None
    limits: Limits = field(default_factory=Limits)
    # --serve-stale-on-error (0: off) and --stale-cache-bytes (scheduling/stale.py).
    stale_seconds: float = 0.0
    stale_bytes: int = DEFAULT_STALE_CACHE_BYTES


def _files_of(fetched: Fetched, path: str, mode: int, settings: Settings) -> list[File]:
    spec = fetched.spec
    if spec.file_permission is not None:
        mode = spec.file_permission
    if spec.type is ObjectType.SECRET:
        value = fetched.secret_value or ""
        pairs = []
        if spec.writes_whole:
            pairs = secret_files(spec, path, value, fetched.content_type, fetched.key_id, settings.content)
        if spec.json_parts:
            pairs += json_part_files(spec, value, settings.limits.max_object_bytes)
    elif spec.type is ObjectType.KEY:
        assert fetched.key is not None
        pairs = [(path, public_key_pem(spec, fetched.key))]
    else:
        pairs = [(path, certificate_pem(spec, fetched.certificate_der or b""))]
    return [File(p, mode, data) for p, data in pairs]


class KeyVaultMounter:
    """Long-lived: holds the credential and client caches and the fetch pool."""

    def __init__(
        self, settings: Settings | None = None, observe_request: RequestObserver | None = None
    ) -> None:
        """``observe_request`` is told of each Key Vault request (the provider's metrics)."""
        self.settings = settings or Settings()
        s = self.settings
        proxy = TokenProxy(s.token_proxy_url, s.sni_name)
        node = CredentialOptions(s.nmi_port, s.user_agent, proxy, s.limits.max_token_answer_bytes)
        self.credentials = CredentialCache(node=node)
        self.clients = ClientCache(user_agent=self.settings.user_agent)
        coalescer = Coalescer(self.settings.coalesce_seconds)
        self.stale = StaleCache(s.stale_seconds, s.stale_bytes)
        self.fetcher = Fetcher(s.max_concurrency, coalescer, observe_request, self.stale)

    def cloud(self, params: MountParams) -> clouds.Cloud:
        """The mount's cloud: its cloudName or environment file, else the node's default."""
        s = self.settings
        return clouds.resolve(params.cloud_name, params.cloud_env_file, s.default_cloud, s.cloud_env_dirs)

    def mount(
        self, params: MountParams, default_mode: int, refresh: bool = False, deadline: float | None = None
    ) -> MountResult:
        """The files of a mount; ``refresh`` marks a rotation poll, which may be
        answered from a read completed within the coalescing window. Key Vault
        reads end at ``deadline`` (time.monotonic())."""
        since = None if refresh else time.monotonic()
        if self.settings.content.separate_cert_and_key:
            check_split_paths(params.objects)
        cloud = self.cloud(params)
        identity, credential = self.credentials.get(params, cloud)
        clients = self.clients.get(cloud.vault_url(params.vault_name), identity, credential)
        fetch_deadline.deadline = deadline  # its token request ends with the mount too
        try:
            prove(params, cloud, credential)
        except Exception as err:
            raise describe_failure(params.vault_name, None, err) from None
        finally:
            fetch_deadline.deadline = None  # this thread's later token requests are not this mount's
        principal = principal_key(params, cloud)
        budget = ContentBudget(self.settings.limits.max_mount_bytes, self.settings.limits.max_object_bytes)
        reads = MountReads(params.vault_name, clients, principal, since, deadline, budget)
        objects = self.fetcher.expand(reads, list(params.objects))
        if any(spec.selects for spec in params.objects):
            check_selected(objects, self.settings.limits)
            if self.settings.content.separate_cert_and_key:
                check_split_paths(objects)
        fetched = self.fetcher.fetch_all(reads, objects)
        files: list[File] = []
        versions: list[tuple[str, str]] = []
        for spec, got in zip(objects, fetched, strict=True):
            for i, one in enumerate(got):
                path, object_id = spec.file_name, spec.id
                if spec.has_history:
                    path, object_id = f"{path}/{i}", f"{object_id}/{i}"
                these = _files_of(one, path, default_mode, self.settings)
                files += these
                versions += [(object_id, one.version)] * len(these)
        return MountResult(files, versions, reads.stale)

    def mount_attributes(
        self,
        attributes: Mapping[str, str],
        secrets: Mapping[str, str] | None,
        default_mode: int,
        refresh: bool = False,
        deadline: float | None = None,
    ) -> MountResult:
        params = parse_mount(attributes, secrets, self.settings.limits)
        return self.mount(params, default_mode, refresh, deadline)

    def close(self) -> None:
        self.fetcher.shutdown()
