"""What the driver needs from wherever classes and pod statuses live."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from kvmount.kube.classes import SecretProviderClass
from kvmount.kube.podstatus import EventType, PodRef, PodStatus


class Store(Protocol):
    def get_class(self, namespace: str, name: str) -> SecretProviderClass: ...

    def put_pod_status(self, status: PodStatus) -> str:
        """Create or replace the status; returns its uid ("" where objects have none)."""
        ...

    def delete_pod_status(self, namespace: str, name: str) -> None: ...

    def record_event(self, pod: PodRef, kind: EventType, reason: StrEnum, message: str) -> None:
        """An event on ``pod``; ``reason`` is a member of its component's closed set."""
        ...
