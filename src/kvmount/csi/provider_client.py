"""Provider discovery and the v1alpha1 client: one cached channel per provider.

A provider named ``azure`` serves ``azure.sock`` in one of the provider
directories (``--provider-volume`` first, then each of
``--additional-provider-volume-paths``). Calls are retried on UNAVAILABLE with
backoff by gRPC itself (a service config, as upstream), so a provider that is
restarting does not fail a publish.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from enum import StrEnum

import grpc

from kvmount.base import unix_grpc
from kvmount.proto import v1alpha1_pb2 as pb
from kvmount.proto import v1alpha1_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

NAME = re.compile(r"^[a-zA-Z0-9_-]{0,30}$")
API_VERSION = "v1alpha1"
HEALTH_CHECK_TIMEOUT = 5.0
# Trailing metadata of a Mount answered partly with stale content (kvmount's provider, with
# --serve-stale-on-error): v1alpha1's MountResponse has no field for it, and a driver that does
# not know the key ignores it. Its value names the objects and their age, never content.
STALE_METADATA = "kvmount-stale-content"
MAX_STALE_NOTE = 1024
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "v1alpha1.CSIDriverProvider"}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "1s",
                    "maxBackoff": "10s",
                    "backoffMultiplier": 1.1,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


class ProviderReason(StrEnum):
    """Why a provider could not be used or failed: the driver's metric label."""

    INVALID_PROVIDER = "InvalidProvider"
    NOT_FOUND = "ProviderNotFound"
    UNAVAILABLE = "ProviderUnavailable"
    TIMEOUT = "ProviderTimeout"
    RESPONSE_TOO_LARGE = "ProviderResponseTooLarge"
    ERROR = "ProviderError"


# The gRPC code of each reason, unless the provider answered with a code of its own.
CODES = {
    ProviderReason.INVALID_PROVIDER: grpc.StatusCode.INVALID_ARGUMENT,
    ProviderReason.NOT_FOUND: grpc.StatusCode.FAILED_PRECONDITION,
    ProviderReason.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ProviderReason.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    ProviderReason.RESPONSE_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ProviderReason.ERROR: grpc.StatusCode.UNKNOWN,
}


class ProviderError(Exception):
    """A provider that cannot be used or that failed; ``code`` is the provider's own when it answered one."""

    def __init__(
        self,
        reason: ProviderReason,
        message: str,
        code: grpc.StatusCode | None = None,
        details: str = "",
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = CODES[reason] if code is None else code
        # The provider's own status message, when it answered one (the sync controller shows it).
        self.details = details


@dataclass
class _Client:
    socket: str
    channel: grpc.Channel
    stub: pb_grpc.CSIDriverProviderStub


class ProviderClients:
    def __init__(self, socket_dirs: list[str], max_recv_msg_size: int) -> None:
        self.socket_dirs = socket_dirs
        self.max_recv_msg_size = max_recv_msg_size
        self._clients: dict[str, _Client] = {}
        self._lock = threading.Lock()

    def socket_for(self, provider: str) -> str:
        if not NAME.match(provider):
            raise ProviderError(
                ProviderReason.INVALID_PROVIDER,
                f"provider name {provider[:40]!r} is invalid: use up to 30 letters, digits, '_' or '-'",
            )
        for directory in self.socket_dirs:
            path = os.path.join(directory, f"{provider}.sock")
            if os.path.exists(path):
                return path
        raise ProviderError(
            ProviderReason.NOT_FOUND,
            f"provider {provider!r} not found: no {provider}.sock in {', '.join(self.socket_dirs)}; "
            "is the provider installed and running on this node?",
        )

    def _client(self, provider: str) -> _Client:
        socket = self.socket_for(provider)
        with self._lock:
            client = self._clients.get(provider)
            if client is not None and client.socket == socket:
                return client
            if client is not None:
                client.channel.close()
            channel = grpc.insecure_channel(
                f"unix://{socket}",
                options=[
                    unix_grpc.AUTHORITY,
                    ("grpc.max_receive_message_length", self.max_recv_msg_size),
                    ("grpc.enable_retries", 1),
                    ("grpc.service_config", _SERVICE_CONFIG),
                ],
            )
            client = _Client(socket, channel, pb_grpc.CSIDriverProviderStub(channel))
            self._clients[provider] = client
            return client

    def mount(self, provider: str, request: pb.MountRequest, timeout: float) -> pb.MountResponse:
        return self.mount_noted(provider, request, timeout)[0]

    def mount_noted(
        self, provider: str, request: pb.MountRequest, timeout: float
    ) -> tuple[pb.MountResponse, str]:
        """The provider's answer, and its note that some content is stale ("" if none)."""
        client = self._client(provider)
        try:
            response: pb.MountResponse
            response, call = client.stub.Mount.with_call(request, timeout=timeout)
        except grpc.RpcError as err:
            raise _rpc_error(provider, client.socket, err, timeout) from None
        if response.error.code:
            raise ProviderError(
                ProviderReason.ERROR,
                # upstream's phrase first (alerts match it), then who said it
                f"mount request failed with provider error code {response.error.code[:64]}: "
                f"reported by provider {provider!r}",
            )
        notes = [v for k, v in call.trailing_metadata() or () if k == STALE_METADATA and isinstance(v, str)]
        return response, "".join(notes)[:MAX_STALE_NOTE]

    def version(self, provider: str, timeout: float = HEALTH_CHECK_TIMEOUT) -> str:
        client = self._client(provider)
        try:
            response: pb.VersionResponse = client.stub.Version(
                pb.VersionRequest(version=API_VERSION), timeout=timeout
            )
        except grpc.RpcError as err:
            raise _rpc_error(provider, client.socket, err, timeout) from None
        return f"{response.runtime_name} {response.runtime_version}".strip()

    def health_check(self) -> dict[str, bool]:
        """Call Version on every provider used so far; logs and returns who answered."""
        with self._lock:
            names = sorted(self._clients)
        healthy: dict[str, bool] = {}
        for name in names:
            try:
                runtime = self.version(name)
            except ProviderError as err:
                log.warning("provider health check failed", extra={"provider": name, "error": str(err)})
                healthy[name] = False
            else:
                log.debug("provider healthy", extra={"provider": name, "runtime": runtime})
                healthy[name] = True
        return healthy

    def run_health_checks(self, interval: float, stop: threading.Event) -> threading.Thread:
        def loop() -> None:
            while not stop.wait(interval):
                self.health_check()

        thread = threading.Thread(target=loop, daemon=True, name="provider-health")
        thread.start()
        return thread

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.channel.close()
            self._clients.clear()


# How gRPC words UNAVAILABLE when no provider took the call (no socket, refused, dropped).
_TRANSPORT_FAILURES = (
    "failed to connect",
    "connection refused",
    "socket closed",
    "connection reset",
    "goaway",
)


def _answered(details: str) -> bool:
    """Whether an UNAVAILABLE came from the provider itself rather than from the transport."""
    lowered = details.lower()
    return bool(details) and not any(words in lowered for words in _TRANSPORT_FAILURES)


def _rpc_error(provider: str, socket: str, err: grpc.RpcError, timeout: float) -> ProviderError:
    code: grpc.StatusCode = err.code()
    details = str(err.details() or "")
    if code is grpc.StatusCode.UNAVAILABLE and not _answered(details):
        return ProviderError(
            ProviderReason.UNAVAILABLE,
            f"provider {provider!r} is not answering on {socket}: is the provider running?",
        )
    if code is grpc.StatusCode.UNAVAILABLE:  # the provider's own answer: Key Vault is failing
        return ProviderError(ProviderReason.UNAVAILABLE, f"provider {provider!r}: {details}", details=details)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return ProviderError(
            ProviderReason.TIMEOUT, f"provider {provider!r} did not answer within {timeout:.0f}s"
        )
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        return ProviderError(
            ProviderReason.RESPONSE_TOO_LARGE,
            f"provider {provider!r} answered more than the driver accepts; raise --max-call-recv-msg-size",
        )
    return ProviderError(ProviderReason.ERROR, f"provider {provider!r}: {details}", code, details)
