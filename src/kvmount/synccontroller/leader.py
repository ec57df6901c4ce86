"""Leader election on a coordination.k8s.io Lease, with the Kubernetes client's elector.

``leading()`` is what a writer checks before each write: true only while the
last successful renewal is younger than the renew deadline. The elector gives
up after that deadline, and another replica may take the Lease only once the
lease duration has passed since it last saw it change, so a replica stops
writing before any other can start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Leadership:
    def __init__(
        self,
        api_client: Any,
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
        self.api_client = api_client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.retry_seconds = retry_seconds
        self._renewed = -float("inf")

    def leading(self) -> bool:
        return time.monotonic() - self._renewed < self.renew_seconds

    def _lock(self) -> Any:
        from kubernetes import client
        from kubernetes.leaderelection.resourcelock import leaselock

        base: Any = leaselock.LeaseLock  # the module carries no annotations
        owner = self

        class _Lock(base):  # type: ignore[misc]
            """The client's Lease lock on our ApiClient, noting each successful write."""

            def create(self, name: str, namespace: str, election_record: Any) -> bool:
                return owner._noted(super().create(name, namespace, election_record))

            def update(self, name: str, namespace: str, updated_record: Any) -> bool:
                return owner._noted(super().update(name, namespace, updated_record))

        lock = _Lock(self.name, self.namespace, self.identity)
        lock.api_instance = client.CoordinationV1Api(self.api_client)
        return lock

    def _noted(self, ok: bool) -> bool:
        if ok:
            self._renewed = time.monotonic()
        return ok

    def run(self, lead: Callable[[threading.Event], None], stop: threading.Event) -> None:
        """Wait for the Lease, then run ``lead(stop)``; ``stop`` is set when the Lease is lost.

        The elector cannot be stopped from outside: run this in a daemon thread
        and end the process once ``stop`` is set."""
        from kubernetes.leaderelection import electionconfig as config_module
        from kubernetes.leaderelection import leaderelection as election_module

        # The modules carry no annotations.
        electionconfig: Any = config_module
        leaderelection: Any = election_module

        def started() -> None:
            log.info("leading", extra={"lease": f"{self.namespace}/{self.name}", "identity": self.identity})
            lead(stop)

        def stopped() -> None:
            log.warning("lost the lease", extra={"lease": f"{self.namespace}/{self.name}"})
            stop.set()

        config = electionconfig.Config(
            self._lock(), self.lease_seconds, self.renew_seconds, self.retry_seconds, started, stopped
        )
        log.info(
            "waiting for the lease",
            extra={"lease": f"{self.namespace}/{self.name}", "identity": self.identity},
        )
        leaderelection.LeaderElection(config).run()
