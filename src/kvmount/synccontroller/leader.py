"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection behaves.

A replica that does not hold the Lease tries every retry period (jittered) to
take it: it may once the holder is empty, or once the Lease has not changed
for the holder's ``leaseDurationSeconds`` as measured on this replica's own
clock (never the writer's ``renewTime``: clocks differ). Every write is a PUT
carrying the read ``resourceVersion``, so of two replicas racing only one
wins. The holder renews every retry period; when no renewal has succeeded for
the renew deadline it gives up. ``leading()`` is what a writer checks before
each write: true only while the last successful write is younger than the
renew deadline, so a replica stops writing before any other may take over.
On a clean stop the holder releases the Lease (holder emptied, duration 1s)
so the next replica need not wait out the duration.
"""

from __future__ import annotations

import datetime
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from kvmount.kube.rest import ApiError, RestClient, Unreachable, path

log = logging.getLogger(__name__)

API_VERSION = "coordination.k8s.io/v1"
# client-go's wait.JitterUntil factor for the acquire loop.
JITTER = 1.2
# The lead function's threads are given this long to finish before the Lease is released.
RELEASE_WAIT = 30.0


def _micro_time() -> str:
    """A MicroTime as the API server writes it (RFC 3339, microseconds, UTC)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Leadership:
    def __init__(
        self,
        rest: Callable[[], RestClient],
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: int,
        renew_seconds: int,
        retry_seconds: int,
    ) -> None:
        if not lease_seconds > renew_seconds > retry_seconds >= 1:
            raise ValueError(
                "leader election needs --leader-elect-lease-duration > --leader-elect-renew-deadline "
                "> --leader-elect-retry-period >= 1s"
            )
        self._rest = rest
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.retry_seconds = retry_seconds
        self._renewed = -float("inf")
        # The Lease's spec as last seen, and when (this replica's clock).
        self._observed: dict[str, Any] = {}
        self._observed_at = -float("inf")
        self._version = ""

    def leading(self) -> bool:
        return time.monotonic() - self._renewed < self.renew_seconds

    def _holds(self) -> bool:
        return self._observed.get("holderIdentity") == self.identity

    def _where(self, named: bool = True) -> str:
        return path(API_VERSION, "leases", self.namespace, self.name if named else "")

    def _write(self, spec: dict[str, Any], create: bool) -> bool:
        metadata = {"name": self.name, "namespace": self.namespace}
        if not create:
            metadata["resourceVersion"] = self._version
        body = {"apiVersion": API_VERSION, "kind": "Lease", "metadata": metadata, "spec": spec}
        if create:
            written = self._rest().create(self._where(named=False), body)
        else:
            written = self._rest().replace(self._where(), body)
        self._version = str((written.get("metadata") or {}).get("resourceVersion") or "")
        self._observed, self._observed_at = spec, time.monotonic()
        return True

    def _try_acquire_or_renew(self) -> bool:
        """One attempt, as client-go's tryAcquireOrRenew; True when this replica holds the Lease."""
        now = _micro_time()
        mine = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 0,
        }
        try:
            try:
                current = self._rest().get(self._where())
            except ApiError as err:
                if err.status != 404:
                    raise
                return self._noted(self._write(mine, create=True))
            spec = dict(current.get("spec") or {})
            self._version = str((current.get("metadata") or {}).get("resourceVersion") or "")
            if spec != self._observed:
                self._observed, self._observed_at = spec, time.monotonic()
            duration = int(spec.get("leaseDurationSeconds") or self.lease_seconds)
            holder = str(spec.get("holderIdentity") or "")
            if holder and holder != self.identity and time.monotonic() < self._observed_at + duration:
                return False
            transitions = int(spec.get("leaseTransitions") or 0)
            if holder == self.identity:
                mine["acquireTime"] = spec.get("acquireTime") or now
                mine["leaseTransitions"] = transitions
            else:
                mine["leaseTransitions"] = transitions + 1
            return self._noted(self._write(mine, create=False))
        except (ApiError, Unreachable) as err:
            # A conflict is another replica's write winning the race; the rest, a failed attempt.
            log.info("lease attempt failed", extra={"lease": self._lease(), "error": str(err)})
            return False

    def _noted(self, ok: bool) -> bool:
        if ok:
            self._renewed = time.monotonic()
        return ok

    def _lease(self) -> str:
        return f"{self.namespace}/{self.name}"

    def _acquire(self, stop: threading.Event) -> bool:
        while not stop.is_set():
            if self._try_acquire_or_renew():
                return True
            stop.wait(self.retry_seconds * (1 + random.random() * JITTER))
        return False

    def _renew(self, stop: threading.Event) -> bool:
        """Renew every retry period; False once no attempt has succeeded for the renew deadline."""
        while not stop.wait(self.retry_seconds):
            deadline = time.monotonic() + self.renew_seconds
            while not self._try_acquire_or_renew():
                if stop.is_set():
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                stop.wait(min(self.retry_seconds, left))
        return True

    def _release(self) -> None:
        if not self._holds():
            return
        now = _micro_time()
        spec = {
            **self._observed,
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "acquireTime": now,
            "renewTime": now,
        }
        self._renewed = -float("inf")
        try:
            self._write(spec, create=False)
            log.info("released the lease", extra={"lease": self._lease()})
        except (ApiError, Unreachable) as err:
            log.warning("cannot release the lease", extra={"lease": self._lease(), "error": str(err)})

    def run(self, lead: Callable[[threading.Event], None], stop: threading.Event) -> None:
        """Wait for the Lease, then run ``lead(stop)`` in a thread while renewing; ``stop`` is set
        when the Lease is lost. Once ``stop`` is set from outside, the Lease is released after
        ``lead`` has returned (so nothing is written after the release)."""
        log.info("waiting for the lease", extra={"lease": self._lease(), "identity": self.identity})
        if not self._acquire(stop):
            return
        log.info("leading", extra={"lease": self._lease(), "identity": self.identity})
        worker = threading.Thread(target=lead, args=(stop,), daemon=True, name="leader")
        worker.start()
        if not self._renew(stop):
            log.warning("lost the lease", extra={"lease": self._lease()})
            self._renewed = -float("inf")
            stop.set()
            return
        worker.join(timeout=RELEASE_WAIT)
        if not worker.is_alive():
            self._release()
