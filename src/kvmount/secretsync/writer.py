"""Kubernetes Secrets made from a mount's files (a SecretProviderClass's ``secretObjects``).

After the publisher has written a volume's files, ``SecretSync.sync`` creates
or updates one Secret per ``secretObjects`` entry. Its owners are upstream's:
the owners of each pod that uses it (a Deployment's ReplicaSet, a StatefulSet,
DaemonSet or Job), or the volume's SecretProviderClassPodStatus for a pod that
has none. So the Secret outlives a scale to zero, and the garbage collector
removes it with the last of its owners (``pod_owners``).

Differences from upstream, on purpose:
- every entry is checked before any Secret is written, and errors name the
  class, the entry and the field;
- a Secret the driver did not create (no managed label) is never modified
  (upstream overwrites it, kubernetes-sigs/secrets-store-csi-driver#499);
- ``kubernetes.io/tls`` keys ``tls.key`` / ``tls.crt`` are split out of PEM
  and of password-less PKCS#12 files alike;
- writes are resourceVersion-guarded and skipped when nothing changed.

No message ever carries a file's content.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from kvmount.base.locks import KeyedLocks
from kvmount.kube.rest import ApiError, RestClient, Unreachable, path
from kvmount.secretsync.data import DRIVER, Dialect, metadata, secret_data
from kvmount.secretsync.errors import SyncError, SyncReason, invalid, short

log = logging.getLogger(__name__)

OWNER_API_VERSION = "secrets-store.csi.x-k8s.io/v1"
OWNER_KIND = "SecretProviderClassPodStatus"
# A few tries when another writer (a pod on another node) updates the same Secret.
ATTEMPTS = 5
# A conflict with another node's writer is retried after a jittered wait, doubling from this.
CONFLICT_BACKOFF = 0.05
T = TypeVar("T")


@dataclass(frozen=True)
class Owner:
    """The object that owns the synced Secrets: the driver's SecretProviderClassPodStatus, or a SecretSync."""

    name: str
    uid: str
    api_version: str = OWNER_API_VERSION
    kind: str = OWNER_KIND

    def reference(self) -> dict[str, str]:
        return {"apiVersion": self.api_version, "kind": self.kind, "name": self.name, "uid": self.uid}


def pod_owners(pod: Mapping[str, Any] | None, status: Owner) -> tuple[Owner, ...]:
    """Upstream's owners of a pod's synced Secrets: the pod's own owners, each as
    the pod names it, or ``status`` (its SecretProviderClassPodStatus) for a pod
    that has none or could not be read."""
    refs = ((pod or {}).get("metadata") or {}).get("ownerReferences") or []
    owners = tuple(
        Owner(str(ref["name"]), str(ref["uid"]), str(ref["apiVersion"]), str(ref["kind"]))
        for ref in refs
        if isinstance(ref, Mapping) and all(ref.get(k) for k in ("name", "uid", "apiVersion", "kind"))
    )
    return owners or (status,)


@dataclass(frozen=True)
class _Desired:
    where: str
    name: str
    type: str
    data: dict[str, str]  # base64, as the API carries it
    labels: dict[str, str]
    annotations: dict[str, str]


def _api_error(err: ApiError, verb: str, what: str, writer: str) -> SyncError:
    if err.status in (401, 403):
        return SyncError(
            SyncReason.API_SERVER_FORBIDDEN,
            f"{what}: {writer} may not {verb} it (HTTP {err.status}); check {writer}'s RBAC "
            "for secrets (get, create, update) and the admission policies",
        )
    if err.status == 422:
        # The causes name fields; their messages are left out so that no value is ever echoed.
        try:
            causes = json.loads(err.body)["details"]["causes"]
            fields = ", ".join(f"{c.get('field', '?')} ({c.get('reason', '?')})" for c in causes)
        except (TypeError, ValueError, KeyError):
            fields = "see the API server's log"
        return invalid(f"{what}: the API server refused to {verb} it: {fields}")
    return SyncError(
        SyncReason.API_SERVER_UNAVAILABLE, f"{what}: {verb} failed with HTTP {err.status} {err.reason}"
    )


class SecretSync:
    """Creates and updates Secrets through the API server.

    ``dialect`` says how entries are spelled and which label marks a managed
    Secret; a managed Secret gains the owners beside its others (the driver's
    pods' owners, which share Secrets).
    """

    def __init__(self, rest: Callable[[], RestClient], dialect: Dialect = DRIVER) -> None:
        self._rest = rest
        self.dialect = dialect
        # Many volumes of a node may sync one Secret: their writes take turns here rather than
        # conflicting at the API server.
        self._locks = KeyedLocks()

    def sync(
        self,
        namespace: str,
        secret_objects: Sequence[Mapping[str, Any]],
        files: Mapping[str, bytes],
        owners: Sequence[Owner],
        class_name: str,
    ) -> list[str]:
        """Create or update every entry's Secret; returns the names synced. Raises SyncError.

        Each entry is checked before its Secret is written. As upstream's driver
        does, an entry that fails (invalid, naming no mounted file, a bad
        certificate, a second entry of one name) or whose Secret exists without
        the managed label is skipped and the others are still synced; then
        SyncError names every skipped entry (the reason is the first one's).
        """
        desired: list[_Desired] = []
        refused: list[SyncError] = []
        seen: dict[str, int] = {}
        for i, secret_object in enumerate(secret_objects):
            where = f"SecretProviderClass {namespace}/{class_name} secretObjects[{i}]"
            try:
                want = self._desired(secret_object, files, where)
            except SyncError as err:
                refused.append(err)
                continue
            if want.name in seen:
                refused.append(
                    invalid(
                        f"{where}.secretName {short(want.name)} is also secretObjects[{seen[want.name]}]'s: "
                        "merge the two entries"
                    )
                )
                continue
            seen[want.name] = i
            desired.append(want)

        synced: list[str] = []
        for want in desired:
            try:
                with self._locks.hold(f"{namespace}/{want.name}"):
                    self._sync_one(self._rest(), namespace, want, owners)
            except SyncError as err:
                # Only problems of this one Secret; anything else would fail the others too.
                if err.reason not in (
                    SyncReason.SECRET_NOT_MANAGED,
                    SyncReason.SECRET_TYPE_MISMATCH,
                    SyncReason.INVALID_SECRET_OBJECT,
                ):
                    raise
                refused.append(err)
            else:
                synced.append(want.name)
        if refused:
            raise SyncError(refused[0].reason, "; ".join(str(e) for e in refused))
        return synced

    def owners_of(self, namespace: str, pod_name: str, pod_uid: str, status: Owner) -> tuple[Owner, ...]:
        """``pod_owners`` of the pod as the API server has it now; the pod's ``status``
        alone if the pod is gone, was replaced (another uid) or cannot be read."""
        pod: dict[str, Any] | None = None
        try:
            pod = self._rest().get(path("v1", "pods", namespace, pod_name))
        except (ApiError, Unreachable) as err:
            # A pod gone (404) needs no word: its status is about to go too.
            if not isinstance(err, ApiError) or err.status != 404:
                log.warning(
                    "cannot read the pod for its owners; its SecretProviderClassPodStatus owns the Secret",
                    extra={"pod": f"{namespace}/{pod_name}", "error": str(err)},
                )
        if pod is not None and (pod.get("metadata") or {}).get("uid") != pod_uid:
            pod = None
        return pod_owners(pod, status)

    def _desired(self, secret_object: Mapping[str, Any], files: Mapping[str, bytes], where: str) -> _Desired:
        """One entry, checked, as the API will carry it; raises SyncError naming ``where``."""
        name, secret_type, data = secret_data(secret_object, files, where, self.dialect)
        labels, annotations = metadata(secret_object, where, self.dialect)
        encoded = {k: base64.b64encode(v).decode("ascii") for k, v in data.items()}
        return _Desired(where, name, secret_type, encoded, labels, annotations)

    def _call(
        self, verb: str, what: str, fn: Callable[..., T], *args: Any, passing: tuple[int, ...] = ()
    ) -> T:
        """``fn(*args)`` with API errors as SyncError, except statuses in ``passing`` (left as ApiError)."""
        try:
            return fn(*args)
        except ApiError as err:
            if err.status in passing:
                raise
            raise _api_error(err, verb, what, self.dialect.writer) from None
        except Unreachable as err:
            raise SyncError(
                SyncReason.API_SERVER_UNAVAILABLE, f"{what}: API server unreachable ({err}); will retry"
            ) from None

    def _sync_one(self, api: RestClient, namespace: str, want: _Desired, owners: Sequence[Owner]) -> bool:
        """Create or update one Secret; True if it was written."""
        owner = owners[0]  # the one named in messages
        what = f"Secret {namespace}/{want.name} ({want.where})"
        here = path("v1", "secrets", namespace, want.name)
        for attempt in range(ATTEMPTS):
            if attempt:
                # Another writer (another node) won the last round: let the writers spread out.
                time.sleep(random.uniform(0, CONFLICT_BACKOFF * 2**attempt))
            try:
                current: dict[str, Any] | None = self._call("get", what, api.get, here, passing=(404,))
            except ApiError:
                current = None
            if current is None:
                body = {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {
                        "name": want.name,
                        "namespace": namespace,
                        "labels": want.labels,
                        "annotations": want.annotations,
                        "ownerReferences": [o.reference() for o in owners],
                    },
                    "type": want.type,
                    "data": want.data,
                }
                collection = path("v1", "secrets", namespace)
                try:
                    self._call("create", what, api.create, collection, body, passing=(409,))
                    return True
                except ApiError:
                    continue  # created meanwhile by another writer: update it instead
            meta = current.setdefault("metadata", {})
            labels = dict(meta.get("labels") or {})
            present = list(meta.get("ownerReferences") or [])
            uids = {ref.get("uid") for ref in present}
            missing = [o.reference() for o in owners if o.uid not in uids]
            managed, value = self.dialect.managed_label, self.dialect.managed_value
            if labels.get(managed) != value:
                raise SyncError(
                    SyncReason.SECRET_NOT_MANAGED,
                    f"{what} exists and was not created by {self.dialect.writer} for this {owner.kind} "
                    f"(label {managed}={value!r}, owner {owner.kind} {owner.name}), so it is left "
                    "untouched: choose another name, or delete the Secret to let it be created",
                )
            if (current.get("type") or "Opaque") != want.type:
                raise SyncError(
                    SyncReason.SECRET_TYPE_MISMATCH,
                    f"{what} has type {current.get('type')} but the entry asks for {want.type}; a Secret's "
                    "type cannot change: delete the Secret and the driver recreates it on the next mount",
                )
            annotations = dict(meta.get("annotations") or {})
            new_labels = {**labels, **want.labels}
            new_annotations = {**annotations, **want.annotations}
            unchanged = (current.get("data") or {}) == want.data and (labels, annotations) == (
                new_labels,
                new_annotations,
            )
            if unchanged and not missing:
                return False
            current["data"] = want.data
            meta["labels"], meta["annotations"] = new_labels, new_annotations
            if missing:
                # Added, never replaced (as upstream): the garbage collector drops each deleted
                # owner's reference, and the Secret with the last one.
                meta["ownerReferences"] = [*present, *missing]
            update = current
            try:
                # resourceVersion from the read guards against overwriting a concurrent change.
                self._call("update", what, api.replace, here, update, passing=(404, 409))
                return True
            except ApiError:
                continue  # changed or deleted meanwhile: read again
        raise SyncError(
            SyncReason.API_SERVER_UNAVAILABLE, f"{what}: kept conflicting with concurrent updates; will retry"
        )
