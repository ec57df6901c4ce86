"""What the driver needs from wherever classes and pod statuses live."""

from __future__ import annotations

from typing import Protocol

from kvmount.kube.classes import SecretProviderClass
from kvmount.kube.podstatus import PodRef, PodStatus


class Store(Protocol):
    def get_class(self, namespace: str, name: str) -> SecretProviderClass: ...

    def put_pod_status(self, status: PodStatus) -> str:
        """Create or replace the status; returns its uid ("" where objects have none)."""
        ...

    def delete_pod_status(self, namespace: str, name: str) -> None: ...

    def record_event(self, pod: PodRef, kind: str, reason: str, message: str) -> None: ...
