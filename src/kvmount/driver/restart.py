"""Restart on rotation: roll out the workload of a pod whose mounted content changed, once per change.

Opt-in: the annotation ``kvmount.io/restart-on-rotation: "true"`` on the
Deployment, StatefulSet or DaemonSet, or on the SecretProviderClass (every
workload using it), and ``--enable-workload-restart`` on the driver.

When a rotation changes a volume's files, the volume is marked with a value
derived from its class and the new object versions (kept in the volume state,
so a driver restart does not lose it). The workload's pod template then gets
that value as an annotation: a rollout, with the workload's own
maxUnavailable / maxSurge. Every node that sees the same change computes the
same value, so the first patch rolls out and the others find it already
there; the patch carries the workload's resourceVersion, so two nodes racing
cannot both roll it out. The workload's ``kvmount.io/last-restart`` annotation
spaces rollouts at least ``--workload-restart-min-interval`` apart: a change
within that time waits, and the latest value is rolled out when it ends.
Only a workload that really owns the pod (driver/owner.py: the owner chain
resolves, uids and selectors agree) and whose own pod template mounts the
rotated class is restarted: a pod's owner references are its creator's word.
Bare pods, Jobs and workloads failing those checks are never touched; a
RestartSkipped event on the pod says why.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, cast

from kvmount.driver import owner
from kvmount.driver.events import EventReason
from kvmount.driver.volumes import VolumeRegistry, VolumeState
from kvmount.kube.api_store import KubeStore
from kvmount.kube.classes import CLASSES, GROUP, VERSION
from kvmount.kube.objects import SecretProviderClassObject
from kvmount.kube.podstatus import EventType, PodRef
from kvmount.kube.rest import ApiError, Patch, path

log = logging.getLogger(__name__)

OPT_IN = "kvmount.io/restart-on-rotation"
ROLLED_TO = "kvmount.io/rotated-versions"
LAST_RESTART = "kvmount.io/last-restart"


class Kind(StrEnum):
    """The apps/v1 owners through which a pod's workload is found."""

    REPLICA_SET = "ReplicaSet"
    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"
    DAEMON_SET = "DaemonSet"


_RESOURCES: dict[str, str] = {
    Kind.REPLICA_SET: "replicasets",
    Kind.DEPLOYMENT: "deployments",
    Kind.STATEFUL_SET: "statefulsets",
    Kind.DAEMON_SET: "daemonsets",
}


def rollout_value(state: VolumeState) -> str:
    """The same on every node for the same class and object versions."""
    material = json.dumps([state.pod_namespace, state.class_name, sorted(state.object_versions)])
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _parse_time(value: str) -> datetime.datetime | None:
    try:
        return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


class Restarter:
    def __init__(self, api: KubeStore, registry: VolumeRegistry, min_interval: float) -> None:
        self.api = api
        self.registry = registry
        self.min_interval = min_interval

    def changed(self, target_path: str) -> None:
        """A rotation changed this volume's files: a rollout is due."""
        state = self.registry.load(target_path)
        if state is not None:
            state.restart_pending = rollout_value(state)
            self.registry.save(state)

    def settle(self, target_path: str) -> None:
        """Roll out the workload if a rollout is due and allowed; called after every rotation."""
        state = self.registry.load(target_path)
        if state is None or not state.restart_pending:
            return
        try:
            done = self._settle(state)
        except Exception as err:  # an API failure: the next rotation round tries again
            log.warning(
                "workload restart failed", extra={"target_path": target_path, "error": type(err).__name__}
            )
            return
        if done:
            state.restart_pending = ""
            self.registry.save(state)

    def _settle(self, state: VolumeState) -> bool:
        """True when nothing is left to do for this change."""
        pod = self.api.get_pod(state.pod_namespace, state.pod_name)
        if pod is None or pod["metadata"].get("uid") != state.pod_uid:
            return True
        ref = PodRef(state.pod_namespace, state.pod_name, state.pod_uid)
        try:
            claimed = owner.claim(self._read, pod)
        except ApiError as err:
            if err.status not in (401, 403):
                raise
            # Without the feature's RBAC the workload cannot even be read; say so where it was asked for.
            if self._opted_in(state, None):
                self._forbidden(ref, "the workload of this pod")
            else:
                log.warning("cannot read the pod's workload (RBAC)", extra={"pod": state.pod_name})
            return True
        if not self._opted_in(state, claimed):
            return True
        if claimed is None:
            self._skipped(
                ref,
                "no Deployment, StatefulSet or DaemonSet owns this pod (bare pods and Jobs are never "
                "restarted): restart it yourself to read them anew",
            )
            return True
        # The pod's owner references are the pod creator's word: restart only a workload that
        # really owns the pod and whose own pods mount the class (driver/owner.py).
        if claimed.problem:
            self._skipped(ref, f"{claimed.kind} {claimed.name} is not restarted: {claimed.problem}")
            return True
        if not owner.mounts_class(claimed.doc, self.api.driver_name, state.class_name):
            self._skipped(
                ref,
                f"{claimed.kind} {claimed.name} is not restarted: its pod template does not mount "
                f"SecretProviderClass {state.class_name}",
            )
            return True
        kind, doc = claimed.kind, claimed.doc
        meta = doc["metadata"]
        template = doc.get("spec", {}).get("template", {}).get("metadata", {})
        if template.get("annotations", {}).get(ROLLED_TO) == state.restart_pending:
            return True  # another pod or node rolled this change out already
        last = _parse_time(meta.get("annotations", {}).get(LAST_RESTART, ""))
        if last is not None and (_now() - last).total_seconds() < self.min_interval:
            log.info("workload restart deferred (rate limit)", extra={"workload": f"{kind} {meta['name']}"})
            return False
        patch = {
            "metadata": {
                "resourceVersion": meta["resourceVersion"],
                "annotations": {LAST_RESTART: _now().strftime("%Y-%m-%dT%H:%M:%SZ")},
            },
            "spec": {"template": {"metadata": {"annotations": {ROLLED_TO: state.restart_pending}}}},
        }
        what = f"{kind} {state.pod_namespace}/{meta['name']}"
        try:
            # Strategic merge, as for kubectl; the resourceVersion in it makes it conditional.
            where = path("apps/v1", _RESOURCES[kind], state.pod_namespace, meta["name"])
            self.api.rest().patch(where, patch, Patch.STRATEGIC_MERGE)
        except ApiError as err:
            if err.status == 409:
                return False  # changed meanwhile (another node): look again next round
            if err.status in (401, 403):
                self._forbidden(ref, what)
                return True
            raise
        changed = ", ".join(f"{i}@{v}" for i, v in sorted(state.object_versions))
        workload_ref = PodRef(state.pod_namespace, meta["name"], meta["uid"], kind, "apps/v1")
        self.api.record_event(
            workload_ref,
            EventType.NORMAL,
            EventReason.ROTATION_ROLLOUT,
            f"SecretProviderClass {state.class_name} rotated ({changed}): rolling out new pods",
        )
        log.info("workload restarted", extra={"workload": what, "class": state.class_name})
        return True

    def _forbidden(self, ref: PodRef, what: str) -> None:
        self.api.record_event(
            ref,
            EventType.WARNING,
            EventReason.RESTART_FORBIDDEN,
            f"mounted secrets rotated, but the driver may not read or patch {what}: grant it get on "
            "replicasets and get, patch on deployments, statefulsets and daemonsets "
            "(chart value rotation.restartWorkloads)",
        )

    def _skipped(self, ref: PodRef, why: str) -> None:
        self.api.record_event(
            ref, EventType.NORMAL, EventReason.RESTART_SKIPPED, f"mounted secrets rotated, but {why}"
        )

    def _read(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        if not name:  # an empty name would read the whole collection
            return None
        try:
            return self.api.rest().get(path("apps/v1", _RESOURCES[kind], namespace, name))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def _opted_in(self, state: VolumeState, claimed: owner.Claim | None) -> bool:
        if claimed is not None and _opts_in(claimed.doc):
            return True
        try:
            spc = cast(
                SecretProviderClassObject,
                self.api.rest().get(
                    path(f"{GROUP}/{VERSION}", CLASSES, state.pod_namespace, state.class_name)
                ),
            )
        except ApiError:
            return False
        return _opts_in(spc)


def _opts_in(doc: Mapping[str, Any]) -> bool:
    return str(((doc.get("metadata") or {}).get("annotations") or {}).get(OPT_IN, "")).lower() == "true"
