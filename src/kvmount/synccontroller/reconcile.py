"""One sync of one SecretSync: class -> the service account's tokens -> provider Mount -> Secret -> status.

The identity is the SecretSync's service account, never the controller's: its
tokens go to the provider exactly as kubelet hands a pod's tokens to the
driver. The class is read from the SecretSync's own namespace only. The Secret
is written only when its content changed, and only when it is owned by this
SecretSync (or does not exist yet).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from kvmount.csi.attributes import POD_NAME, POD_NAMESPACE, POD_UID, SA_NAME, SA_TOKENS
from kvmount.csi.provider_client import ProviderClients, ProviderError, ProviderReason
from kvmount.kube.api_store import KubeStore
from kvmount.kube.classes import CLASSES, GROUP, VERSION, parse_class
from kvmount.kube.errors import StoreError
from kvmount.kube.objects import SecretProviderClassObject
from kvmount.kube.podstatus import EventType, PodRef
from kvmount.kube.rest import ApiError, Unreachable, path
from kvmount.proto import v1alpha1_pb2 as pb
from kvmount.secretsync.apply import apply_secret
from kvmount.secretsync.data import SECRET_SYNC, secret_data
from kvmount.secretsync.errors import SyncError
from kvmount.secretsync.writer import Owner
from kvmount.synccontroller import api

log = logging.getLogger(__name__)

# The provider's default file mode, as the driver sends it (0644 as a JSON decimal).
PERMISSION = "420"
# As upstream; its admission policy for the controller's token requests allows exactly this.
TOKEN_SECONDS = 600


class NotLeading(Exception):
    """This replica may no longer write: another may hold the Lease by now."""


class Failed(Exception):
    """A sync that failed; ``reason`` is one of upstream's condition reasons."""

    def __init__(self, reason: api.ConditionReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Identity:
    """What the controller tells a provider about "the pod": the controller's own pod, as upstream."""

    pod_name: str
    pod_uid: str


class Reconciler:
    def __init__(
        self,
        store: KubeStore,
        providers: ProviderClients,
        audiences: list[str],
        identity: Identity,
        mount_timeout: float,
    ) -> None:
        self.store = store
        self.providers = providers
        self.audiences = audiences
        self.identity = identity
        self.mount_timeout = mount_timeout
        # Checked right before every write (set by leader election).
        self.leading: Callable[[], bool] = lambda: True

    def get(self, namespace: str, name: str) -> api.SecretSync | None:
        """The SecretSync as it is now, or None when it is gone."""
        try:
            doc = self.store.rest().get(path(api.API_VERSION, api.PLURAL, namespace, name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise
        return api.parse(doc)

    def reconcile(self, ss: api.SecretSync) -> bool:
        """Sync ``ss`` once and record the outcome in its status; True when it succeeded.

        As upstream: the starting conditions are written first; the Secret is
        applied when what would be synced (the sync hash) changed, or when the
        last sync failed; the status then says what happened."""
        conditions = ss.conditions
        if len(conditions) < 2:
            conditions = api.initial_conditions(conditions, ss.generation)
            self._write_status(ss, {"conditions": conditions})
        kind = api.ConditionType.CREATED if not ss.sync_hash else api.ConditionType.UPDATED
        start = time.monotonic()
        try:
            new_hash, written, stale = self._sync(ss, conditions)
        except Failed as err:
            log.warning(
                "sync failed", extra={"secretsync": ss.where, "reason": err.reason, "error": str(err)}
            )
            conditions = api.set_condition(
                conditions, kind, api.ConditionStatus.FALSE, err.reason, str(err), ss.generation
            )
            self._write_status(ss, {"conditions": conditions})
            self.store.record_event(self._ref(ss), EventType.WARNING, err.reason, str(err))
            return False
        if written:
            if kind == api.ConditionType.CREATED:
                conditions = api.set_condition(
                    conditions,
                    api.ConditionType.CREATED,
                    api.ConditionStatus.TRUE,
                    api.ConditionReason.CREATE_SUCCESSFUL,
                    api.CREATED_MESSAGE,
                    ss.generation,
                )
            conditions = api.set_condition(
                conditions,
                api.ConditionType.UPDATED,
                api.ConditionStatus.TRUE,
                api.ConditionReason.UP_TO_DATE,
                api.UPDATED_MESSAGE,
                ss.generation,
            )
            self._write_status(
                ss, {"conditions": conditions, "syncHash": new_hash, "lastSuccessfulSyncTime": api.now()}
            )
            self.store.record_event(
                self._ref(ss),
                EventType.NORMAL,
                api.EventReason.SECRET_SYNCED,
                f"Secret {ss.namespace}/{ss.name} written",
            )
        if stale:
            # Never silent: the SecretSync says which content is old, whether or not it was written.
            self.store.record_event(self._ref(ss), EventType.WARNING, api.EventReason.STALE_CONTENT, stale)
        log.info(
            "synced",
            extra={"secretsync": ss.where, "written": written, "seconds": round(time.monotonic() - start, 3)},
        )
        return True

    def _sync(self, ss: api.SecretSync, conditions: list[dict[str, Any]]) -> tuple[str, bool, str]:
        """(sync hash, whether the Secret was applied, the provider's note of stale content);
        raises Failed with upstream's reasons and words."""
        reserved = api.reserved_metadata(ss.secret_object)
        if reserved is not None:
            raise Failed(*reserved)
        spc_doc = self._get_class(ss)
        where = f"{ss.where}: SecretProviderClass {ss.namespace}/{ss.class_name}"
        try:
            spc = parse_class(spc_doc, where)
        except StoreError as err:
            raise Failed(api.ConditionReason.CLASS_ERROR, str(err)) from None
        files, stale = self._mount(ss, spc.provider, spc.parameters)
        secret_type, data = self._data(ss, files)
        new_hash = api.sync_hash(data, spc_doc, ss)
        retry = any(c.get("reason") in api.FAILED_REASONS for c in conditions)
        if new_hash == ss.sync_hash and not retry:
            return new_hash, False, stale
        self._may_write()
        labels = {
            **(ss.secret_object.get("labels") or {}),
            SECRET_SYNC.managed_label: SECRET_SYNC.managed_value,
        }
        owner = Owner(ss.name, ss.uid, api.API_VERSION, api.KIND)
        failed = f'failed to patch secret "{ss.name}"'
        try:
            apply_secret(
                self.store.rest(),
                ss.namespace,
                ss.name,
                secret_type,
                data,
                labels,
                ss.secret_object.get("annotations") or {},
                owner,
            )
        except ApiError as err:
            # The API server's own words (an admission policy's, a validation's): names, never values.
            raise Failed(
                api.ConditionReason.PATCH_ERROR,
                f"{failed}: {err.message or f'HTTP {err.status} {err.reason}'}",
            ) from None
        except Unreachable as err:
            raise Failed(
                api.ConditionReason.PATCH_ERROR, f"{failed}: API server unreachable ({err})"
            ) from None
        return new_hash, True, stale

    def _data(self, ss: api.SecretSync, files: dict[str, bytes]) -> tuple[str, dict[str, bytes]]:
        """The Secret's type and data from the mounted files (TLS keys split, as upstream)."""
        fetch_failed = "fetching secrets from the provider failed"
        for entry in ss.secret_object.get("data") or []:
            source = str(entry.get("sourcePath") or "").strip()
            if source not in files:
                raise Failed(
                    api.ConditionReason.FETCH_FAILED,
                    f"{fetch_failed}: file matching sourcePath {source} not found in the pod",
                )
        try:
            _, secret_type, data = secret_data(
                ss.as_secret_object(), files, f"{ss.where} spec.secretObject", SECRET_SYNC
            )
        except SyncError as err:
            # A certificate that cannot be split is the fetch's failure, as upstream; the rest are
            # what the API server would refuse (or a type kvmount never writes), caught before the write.
            reason = api.failure_reason(err.reason)
            if reason is api.ConditionReason.FETCH_FAILED:
                raise Failed(reason, f"{fetch_failed}: {err}") from None
            raise Failed(reason, f'failed to patch secret "{ss.name}": {err}') from None
        return secret_type, data

    def _get_class(self, ss: api.SecretSync) -> SecretProviderClassObject:
        try:
            doc = cast(
                SecretProviderClassObject,
                self.store.rest().get(path(f"{GROUP}/{VERSION}", CLASSES, ss.namespace, ss.class_name)),
            )
        except ApiError as err:
            detail = (
                f'SecretProviderClass.{GROUP} "{ss.class_name}" not found'
                if err.status == 404
                else err.message or f"HTTP {err.status} {err.reason}"
            )
            raise Failed(
                api.ConditionReason.CLASS_ERROR,
                f'failed to get SecretProviderClass "{ss.class_name}": {detail}',
            ) from None
        return doc

    def _mount(
        self, ss: api.SecretSync, provider: str, parameters: dict[str, str]
    ) -> tuple[dict[str, bytes], str]:
        """The mounted files, and the provider's note of stale content ("" if none)."""
        fetch_failed = "fetching secrets from the provider failed"
        try:
            tokens = self.store.tokens_for(
                ss.namespace, ss.service_account, [(a, TOKEN_SECONDS) for a in self.audiences]
            )
        except StoreError as err:
            raise Failed(api.ConditionReason.SYNC_ERROR, f"{fetch_failed}: {err}") from None
        attributes = {
            **parameters,
            POD_NAME: self.identity.pod_name,
            POD_UID: self.identity.pod_uid,
            POD_NAMESPACE: ss.namespace,
            SA_NAME: ss.service_account,
        }
        if self.audiences:
            attributes[SA_TOKENS] = tokens
        request = pb.MountRequest(
            attributes=json.dumps(attributes),
            secrets="{}",
            target_path="",
            permission=PERMISSION,
        )
        try:
            response, stale = self.providers.mount_noted(provider, request, self.mount_timeout)
        except ProviderError as err:
            # No such provider is the class's fault, as upstream says.
            unknown = err.reason in (ProviderReason.INVALID_PROVIDER, ProviderReason.NOT_FOUND)
            reason = api.ConditionReason.CLASS_ERROR if unknown else api.ConditionReason.PROVIDER_ERROR
            raise Failed(reason, f"{fetch_failed}: {_provider_message(err)}") from None
        return {f.path: f.contents for f in response.files}, stale

    def _may_write(self) -> None:
        if not self.leading():
            raise NotLeading()

    def _write_status(self, ss: api.SecretSync, status: dict[str, Any]) -> None:
        self._may_write()
        try:
            self.store.rest().patch(
                path(api.API_VERSION, api.PLURAL, ss.namespace, ss.name, "status"), {"status": status}
            )
        except ApiError as err:
            # The next sync writes it again; the Secret itself is already right.
            log.warning("cannot write status", extra={"secretsync": ss.where, "status": err.status})

    def _ref(self, ss: api.SecretSync) -> PodRef:
        return PodRef(ss.namespace, ss.name, ss.uid, api.KIND, api.API_VERSION)


def _provider_message(err: ProviderError) -> str:
    """A provider's failure as upstream shows it: Go's gRPC error text when the provider answered."""
    if not err.details:
        return str(err)
    code = "".join(part.capitalize() for part in err.code.name.split("_"))
    return f"rpc error: code = {code} desc = {err.details}"
