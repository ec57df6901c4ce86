"""Rotation: fetch the content of served volumes again, and rewrite what changed.

Three triggers, one fetch (``Publisher.publish(refresh=True)``: current object
versions to the provider, an atomic rewrite only when content changed, the pod
status and synced Secrets updated, the last good content kept on failure):

* the reconciler: each volume this driver serves on a schedule of its own, every
  ``--rotation-poll-interval`` or its class's ``kvmount.io/rotation-poll-interval`` (not below
  ``--min-rotation-poll-interval``);
* kubelet's periodic NodePublishVolume of a live volume, when the CSIDriver has
  ``requiresRepublish: true``, for the volumes the reconciler may not serve (driver/republish.py:
  a volume has one rotation path, and a re-publish of the reconciler's volumes is free);
* on demand, for one pod: a new value of its ``secrets-store.csi.k8s.io/refresh``
  annotation (``kubectl annotate pod web secrets-store.csi.k8s.io/refresh=$(date +%s) --overwrite``).

After a restart the driver knows its volumes from its state directory and, should
that be lost, from this node's SecretProviderClassPodStatus objects, the pods'
volume specs and the mounts on disk. Credentials for a rotation come from the
API as kubelet would send them (the pod's nodePublishSecretRef, service account
tokens by TokenRequest), or in standalone mode from the last publish, in memory.

Which of those the driver's ServiceAccount may get is asked once at start and
logged once (driver/rotation_path.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from kvmount.csi.attributes import EPHEMERAL, POD_NAME, POD_NAMESPACE, POD_UID, SA_NAME, SA_TOKENS
from kvmount.csi.kubelet import volume_id
from kvmount.driver import metrics
from kvmount.driver.events import EventReason
from kvmount.driver.publish import Publisher
from kvmount.driver.request import (
    CLASS_KEY,
    PublishError,
    VolumeRequest,
)
from kvmount.driver.restart import Restarter
from kvmount.driver.rotation_path import Grants, RotationPath, choose_path
from kvmount.driver.volumes import VolumeState
from kvmount.kube.api_store import KubeStore
from kvmount.kube.errors import StoreError
from kvmount.kube.objects import Pod, PodStatusObject, Volume
from kvmount.kube.podstatus import EventType, PodRef
from kvmount.volume import mounts

log = logging.getLogger(__name__)

REFRESH_ANNOTATION = "secrets-store.csi.k8s.io/refresh"
# One volume's rotation gets as long as kubelet gives a publish.
ROTATION_TIMEOUT = 120.0
WATCH_RETRY_SECONDS = 5.0


class _LeftToKubelet(Exception):
    """A volume whose credentials the driver may not get: not the reconciler's to rotate."""


def pod_volume(pod: Pod, target_path: str) -> Volume | None:
    """The pod's csi volume published at ``target_path`` (.../volumes/kubernetes.io~csi/<name>/mount)."""
    name = os.path.basename(os.path.dirname(target_path.rstrip("/")))
    for volume in pod.get("spec", {}).get("volumes", []):
        if volume.get("name") == name and "csi" in volume:
            return volume
    return None


class Rotator:
    """Rotation for the volumes of ``publisher``; ``api`` is None in standalone mode."""

    def __init__(
        self,
        publisher: Publisher,
        api: KubeStore | None,
        node_id: str,
        interval: float,
        workers: int = 4,
        restarter: Restarter | None = None,
        min_interval: float = 1.0,
    ) -> None:
        self.publisher = publisher
        self.api = api
        self.node_id = node_id
        self.interval = interval
        self.min_interval = min_interval
        self.workers = workers
        self.restarter = restarter
        # When each served volume (by target path) is next due, time.monotonic().
        self._due: dict[str, float] = {}
        self._tick = min(interval, min_interval)
        self.grants = Grants()
        # Served volumes whose credentials the reconciler found it may not get: kubelet's to rotate.
        self._left_to_kubelet: set[str] = set()

    # ------------------------------------------------------------ served volumes

    def recover(self) -> list[VolumeState]:
        """The served volumes: the state directory's, plus any of this node's pod statuses whose
        target is still mounted but whose state was lost (a wiped state directory)."""
        known = {s.target_path: s for s in self.publisher.served_volumes()}
        if self.api is not None:
            self._recover_from_statuses(self.api, known)
        log.info("serving", extra={"volumes": len(known)})
        return list(known.values())

    def _recover_from_statuses(self, api: KubeStore, known: dict[str, VolumeState]) -> None:
        try:
            statuses = api.node_pod_statuses(self.node_id)
        except StoreError as err:
            log.warning("cannot list this node's pod statuses", extra={"error": str(err)})
            return
        for doc in statuses:
            target = doc.get("status", {}).get("targetPath", "")
            if target and target not in known and mounts.is_mounted(target):
                try:
                    state = self._from_status(api, doc, target)
                except StoreError as err:
                    log.warning("cannot recover volume", extra={"target_path": target, "error": str(err)})
                    continue
                if state is not None:
                    self.publisher.registry.save(state)
                    known[target] = state
                    log.info("recovered volume from its pod status", extra={"target_path": target})

    @staticmethod
    def _from_status(api: KubeStore, doc: PodStatusObject, target: str) -> VolumeState | None:
        status, namespace = doc["status"], doc["metadata"]["namespace"]
        pod = api.get_pod(namespace, status.get("podName", ""))
        volume = pod_volume(pod, target) if pod is not None else None
        if pod is None or volume is None:
            return None
        meta = pod["metadata"]
        class_name = status.get("secretProviderClassName", "")
        spc = api.get_class(namespace, class_name)
        account = pod.get("spec", {}).get("serviceAccountName") or "default"
        context = {
            **volume["csi"].get("volumeAttributes", {}),
            POD_NAME: meta["name"],
            POD_NAMESPACE: namespace,
            POD_UID: meta["uid"],
            SA_NAME: account,
            EPHEMERAL: "true",
        }
        context.setdefault(CLASS_KEY, class_name)
        return VolumeState(
            volume_id=volume_id(meta["uid"], volume["name"]),
            target_path=target,
            pod_name=meta["name"],
            pod_namespace=namespace,
            pod_uid=meta["uid"],
            service_account=account,
            class_name=class_name,
            provider=spc.provider,
            volume_context=context,
            object_versions=[(str(o.get("id")), str(o.get("version"))) for o in status.get("objects", [])],
        )

    # ------------------------------------------------------------ one volume

    def _request(self, state: VolumeState) -> VolumeRequest | None:
        """The publish request kubelet would send now, or None when the pod is gone."""
        if self.api is None:
            secrets = self.publisher.last_secrets(state.target_path) or {}
        else:
            pod = self.api.get_pod(state.pod_namespace, state.pod_name)
            if pod is None or pod["metadata"].get("uid") != state.pod_uid:
                return None
            secrets = {}
            volume = pod_volume(pod, state.target_path) or {}
            secret_name = volume.get("csi", {}).get("nodePublishSecretRef", {}).get("name")
            if secret_name:
                if not self.grants.secrets:
                    raise _LeftToKubelet
                secrets = self.api.node_publish_secret(state.pod_namespace, secret_name)
            if not self.grants.tokens and (self.api.csidriver() or {}).get("tokenRequests"):
                raise _LeftToKubelet
            tokens = self.api.service_account_tokens(pod)
            if tokens:
                secrets[SA_TOKENS] = tokens
        return VolumeRequest(
            volume_id=state.volume_id,
            target_path=state.target_path,
            volume_context=state.volume_context,
            secrets=secrets,
            volume_mount_group=state.volume_mount_group,
        )

    def rotate(self, state: VolumeState) -> None:
        """Fetch one volume's content again; failures are reported (metric, pod event), never raised."""
        start = time.monotonic()
        pod = PodRef(state.pod_namespace, state.pod_name, state.pod_uid)
        where = f"SecretProviderClass {state.pod_namespace}/{state.class_name}"
        try:
            request = self._request(state)
            self._left_to_kubelet.discard(state.target_path)
            if request is None:
                log.info("pod gone; rotation skipped", extra={"target_path": state.target_path})
                return
        except _LeftToKubelet:
            log.debug("rotation left to kubelet's re-publish", extra={"target_path": state.target_path})
            self._left_to_kubelet.add(state.target_path)
            return
        except (PublishError, StoreError) as err:
            self._failed(state, pod, where, start, err)
            return
        try:
            outcome = self.publisher.publish(request, time.monotonic() + ROTATION_TIMEOUT, refresh=True)
        except (PublishError, StoreError) as err:
            self._failed(state, pod, where, start, err)
            return
        metrics.rotation_done(state.provider, time.monotonic() - start, outcome.changed)
        if outcome.changed:
            self.publisher.store.record_event(
                pod, EventType.NORMAL, EventReason.MOUNT_ROTATION_COMPLETE, f"{where}: content rotated"
            )
        if self.restarter is not None:
            if outcome.changed:
                self.restarter.changed(state.target_path)
            self.restarter.settle(state.target_path)

    def _failed(
        self, state: VolumeState, pod: PodRef, where: str, start: float, err: PublishError | StoreError
    ) -> None:
        metrics.rotation_done(state.provider, time.monotonic() - start, None, err.reason)
        log.warning("rotation failed", extra={"target_path": state.target_path, "error": str(err)})
        message = f"{where}: rotation failed, the previous content is kept: {err}"
        self.publisher.store.record_event(pod, EventType.WARNING, EventReason.MOUNT_ROTATION_FAILED, message)

    def choose_path(self, api: KubeStore, rotating: bool = True) -> RotationPath:
        """Ask once what the reconciler may fetch, log the rotation path that leaves, and keep it."""
        path, self.grants = choose_path(api, rotating)
        return path

    def reconciles(self, req: VolumeRequest) -> bool:
        """Whether the reconciler rotates the volume of ``req`` (so kubelet's re-publish of it
        need not): its credentials are ones the reconciler may get. From memory alone."""
        if self.api is None:  # standalone: the credentials of the last publish, in memory
            return self.publisher.last_secrets(req.target_path) is not None
        return self.grants.cover(req) and req.target_path not in self._left_to_kubelet

    # ------------------------------------------------------------ triggers

    def round(self) -> None:
        """One reconciler pass over every served volume, a few at a time."""
        with ThreadPoolExecutor(self.workers, thread_name_prefix="rotate") as pool:
            list(pool.map(self.rotate, self.publisher.served_volumes()))

    def period(self, state: VolumeState) -> float:
        """A volume's rotation period: its class's, not below the driver's floor, else the driver's."""
        if state.rotation_interval is None:
            return self.interval
        return max(state.rotation_interval, self.min_interval)

    def due_round(self) -> float:
        """Rotate the volumes whose time has come; the seconds until one may be due again. A volume
        first seen is due one period after its last fetch; the wait is at most the shortest period
        there may be, so that a new volume is seen in time."""
        now, wall = time.monotonic(), time.time()

        def first(state: VolumeState) -> float:
            return now + self.period(state) - max(0.0, wall - state.refreshed_at)

        served = self.publisher.served_volumes()
        self._due = {s.target_path: self._due.get(s.target_path) or first(s) for s in served}
        self._left_to_kubelet &= self._due.keys()
        due = [s for s in served if self._due[s.target_path] <= now]
        for state in due:
            self._due[state.target_path] = now + self.period(state)
        if due:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="rotate") as pool:
                list(pool.map(self.rotate, due))
        soonest = min(self._due.values(), default=now + self.interval)
        return max(0.0, min(soonest - time.monotonic(), self._tick))

    def on_pod(self, uid: str, annotations: dict[str, str]) -> None:
        """Refresh the pod's volumes when its refresh annotation has a value not acted on yet."""
        token = annotations.get(REFRESH_ANNOTATION, "")
        if not token:
            return
        for state in self.publisher.registry.all():
            if state.pod_uid == uid and state.refresh_token != token:
                state.refresh_token = token
                self.publisher.registry.save(state)
                log.info("refresh requested", extra={"target_path": state.target_path})
                self.rotate(state)

    def start(self, stop: threading.Event, periodic: bool) -> threading.Thread:
        """In the background (CSI is served meanwhile, API server or not): recover the served
        volumes, then watch for refresh annotations (when there is an API) and run the
        reconciler (if ``periodic``) until ``stop`` is set."""
        thread = threading.Thread(target=self._run, args=(stop, periodic), name="rotation", daemon=True)
        thread.start()
        return thread

    def _run(self, stop: threading.Event, periodic: bool) -> None:
        self.recover()
        if self.api is not None:
            api = self.api
            self.choose_path(api, periodic)  # the refresh annotation rotates through the same path
            if self.grants.watch_secrets:
                api.start_secret_watch(stop)
            threading.Thread(target=self._watch, args=(api, stop), name="refresh-watch", daemon=True).start()
        if periodic:  # the reconciler's volumes are its alone from now on
            self.publisher.republish.hand_to(self.reconciles)
        wait = self._tick
        while periodic and not stop.wait(wait):
            try:
                wait = self.due_round()
            except Exception as err:  # a bug must not end rotation for every volume
                log.error("rotation round failed", extra={"error_type": type(err).__name__})

    def _watch(self, api: KubeStore, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                for uid, annotations in api.watch_node_pods(self.node_id):
                    if stop.is_set():
                        return
                    self.on_pod(uid, annotations)
            except Exception as err:  # the API server went away: watch again later
                log.warning("pod watch ended", extra={"error": str(err)[:200]})
                stop.wait(WATCH_RETRY_SECONDS)
