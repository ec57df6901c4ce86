"""The CSIDriverProvider service: checks a MountRequest, mounts, answers files.

Every failure is a gRPC status whose message names the field or object; no
secret value, token or key ever reaches a message or a log line.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import grpc

from kvmount import __version__
from kvmount.csi.attributes import POD_NAME, POD_NAMESPACE
from kvmount.csi.provider_client import MAX_STALE_NOTE, STALE_METADATA
from kvmount.keyvault import Category, KeyVaultError, StaleServe
from kvmount.proto import v1alpha1_pb2 as pb
from kvmount.proto import v1alpha1_pb2_grpc as pb_grpc
from kvmount.provider.metrics import observe_grpc, observe_stale

if TYPE_CHECKING:
    from kvmount.keyvault import KeyVaultMounter

log = logging.getLogger(__name__)

RUNTIME_NAME = "kvmount-azure-provider"
DEFAULT_MODE = 0o644
# A Mount without a gRPC deadline gets this budget (--default-mount-timeout): kubelet's two minutes.
DEFAULT_BUDGET = 120.0
# gRPC reports "no deadline" as about 2^63 ns from now; anything past a day is taken as that.
_NO_DEADLINE = 86400.0
STATUS = {
    Category.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    Category.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Category.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    Category.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Category.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Category.INTERNAL: grpc.StatusCode.INTERNAL,
}


class RequestError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _json_map(field: str, raw: str, *, allow_null: bool) -> dict[str, str] | None:
    if allow_null and raw.strip() in ("", "null"):
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: not valid JSON") from None
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT, f"{field}: must be a JSON object of string values"
        )
    return doc


def _permission(raw: str) -> int:
    """The default file mode: a JSON decimal (the driver sends "420" for 0644)."""
    if not raw.strip():
        return DEFAULT_MODE
    try:
        mode = json.loads(raw)
    except (ValueError, RecursionError):  # and past int()'s 4,300 digits, or thousands of [
        mode = None
    if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o777:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f'permission: {raw[:16]!r} is not a decimal file mode from 0 to 511 ("420" is 0644)',
        )
    return mode


def _pod(attributes: Mapping[str, str]) -> str:
    return f"{attributes.get(POD_NAMESPACE, '')}/{attributes.get(POD_NAME, '')}"


def _age(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes == 0:
        return f"{int(seconds)}s"
    return f"{minutes}m" if minutes < 60 else f"{minutes // 60}h{minutes % 60}m"


def stale_note(stale: Sequence[StaleServe]) -> str:
    """One line naming the objects served stale, their age and why; ASCII and bounded, as
    gRPC metadata must be. Object names only, never content."""
    parts = [f"{s.what} {_age(s.age_seconds)} old ({s.reason})" for s in stale]
    note = "served stale content, Key Vault failing: " + "; ".join(parts)
    note = note.encode("ascii", "replace").decode()
    return note if len(note) <= MAX_STALE_NOTE else note[: MAX_STALE_NOTE - 3] + "..."


def mount_deadline(remaining: float | None, default_budget: float) -> float:
    """When Key Vault reads must end (time.monotonic()): a second before the caller's
    deadline, so the caller gets the provider's error rather than its own timeout."""
    if remaining is None or remaining > _NO_DEADLINE:
        remaining = default_budget
    return time.monotonic() + max(0.5, remaining - 1.0)


class LazyMounter:
    """The Key Vault pipeline, built on the first Mount: the Azure SDK it imports is about
    30 MiB and half a second (bench/RESULTS.md), which a node whose pods never mount a
    Key Vault object never pays, and which does not delay serving the socket."""

    def __init__(self, build: Callable[[], KeyVaultMounter]) -> None:
        self._build = build
        self._mounter: KeyVaultMounter | None = None
        self._lock = threading.Lock()

    def get(self) -> KeyVaultMounter:
        with self._lock:
            if self._mounter is None:
                self._mounter = self._build()
            return self._mounter

    def close(self) -> None:
        with self._lock:
            if self._mounter is not None:
                self._mounter.close()


class ProviderServicer(pb_grpc.CSIDriverProviderServicer):
    def __init__(self, mounter: LazyMounter, default_budget: float = DEFAULT_BUDGET) -> None:
        self.mounter = mounter
        self.default_budget = default_budget

    def Version(self, request: pb.VersionRequest, context: grpc.ServicerContext) -> pb.VersionResponse:
        observe_grpc("Version", grpc.StatusCode.OK.name, 0.0)
        return pb.VersionResponse(version="v1alpha1", runtime_name=RUNTIME_NAME, runtime_version=__version__)

    def Mount(self, request: pb.MountRequest, context: grpc.ServicerContext) -> pb.MountResponse:
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        pod = "/"
        try:
            attributes = _json_map("attributes", request.attributes, allow_null=False) or {}
            pod = _pod(attributes)
            secrets = _json_map("secrets", request.secrets, allow_null=True)
            mode = _permission(request.permission)
            # The driver sends the current versions only when it polls a mounted volume (rotation).
            refresh = len(request.current_object_version) > 0
            deadline = mount_deadline(context.time_remaining(), self.default_budget)
            result = self.mounter.get().mount_attributes(attributes, secrets, mode, refresh, deadline)
        except RequestError as err:
            code, message = err.code, str(err)
        except KeyVaultError as err:
            code, message = STATUS[err.category], str(err)
        except Exception as err:  # a bug, not bad input: say so without details that might leak
            code, message = (
                grpc.StatusCode.INTERNAL,
                f"internal error ({type(err).__name__}); see provider logs",
            )
            log.error("mount failed unexpectedly", extra={"pod": pod, "error_type": type(err).__name__})
        seconds = time.perf_counter() - start
        observe_grpc("Mount", code.name, seconds)
        if code is not grpc.StatusCode.OK:
            log.error(
                "failed to process mount request", extra={"pod": pod, "code": code.name, "error": message}
            )
            context.abort(code, message)
        log.info(
            "mounted",
            extra={"pod": pod, "files": len(result.files), "seconds": round(seconds, 3)},
        )
        if result.stale:
            note = stale_note(result.stale)
            observe_stale(len(result.stale))
            log.warning("stale content served", extra={"pod": pod, "stale": note})
            context.set_trailing_metadata(((STALE_METADATA, note),))
        return pb.MountResponse(
            object_version=[pb.ObjectVersion(id=i, version=v) for i, v in result.versions],
            files=[pb.File(path=f.path, mode=f.mode, contents=f.contents) for f in result.files],
        )


def register(server: grpc.Server, mounter: LazyMounter, default_budget: float = DEFAULT_BUDGET) -> None:
    pb_grpc.add_CSIDriverProviderServicer_to_server(ProviderServicer(mounter, default_budget), server)
