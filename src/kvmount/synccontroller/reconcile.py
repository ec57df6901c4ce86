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
from typing import Any

from kvmount.csi.attributes import POD_NAME, POD_NAMESPACE, POD_UID, SA_NAME, SA_TOKENS
from kvmount.csi.provider_client import ProviderClients, ProviderError
from kvmount.kube.api_store import KubeStore
from kvmount.kube.classes import CLASSES, GROUP, VERSION, parse_class
from kvmount.kube.errors import StoreError
from kvmount.kube.objects import SecretProviderClassObject
from kvmount.kube.podstatus import EventType, PodRef
from kvmount.proto import v1alpha1_pb2 as pb
from kvmount.secretsync.data import SECRET_SYNC
from kvmount.secretsync.errors import SyncError
from kvmount.secretsync.writer import Owner, SecretSync
from kvmount.synccontroller import api

log = logging.getLogger(__name__)

# The provider's default file mode, as the driver sends it (0644 as a JSON decimal).
PERMISSION = "420"
TOKEN_SECONDS = 3600


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
        self.writer = SecretSync(store.rest, SECRET_SYNC, sole_owner=True)
        # Checked right before every write (set by leader election).
        self.leading: Callable[[], bool] = lambda: True

    def _custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.store.api_client())

    def get(self, namespace: str, name: str) -> api.SecretSync | None:
        """The SecretSync as it is now, or None when it is gone."""
        from kubernetes.client.exceptions import ApiException

        try:
            doc = self._custom().get_namespaced_custom_object(
                api.GROUP, api.VERSION, namespace, api.PLURAL, name, _request_timeout=10
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return api.parse(doc)

    def reconcile(self, ss: api.SecretSync) -> bool:
        """Sync ``ss`` once and record the outcome in its status; True when it succeeded."""
        conditions = ss.conditions if len(ss.conditions) >= 2 else api.initial_conditions(ss.generation)
        kind = api.ConditionType.CREATED if not ss.sync_hash else api.ConditionType.UPDATED
        start = time.monotonic()
        try:
            new_hash, written = self._sync(ss)
        except Failed as err:
            log.warning(
                "sync failed", extra={"secretsync": ss.where, "reason": err.reason, "error": str(err)}
            )
            conditions = api.set_condition(conditions, kind, False, err.reason, str(err), ss.generation)
            self._write_status(ss, {"conditions": conditions})
            self.store.record_event(self._ref(ss), EventType.WARNING, err.reason, str(err))
            return False
        if kind == api.ConditionType.CREATED:
            conditions = api.set_condition(
                conditions,
                api.ConditionType.CREATED,
                True,
                api.ConditionReason.CREATE_SUCCESSFUL,
                "Secret created successfully.",
                ss.generation,
            )
        conditions = api.set_condition(
            conditions,
            api.ConditionType.UPDATED,
            True,
            api.ConditionReason.UP_TO_DATE,
            "Secret contains last observed values.",
            ss.generation,
        )
        status: dict[str, Any] = {"conditions": conditions}
        if written or new_hash != ss.sync_hash:
            status.update(syncHash=new_hash, lastSuccessfulSyncTime=api.now())
        if written:
            self.store.record_event(
                self._ref(ss),
                EventType.NORMAL,
                api.EventReason.SECRET_SYNCED,
                f"Secret {ss.namespace}/{ss.name} written",
            )
        if status.keys() != {"conditions"} or conditions != ss.conditions:
            self._write_status(ss, status)
        log.info(
            "synced",
            extra={"secretsync": ss.where, "written": written, "seconds": round(time.monotonic() - start, 3)},
        )
        return True

    def _sync(self, ss: api.SecretSync) -> tuple[str, bool]:
        """(sync hash, whether the Secret was written); raises Failed."""
        reserved = api.reserved_metadata(ss.secret_object)
        if reserved is not None:
            raise Failed(*reserved)
        spc_doc = self._get_class(ss)
        where = f"{ss.where}: SecretProviderClass {ss.namespace}/{ss.class_name}"
        try:
            spc = parse_class(spc_doc, where)
        except StoreError as err:
            raise Failed(api.ConditionReason.CLASS_ERROR, str(err)) from None
        files = self._mount(ss, spc.provider, spc.parameters, where)
        secret_object = ss.as_secret_object()
        owner = Owner(ss.name, ss.uid, api.API_VERSION, api.KIND)
        self._may_write()
        try:
            written = self.writer.sync_one(
                ss.namespace, secret_object, files, owner, f"{ss.where} spec.secretObject"
            )
        except SyncError as err:
            raise Failed(api.failure_reason(err.reason), str(err)) from None
        data = {k: files[v] for k, v in _sources(secret_object).items() if v in files}
        return api.sync_hash(data, spc_doc, ss), written

    def _get_class(self, ss: api.SecretSync) -> SecretProviderClassObject:
        from kubernetes.client.exceptions import ApiException

        try:
            doc: SecretProviderClassObject = self._custom().get_namespaced_custom_object(
                GROUP, VERSION, ss.namespace, CLASSES, ss.class_name, _request_timeout=10
            )
        except ApiException as err:
            detail = "not found" if err.status == 404 else f"cannot be read (HTTP {err.status})"
            raise Failed(
                api.ConditionReason.CLASS_ERROR,
                f"SecretProviderClass {ss.namespace}/{ss.class_name} {detail}: create it in the "
                f"SecretSync's namespace ({ss.namespace}) or fix spec.secretProviderClassName",
            ) from None
        return doc

    def _mount(
        self, ss: api.SecretSync, provider: str, parameters: dict[str, str], where: str
    ) -> dict[str, bytes]:
        try:
            tokens = self.store.tokens_for(
                ss.namespace, ss.service_account, [(a, TOKEN_SECONDS) for a in self.audiences]
            )
        except StoreError as err:
            raise Failed(
                api.ConditionReason.SYNC_ERROR, f"{ss.where}: spec.serviceAccountName: {err}"
            ) from None
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
            response = self.providers.mount(provider, request, self.mount_timeout)
        except ProviderError as err:
            raise Failed(api.ConditionReason.PROVIDER_ERROR, f"{where}: {err}") from None
        return {f.path: f.contents for f in response.files}

    def _may_write(self) -> None:
        if not self.leading():
            raise NotLeading()

    def _write_status(self, ss: api.SecretSync, status: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        self._may_write()
        try:
            self._custom().patch_namespaced_custom_object_status(
                api.GROUP,
                api.VERSION,
                ss.namespace,
                api.PLURAL,
                ss.name,
                {"status": status},
                _request_timeout=10,
            )
        except ApiException as err:
            # The next sync writes it again; the Secret itself is already right.
            log.warning("cannot write status", extra={"secretsync": ss.where, "status": err.status})

    def _ref(self, ss: api.SecretSync) -> PodRef:
        return PodRef(ss.namespace, ss.name, ss.uid, api.KIND, api.API_VERSION)


def _sources(secret_object: dict[str, Any]) -> dict[str, str]:
    """Secret key -> mounted file, from a checked ``secretObject``."""
    return {str(e["targetKey"]): str(e["sourcePath"]) for e in secret_object.get("data") or []}
