"""The publish and unpublish flow of one volume.

publish: pod info -> SecretProviderClass -> provider socket -> tmpfs ->
provider Mount -> atomic write -> SecretProviderClassPodStatus -> volume state.
A failure on a volume that had no content unmounts it and removes what the
driver created, so kubelet's retry starts from nothing. Calls on one target
path (in its clean spelling) are serialised; calls on different paths run
concurrently. The target must be a real directory below the kubelet root
(volume/target.py), and unpublish removes only the driver's mounts and the
then empty directory: never a file the driver did not mount.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace

import grpc

from kvmount.base.locks import KeyedLocks
from kvmount.csi.provider_client import ProviderClients, ProviderError
from kvmount.driver import metrics
from kvmount.driver.events import EventReason
from kvmount.driver.republish import Republish
from kvmount.driver.request import (
    DEFAULT_TIMEOUT,
    PERMISSION,
    Pod,
    PublishError,
    PublishReason,
    VolumeRequest,
    check_request,
    class_error,
    mount_failure,
    pod_ref,
    provider_error,
    provider_payload,
    secrets_with_tokens,
    status_failure,
    store_error,
    target_error,
)
from kvmount.driver.volumes import VolumeRegistry, VolumeState
from kvmount.kube.classes import SecretProviderClass
from kvmount.kube.errors import StoreError
from kvmount.kube.podstatus import EventType, PodStatus
from kvmount.kube.store import Store
from kvmount.proto import v1alpha1_pb2 as pb
from kvmount.secretsync.errors import SyncError
from kvmount.secretsync.writer import Owner, SecretSync
from kvmount.volume import mounts
from kvmount.volume.atomic_writer import AtomicWriter, Payload, PayloadError
from kvmount.volume.target import KubeletRoot, Opened, TargetError

log = logging.getLogger(__name__)


def _has_content(target: str) -> bool:
    # Written by the atomic writer, or by an older provider that writes its own files.
    return bool(os.listdir(target))


@dataclass
class Outcome:
    """What one publish did: whether it fetched, whether the files changed, and the
    provider's note of stale content ("" if none)."""

    fetched: bool = False
    changed: bool = False
    stale: str = ""


class Publisher:
    def __init__(
        self,
        store: Store,
        providers: ProviderClients,
        registry: VolumeRegistry,
        node_id: str,
        tmpfs_size: int,
        rotation_interval: float | None = None,
        syncer: SecretSync | None = None,
        *,
        kubelet_root: KubeletRoot,
    ) -> None:
        self.store = store
        self.providers = providers
        self.registry = registry
        self.node_id = node_id
        self.tmpfs_size = tmpfs_size
        # kubelet's periodic NodePublishVolume (requiresRepublish) of a live volume: when it fetches.
        self.republish = Republish(rotation_interval)
        self.syncer = syncer
        self.kubelet_root = kubelet_root
        self._locks = KeyedLocks()
        # The last node-publish secret and tokens kubelet sent per target path, in memory only,
        # for rotations where the API cannot give them again (standalone mode).
        self._secrets: dict[str, dict[str, str]] = {}

    def last_secrets(self, target_path: str) -> dict[str, str] | None:
        """The secrets (tokens included) of the last publish of ``target_path`` by this process,
        None if it has published none there since it started."""
        held = self._secrets.get(target_path)
        return None if held is None else dict(held)

    def publish(self, req: VolumeRequest, deadline: float | None = None, refresh: bool = False) -> Outcome:
        """Publish ``req``; with ``refresh``, fetch and rewrite a live volume again (rotation)."""
        start = time.monotonic()
        label = [""]  # the metric's provider label (upstream's "" until the class names one)
        outcome = Outcome()
        try:
            req = replace(req, target_path=self._clean(req.target_path))
            checked = check_request(req)  # before anything is created on disk
            with self._locks.hold(req.target_path), self._open(req.target_path, create=not refresh) as target:
                if target is not None:  # None: a rotation of a volume unpublished meanwhile
                    self._publish(req, checked, target, deadline, refresh, label, outcome)
        except PublishError as err:
            metrics.publish_done(label[0], err.reason)
            log.error(
                "publish failed",
                extra={"target_path": req.target_path, "code": err.code.name, "error": str(err)},
            )
            pod = pod_ref(req.volume_context)
            if pod is not None and not refresh:
                self.store.record_event(pod, EventType.WARNING, EventReason.FAILED_TO_MOUNT, str(err))
            raise
        except Exception:
            metrics.publish_done(label[0], PublishReason.INTERNAL)
            raise
        metrics.publish_done(label[0], None)
        pod = pod_ref(req.volume_context)
        if outcome.stale and pod is not None and not refresh:  # a rotation keeps the pod's files as they were
            self.store.record_event(pod, EventType.WARNING, EventReason.STALE_CONTENT, outcome.stale)
        log.info(
            "published" if outcome.fetched else "already published",
            extra={
                "target_path": req.target_path,
                "changed": outcome.changed,
                "seconds": round(time.monotonic() - start, 3),
            },
        )
        return outcome

    def _clean(self, target_path: str) -> str:
        try:
            return self.kubelet_root.check(target_path)
        except TargetError as err:
            raise target_error(err) from None

    @contextmanager
    def _open(self, target_path: str, create: bool) -> Iterator[Opened | None]:
        """The checked target held open; errors in opening it (only) become PublishErrors."""
        with ExitStack() as stack:
            try:
                target = stack.enter_context(self.kubelet_root.open(target_path, create))
            except TargetError as err:
                raise target_error(err) from None
            except OSError as err:
                raise PublishError(
                    PublishReason.FAILED_TO_MOUNT, f"target_path {target_path}: {err.strerror}"
                ) from None
            yield target

    def _publish(
        self,
        req: VolumeRequest,
        checked: tuple[Pod, str, int | None],
        opened: Opened,
        deadline: float | None,
        refresh: bool,
        label: list[str],
        outcome: Outcome,
    ) -> None:
        pod, class_name, gid = checked
        target = req.target_path
        was_mounted = mounted = opened.is_mounted()
        if refresh and not was_mounted:
            return  # unpublished meanwhile: a rotation never brings a volume back
        keep_mount = False
        where = mount_failure(pod, class_name)
        try:
            # A live volume keeps its content whatever happens to a refresh of it.
            keep_mount = was_mounted and _has_content(target)
            previous = self.registry.load(target) if was_mounted else None
            if keep_mount and not refresh and not self.republish.fetches(req, previous):
                return  # kubelet's re-publish, not due or the reconciler's: free
            spc = self._get_class(pod.namespace, class_name)
            try:
                self.providers.socket_for(spc.provider)
            except ProviderError as err:
                raise provider_error(err, where) from None
            label[0] = spc.provider
            if not mounted:
                self._mount(opened)
                mounted = True
            objects, files, outcome.changed, outcome.stale = self._fetch_and_write(
                spc, req, gid, previous, deadline, where
            )
            outcome.fetched = True
            status = PodStatus(pod.name, pod.namespace, pod.uid, class_name, target, self.node_id, objects)
            try:
                status_uid = self.store.put_pod_status(status)
            except StoreError as err:
                raise store_error(err, status_failure(pod)) from None
            self._sync(spc, pod, status.name, status_uid, files)
            self.registry.save(
                VolumeState(
                    volume_id=req.volume_id,
                    target_path=target,
                    pod_name=pod.name,
                    pod_namespace=pod.namespace,
                    pod_uid=pod.uid,
                    service_account=pod.service_account,
                    class_name=class_name,
                    provider=spc.provider,
                    volume_context=dict(req.volume_context),
                    volume_mount_group=req.volume_mount_group,
                    object_versions=objects,
                    refreshed_at=time.time(),
                    refresh_token=previous.refresh_token if previous else "",
                    restart_pending=previous.restart_pending if previous else "",
                    rotation_interval=spc.rotation_interval,
                )
            )
            self._secrets[target] = secrets_with_tokens(req)
        except BaseException:
            if not keep_mount:
                self._undo(opened, mounted)
            raise

    def _sync(
        self, spc: SecretProviderClass, pod: Pod, status_name: str, status_uid: str, files: list[Payload]
    ) -> None:
        """Kubernetes Secrets from the files; a failure is reported (event, metric), not raised:
        the pod's files are good, and the next rotation tries the sync again."""
        if not spc.secret_objects:
            return
        if self.syncer is None or not status_uid:
            log.warning(
                "secretObjects ignored: Secret sync needs the Kubernetes API", extra={"class": spc.name}
            )
            return
        start = time.monotonic()
        owners = self.syncer.owners_of(pod.namespace, pod.name, pod.uid, Owner(status_name, status_uid))
        try:
            self.syncer.sync(
                pod.namespace, spc.secret_objects, {f.path: f.contents for f in files}, owners, spc.name
            )
        except SyncError as err:
            metrics.sync_done(spc.provider, time.monotonic() - start, err.reason)
            log.warning(
                "secret sync failed", extra={"class": spc.name, "reason": err.reason, "error": str(err)}
            )
            self.store.record_event(pod.ref, EventType.WARNING, EventReason.FAILED_TO_CREATE_SECRET, str(err))
            return
        metrics.sync_done(spc.provider, time.monotonic() - start, None)

    def _mount(self, target: Opened) -> None:
        try:
            target.mount_tmpfs(self.tmpfs_size)
        except OSError as err:
            raise PublishError(
                PublishReason.FAILED_TO_MOUNT,
                f"cannot mount tmpfs at {target.path}: {err.strerror}",
            ) from None

    def _get_class(self, namespace: str, name: str) -> SecretProviderClass:
        try:
            return self.store.get_class(namespace, name)
        except StoreError as err:
            raise class_error(err, namespace, name) from None

    def _fetch_and_write(
        self,
        spc: SecretProviderClass,
        req: VolumeRequest,
        gid: int | None,
        previous: VolumeState | None,
        deadline: float | None,
        where: str,
    ) -> tuple[list[tuple[str, str]], list[Payload], bool, str]:
        """Fetch and write; returns (object versions, files, whether the files changed, stale note)."""
        attributes, secrets = provider_payload(spc, req)
        request = pb.MountRequest(
            attributes=json.dumps(attributes),
            # Go marshals kubelet's empty secrets map as null; providers expect the same.
            secrets=json.dumps(secrets) if secrets else "null",
            target_path=req.target_path,
            permission=PERMISSION,
            current_object_version=[
                pb.ObjectVersion(id=i, version=v) for i, v in (previous.object_versions if previous else [])
            ],
        )
        timeout = DEFAULT_TIMEOUT if deadline is None else max(1.0, deadline - time.monotonic() - 1.0)
        try:
            response, stale = self.providers.mount_noted(spc.provider, request, timeout)
        except ProviderError as err:
            raise provider_error(err, where) from None
        files = [Payload(f.path, f.mode, f.contents) for f in response.files]
        # No files: the provider wrote into the target path itself (older providers).
        changed = True
        if files:
            try:
                changed = AtomicWriter(req.target_path, gid).write(files)
            except PayloadError as err:
                raise PublishError(
                    PublishReason.INVALID_PROVIDER_FILES,
                    f"{where}: provider {spc.provider!r} returned an unusable file list: {err}",
                ) from None
            except OSError as err:
                code = (
                    grpc.StatusCode.RESOURCE_EXHAUSTED
                    if err.errno == errno.ENOSPC
                    else grpc.StatusCode.INTERNAL
                )
                raise PublishError(
                    PublishReason.FILE_WRITE_ERROR,
                    f"{where}: cannot write the provider's files into {req.target_path}: {err.strerror}",
                    code,
                ) from None
        return [(o.id, o.version) for o in response.object_version], files, changed, stale

    def _undo(self, target: Opened, mounted: bool) -> None:
        try:
            if mounted:
                target.unmount()
            if target.created:
                target.rmdir()
        except OSError as err:
            log.error(
                "cleanup after a failed publish failed", extra={"target_path": target.path, "error": str(err)}
            )

    def unpublish(self, volume_id: str, target_path: str) -> None:
        """Unmount and remove ``target_path``; succeeds when it is already gone."""
        try:
            target_path = self._clean(target_path)
            with self._locks.hold(target_path), self._open(target_path, create=False) as target:
                self._unpublish(target_path, target)
        except PublishError as err:
            metrics.unpublish_done(False)
            log.warning("unpublish failed", extra={"target_path": target_path, "error": str(err)})
            raise
        metrics.unpublish_done(True)
        log.info("unpublished", extra={"volume_id": volume_id, "target_path": target_path})

    def _unpublish(self, target: str, opened: Opened | None) -> None:
        state = self.registry.load(target)
        try:
            if opened is not None:
                # A path mounted more than once (a crash between two publishes) needs one unmount each.
                for _ in range(16):
                    if not opened.unmount():
                        break
                opened.rmdir()
        except OSError as err:
            if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                # Not mounted, yet files in it: not the driver's to delete (upstream also refuses).
                raise PublishError(
                    PublishReason.INTERNAL,
                    f"target_path {target} is not mounted and is not empty: kvmount removes only its "
                    "own tmpfs and the empty directory; the files there are not its own, remove them by hand",
                    grpc.StatusCode.FAILED_PRECONDITION,
                ) from None
            code = grpc.StatusCode.UNAVAILABLE if err.errno == errno.EBUSY else grpc.StatusCode.INTERNAL
            raise PublishError(
                PublishReason.INTERNAL, f"cannot remove target_path {target}: {err.strerror}", code
            ) from None
        self.registry.remove(target)
        self._secrets.pop(target, None)
        if state is not None:
            status_name = f"{state.pod_name}-{state.pod_namespace}-{state.class_name}"
            try:
                self.store.delete_pod_status(state.pod_namespace, status_name)
            except (StoreError, OSError) as err:
                log.warning("cannot delete pod status", extra={"name": status_name, "error": str(err)})

    def served_volumes(self) -> list[VolumeState]:
        """The volumes still mounted, after dropping the state of any that are not (e.g. after a reboot)."""
        live = []
        for state in self.registry.all():
            if mounts.is_mounted(state.target_path):
                live.append(state)
            else:
                log.info("forgetting unmounted volume", extra={"target_path": state.target_path})
                self.registry.remove(state.target_path)
        return live
