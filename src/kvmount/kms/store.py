"""Volume passphrases (DEKs) in Key Vault, with Ceph-CSI's contract.

A volume's passphrase is the secret named by its volume id. Store sets it,
fetch reads the latest version, remove deletes it without purging (so a
soft-delete vault can still recover it) and succeeds when it is already gone.

Rotation keeps the passphrase in use readable until the caller has re-keyed
the volume. ``rotate`` sets a new version tagged ``kvmount-rotation: pending``
and ``kvmount-previous-version: <version>``; while pending, ``fetch_previous``
returns the old passphrase and ``rotate`` again returns the same pending one
rather than a third, so a caller that crashed before re-keying can retry.
``confirm_rotation`` disables the previous version and tags the current one
``confirmed``. Tags and the enabled flag are Key Vault's own version
attributes, so the state lives with the secret and needs no other store.

Every request goes through the provider's bounded transports (keyvault's
``read_transport``, and the credential's token transport, kms/auth.py): each Key Vault
answer decoded at most --max-object-bytes and whole within the read timeout, and
every request, retry and token request of the call ended by its deadline (--timeout).
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ResourceNotFoundError,
    ServiceRequestTimeoutError,
    ServiceResponseTimeoutError,
)
from azure.keyvault.secrets import SecretClient

from kvmount.keyvault import (
    CLIENT_OPTIONS,
    AnswerTooLarge,
    Category,
    InvalidSpec,
    KeyVaultError,
    call_options,
    classify,
    failure_suffix,
    read_transport,
    token_bound,
)
from kvmount.kms.config import KMSConfig

# Key Vault's rule for object names.
_VOLUME_ID = re.compile(r"[0-9A-Za-z-]{1,127}")
# Ceph-CSI's sizes: 160 bits for LUKS, 512 bits for an fscrypt protector.
PASSPHRASE_BYTES = {"luks": 20, "fscrypt": 64}

ROTATION_TAG = "kvmount-rotation"
PREVIOUS_TAG = "kvmount-previous-version"
PENDING = "pending"
CONFIRMED = "confirmed"


def check_volume_id(volume_id: str) -> str:
    if not _VOLUME_ID.fullmatch(volume_id):
        raise InvalidSpec(
            "--volume-id",
            f"{volume_id!r} cannot name a Key Vault secret: "
            "it must be 1-127 characters of 0-9, a-z, A-Z and '-'",
        )
    return volume_id


def new_passphrase(kind: str) -> str:
    """Random bytes as URL-safe base64 with padding, as Ceph-CSI makes them."""
    return base64.urlsafe_b64encode(secrets.token_bytes(PASSPHRASE_BYTES[kind])).decode("ascii")


@dataclass(frozen=True)
class Stored:
    passphrase: str = field(repr=False)  # kept out of any log or traceback that shows a Stored
    version: str
    previous_version: str = ""


class PassphraseStore:
    def __init__(
        self, config: KMSConfig, credential: TokenCredential, deadline: float, max_object_bytes: int
    ) -> None:
        """``deadline`` (time.monotonic()): when every request of the call must have ended."""
        self._config = config
        self._deadline = deadline
        transport = read_transport(max_object_bytes)
        self._client = SecretClient(config.vault_url, credential, transport=transport, **CLIENT_OPTIONS)

    def _options(self) -> dict[str, Any]:
        """A request's options: it, its retries and its token requests end at the deadline."""
        return call_options(self._deadline)

    def close(self) -> None:
        self._client.close()

    @contextmanager
    def _errors(self, volume_id: str) -> Iterator[None]:
        """Azure failures as one KeyVaultError naming the vault and volume, without response bodies."""
        try:
            yield
        except Exception as err:
            # A cap's refusal is a KeyVaultError too: it is described with the vault and volume.
            if (
                isinstance(err, KeyVaultError)
                and not isinstance(err, AnswerTooLarge)
                and not token_bound(err)
            ):
                raise
            raise self._describe(volume_id, err) from None

    def _describe(self, volume_id: str, err: Exception) -> KeyVaultError:
        cfg = self._config
        category = classify(err)
        status = getattr(err, "status_code", None)
        bound = token_bound(err)
        if isinstance(err, AnswerTooLarge) or (bound and bound.category is not Category.UNAVAILABLE):
            detail = str(bound or err)  # names the cap's flag, never the answer
        elif bound or isinstance(err, ServiceRequestTimeoutError | ServiceResponseTimeoutError):
            detail = (
                "Key Vault or the token endpoint did not answer in time: each answer must arrive whole "
                "within the read timeout, and the whole call end within --timeout; retry later"
            )
        elif status == 409:
            detail = "a deleted secret of this name awaits purge or recovery in the vault"
        elif category is Category.NOT_FOUND:
            detail = "no passphrase is stored for this volume"
        elif category is Category.FORBIDDEN:
            detail = (
                "access denied (the client needs get, set, list and delete on secrets) "
                "or the version is disabled"
            )
        elif category is Category.UNAUTHENTICATED:
            detail = (
                f"no token for client {cfg.client_id!r} in tenant {cfg.tenant_id!r} from {cfg.authority}; "
                "check AZURE_CLIENT_ID, AZURE_TENANT_ID and the credential"
            )
        elif category is Category.UNAVAILABLE:
            detail = "Key Vault or the token endpoint is unreachable or failing; retry later"
        else:
            detail = f"unexpected failure ({type(err).__name__})"
        return KeyVaultError(
            f"{cfg.vault_url}: volume {volume_id!r}: {detail}{failure_suffix(err)}", category
        )

    def store(self, volume_id: str, passphrase: str, tags: dict[str, str] | None = None) -> str:
        """Sets the passphrase as the secret's new version; returns the version."""
        with self._errors(volume_id):
            props = self._client.set_secret(volume_id, passphrase, tags=tags, **self._options()).properties
        return props.version or ""

    def fetch(self, volume_id: str) -> Stored:
        with self._errors(volume_id):
            secret = self._client.get_secret(volume_id, **self._options())
        tags = secret.properties.tags or {}
        previous = tags.get(PREVIOUS_TAG, "") if tags.get(ROTATION_TAG) == PENDING else ""
        return Stored(secret.value or "", secret.properties.version or "", previous)

    def remove(self, volume_id: str) -> bool:
        """Deletes without purging or waiting; False when there was nothing to delete."""
        with self._errors(volume_id):
            try:
                self._client.begin_delete_secret(volume_id, **self._options())
            except ResourceNotFoundError:
                return False
        return True

    def create(self, volume_id: str, kind: str) -> Stored:
        """A new passphrase for a volume that has none: a volume's data is lost
        with its passphrase, so an existing one is never overwritten."""
        with self._errors(volume_id):
            try:
                self._client.get_secret(volume_id, **self._options())
            except ResourceNotFoundError:
                pass
            else:
                raise KeyVaultError(
                    f"{self._config.vault_url}: volume {volume_id!r} already has a passphrase; "
                    "fetch it, or rotate it",
                    Category.INVALID,
                )
        passphrase = new_passphrase(kind)
        return Stored(passphrase, self.store(volume_id, passphrase))

    def fetch_previous(self, volume_id: str) -> Stored:
        current = self.fetch(volume_id)
        if not current.previous_version:
            raise KeyVaultError(
                f"{self._config.vault_url}: volume {volume_id!r} has no rotation pending, "
                "so no previous passphrase is kept",
                Category.NOT_FOUND,
            )
        with self._errors(volume_id):
            secret = self._client.get_secret(volume_id, current.previous_version, **self._options())
        return Stored(secret.value or "", secret.properties.version or "")

    def rotate(self, volume_id: str, kind: str) -> Stored:
        """A new passphrase as a new version, the current one kept until confirmed;
        while a rotation is pending, that rotation's passphrase again."""
        current = self.fetch(volume_id)
        if current.previous_version:
            return current
        passphrase = new_passphrase(kind)
        tags = {ROTATION_TAG: PENDING, PREVIOUS_TAG: current.version}
        return Stored(passphrase, self.store(volume_id, passphrase, tags), current.version)

    def confirm_rotation(self, volume_id: str) -> str:
        """Disables the version a pending rotation replaced and returns it; "" when
        none is pending, so a retried confirmation succeeds."""
        current = self.fetch(volume_id)
        previous = current.previous_version
        if not previous:
            return ""
        with self._errors(volume_id):
            # Disable first: if the tag update then fails, a retry finds it pending and repeats both.
            self._client.update_secret_properties(volume_id, previous, enabled=False, **self._options())
            self._client.update_secret_properties(
                volume_id,
                current.version,
                tags={ROTATION_TAG: CONFIRMED, PREVIOUS_TAG: previous},
                **self._options(),
            )
        return previous
