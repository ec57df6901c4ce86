"""A mount's Key Vault objects as files: identity, fetch and content together.

The provider's gRPC Mount, `kvmount mount` and the FlexVolume driver all come
through here, so each object is named, fetched and converted the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kvmount.keyvault import clouds
from kvmount.keyvault.coalesce import Coalescer
from kvmount.keyvault.content import (
    ContentOptions,
    certificate_pem,
    public_key_pem,
    secret_files,
)
from kvmount.keyvault.fetch import ClientCache, Fetched, Fetcher, describe_failure
from kvmount.keyvault.identity import NMI_PORT, CredentialCache, principal_key, prove
from kvmount.keyvault.objects import MountParams, ObjectType, parse_mount


@dataclass(frozen=True)
class File:
    path: str
    mode: int
    contents: bytes


@dataclass(frozen=True)
class MountResult:
    files: list[File]
    # (id, version) pairs as upstream reports them in MountResponse.object_version.
    versions: list[tuple[str, str]]


@dataclass(frozen=True)
class Settings:
    """Node-wide settings of whoever mounts: the provider's flags."""

    content: ContentOptions = field(default_factory=ContentOptions)
    default_cloud: str = ""
    max_concurrency: int = 8
    nmi_port: int = NMI_PORT
    # Identical reads by one principal within this window are shared (0: never).
    coalesce_seconds: float = 5.0


def _files_of(fetched: Fetched, path: str, mode: int, content: ContentOptions) -> list[File]:
    spec = fetched.spec
    if spec.file_permission is not None:
        mode = spec.file_permission
    if spec.type is ObjectType.SECRET:
        pairs = secret_files(spec, path, fetched.secret_value or "", fetched.content_type, content)
    elif spec.type is ObjectType.KEY:
        assert fetched.key is not None
        pairs = [(path, public_key_pem(spec, fetched.key))]
    else:
        pairs = [(path, certificate_pem(spec, fetched.certificate_der or b""))]
    return [File(p, mode, data) for p, data in pairs]


class KeyVaultMounter:
    """Long-lived: holds the credential and client caches and the fetch pool."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.credentials = CredentialCache(nmi_port=self.settings.nmi_port)
        self.clients = ClientCache()
        self.fetcher = Fetcher(self.settings.max_concurrency)
        self.coalescer = Coalescer(self.settings.coalesce_seconds)

    def mount(self, params: MountParams, default_mode: int) -> MountResult:
        cloud = clouds.resolve(params.cloud_name, params.cloud_env_file, self.settings.default_cloud)
        identity, credential = self.credentials.get(params, cloud)
        clients = self.clients.get(cloud.vault_url(params.vault_name), identity, credential)
        try:
            prove(params, cloud, credential)
        except Exception as err:
            raise describe_failure(params.vault_name, None, err) from None
        principal = principal_key(params, cloud)
        fetched = self.fetcher.fetch_all(
            params.vault_name, clients, params.objects, self.coalescer, principal
        )
        files: list[File] = []
        versions: list[tuple[str, str]] = []
        for spec, got in zip(params.objects, fetched, strict=True):
            if spec.version_history == 0:
                files += _files_of(got[0], spec.file_name, default_mode, self.settings.content)
                versions.append((spec.id, got[0].version))
                continue
            for i, one in enumerate(got):
                files += _files_of(one, f"{spec.file_name}/{i}", default_mode, self.settings.content)
                versions.append((f"{spec.id}/{i}", one.version))
        return MountResult(files, versions)

    def mount_attributes(
        self, attributes: Mapping[str, str], secrets: Mapping[str, str] | None, default_mode: int
    ) -> MountResult:
        return self.mount(parse_mount(attributes, secrets), default_mode)

    def close(self) -> None:
        self.fetcher.shutdown()
