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
- writes are resourceVersion-guarded and skipped when nothing changed, judged
  against the Secret as this process last saw it (``seen.py``), so a volume
  whose Secret already matches costs no request at all; the volumes of a node
  that share a Secret take turns, and the one writing adds the owners the
  others wait to add, in one update.

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
from kvmount.kube.errors import StoreError
from kvmount.kube.rest import ApiError, RestClient, Unreachable, path
from kvmount.secretsync.data import DRIVER, Dialect, metadata, secret_data
from kvmount.secretsync.errors import SyncError, SyncReason, invalid, short
from kvmount.secretsync.seen import PendingOwners, Seen, SeenSecrets, digest

log = logging.getLogger(__name__)

OWNER_API_VERSION = "secrets-store.csi.x-k8s.io/v1"
OWNER_KIND = "SecretProviderClassPodStatus"
# Tries when other writers (pods on other nodes) update the same Secret: with 20 nodes adding
# their owners at once, 5 left one volume of 200 with a conflict it reported (bench/api_load.py);
# the jittered waits of 8 add up to 12.7 s at the most, well inside a publish's time.
ATTEMPTS = 8
# A conflict with another node's writer is retried after a jittered wait, doubling from this.
CONFLICT_BACKOFF = 0.05
T = TypeVar("T")
# Reads a pod (namespace, name); None when it does not exist. Raises ApiError, Unreachable, StoreError.
PodReader = Callable[[str, str], "Mapping[str, Any] | None"]


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

    def __init__(
        self, rest: Callable[[], RestClient], dialect: Dialect = DRIVER, pods: PodReader | None = None
    ) -> None:
        self._rest = rest
        self.dialect = dialect
        # The driver reads pods from its watch-fed cache; without one, from the API server.
        self._pods = pods or self._read_pod
        # Many volumes of a node may sync one Secret: their writes take turns here rather than
        # conflicting at the API server.
        self._locks = KeyedLocks()
        # The Secrets as last seen, and the owners queued volumes need added: with both, a
        # volume whose Secret already matches costs no request, and queued owners cost one write.
        self._seen = SeenSecrets()
        self._pending = PendingOwners()

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
                key = f"{namespace}/{want.name}"
                refs = [o.reference() for o in owners]
                with self._pending.waiting(key, refs), self._locks.hold(key):
                    self._sync_one(self._rest(), namespace, want, owners[0], refs)
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

    def waiting(self, namespace: str, name: str) -> int:
        """How many owners volumes have queued for the Secret ``namespace/name`` (tests, debugging)."""
        return len(self._pending.of(f"{namespace}/{name}"))

    def owners_of(self, namespace: str, pod_name: str, pod_uid: str, status: Owner) -> tuple[Owner, ...]:
        """``pod_owners`` of the pod as the API server has it now; the pod's ``status``
        alone if the pod is gone, was replaced (another uid) or cannot be read."""
        pod: Mapping[str, Any] | None = None
        try:
            pod = self._pods(namespace, pod_name)
        except (ApiError, Unreachable, StoreError) as err:
            # A pod gone needs no word (the reader answers None): its status is about to go too.
            log.warning(
                "cannot read the pod for its owners; its SecretProviderClassPodStatus owns the Secret",
                extra={"pod": f"{namespace}/{pod_name}", "error": str(err)},
            )
        if pod is not None and (pod.get("metadata") or {}).get("uid") != pod_uid:
            pod = None
        return pod_owners(pod, status)

    def _read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._rest().get(path("v1", "pods", namespace, name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

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

    def _sync_one(
        self, api: RestClient, namespace: str, want: _Desired, owner: Owner, own: list[dict[str, str]]
    ) -> bool:
        """Create or update one Secret, with the owner references ``own`` and those other volumes
        of this process have pending on it; True if it was written. ``owner`` is named in
        messages. Starts from the copy last seen, so a Secret that already matches costs no
        request."""
        what = f"Secret {namespace}/{want.name} ({want.where})"
        key, here = f"{namespace}/{want.name}", path("v1", "secrets", namespace, want.name)
        seen = self._seen.get(key)
        for attempt in range(ATTEMPTS):
            if attempt:
                # Another writer (another node) won the last round: let the writers spread out.
                time.sleep(random.uniform(0, CONFLICT_BACKOFF * 2**attempt))
            if seen is None:
                try:
                    current = self._call("get", what, api.get, here, passing=(404,))
                except ApiError:
                    current = None
                if current is None:
                    if self._create(api, namespace, want, self._refs(key, own), what, key):
                        return True
                    continue  # created meanwhile by another writer: read it and update it
                seen = self._seen.put(key, current)
            try:
                update = self._update_of(seen, want, self._refs(key, own), what, owner)
            except SyncError:
                self._seen.drop(key)  # read it again next time: it may be fixed by then
                raise
            if update is None:
                return False
            try:
                # The resourceVersion seen guards against overwriting a concurrent change.
                written = self._call("update", what, api.replace, here, update, passing=(404, 409))
            except ApiError:
                seen = None  # changed or deleted meanwhile: read again and compare
                self._seen.drop(key)
                continue
            self._seen.put(key, written)
            return True
        raise SyncError(
            SyncReason.API_SERVER_UNAVAILABLE, f"{what}: kept conflicting with concurrent updates; will retry"
        )

    def _refs(self, key: str, own: list[dict[str, str]]) -> list[dict[str, str]]:
        """The owners to write: the caller's, then those queued by volumes waiting for the Secret
        (taken at the last moment, so the write carries every owner queued by then)."""
        return list({r["uid"]: r for r in [*own, *self._pending.of(key)]}.values())

    def _create(
        self, api: RestClient, namespace: str, want: _Desired, refs: list[dict[str, str]], what: str, key: str
    ) -> bool:
        """Create the Secret; False if another writer created it first."""
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": want.name,
                "namespace": namespace,
                "labels": want.labels,
                "annotations": want.annotations,
                "ownerReferences": refs,
            },
            "type": want.type,
            "data": want.data,
        }
        try:
            created = self._call(
                "create", what, api.create, path("v1", "secrets", namespace), body, passing=(409,)
            )
        except ApiError:
            return False
        self._seen.put(key, created)
        return True

    def _update_of(
        self, seen: Seen, want: _Desired, refs: list[dict[str, str]], what: str, owner: Owner
    ) -> dict[str, Any] | None:
        """The Secret to write over ``seen`` (its resourceVersion included); None if it already
        is what ``want`` and ``refs`` ask. Raises SyncError for a Secret that is not the writer's
        to change."""
        current = seen.secret
        meta = current.setdefault("metadata", {})
        labels = dict(meta.get("labels") or {})
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
        present = list(meta.get("ownerReferences") or [])
        uids = {ref.get("uid") for ref in present}
        missing = [ref for ref in refs if ref["uid"] not in uids]
        annotations = dict(meta.get("annotations") or {})
        new_labels = {**labels, **want.labels}
        new_annotations = {**annotations, **want.annotations}
        if (
            seen.data == digest(want.data)
            and (labels, annotations) == (new_labels, new_annotations)
            and not missing
        ):
            return None
        current["data"] = want.data
        meta["labels"], meta["annotations"] = new_labels, new_annotations
        if missing:
            # Added, never replaced (as upstream): the garbage collector drops each deleted
            # owner's reference, and the Secret with the last one.
            meta["ownerReferences"] = [*present, *missing]
        return current
