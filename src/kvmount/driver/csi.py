"""The CSI Identity, Node and (a minimal) Controller service: request checks and gRPC statuses.

Checks follow the CSI spec (INVALID_ARGUMENT for a missing required field)
in upstream's order; the work is done by publish.Publisher. A request's
secrets and volume context (which may carry service account tokens) are
never logged.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

import grpc

from kvmount import __version__
from kvmount.driver import metrics
from kvmount.driver.publish import Publisher
from kvmount.driver.request import PublishError, PublishReason, VolumeRequest
from kvmount.proto import csi_pb2 as csi
from kvmount.proto import csi_pb2_grpc as csi_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")
_NodeCap = csi.NodeServiceCapability
# Longer than any caller would wait: the caller set no deadline.
_NO_DEADLINE = 86400.0


def _invalid(message: str) -> PublishError:
    return PublishError(PublishReason.INVALID_REQUEST, message)


def _call(method: str, context: grpc.ServicerContext, fn: Callable[[], T]) -> T:
    """Run one call, turning every failure into a status and timing it."""
    start = time.perf_counter()
    code = grpc.StatusCode.OK
    try:
        return fn()
    except PublishError as err:
        code = err.code
        context.abort(code, str(err))
    except Exception as err:  # a bug, not bad input: answer without details that might leak
        code = grpc.StatusCode.INTERNAL
        log.error("call failed unexpectedly", extra={"method": method, "error_type": type(err).__name__})
        context.abort(code, f"{method}: internal error ({type(err).__name__}); see the driver's logs")
    finally:
        metrics.CSI_OPERATION.labels(method, code.name).observe(time.perf_counter() - start)
    raise AssertionError("unreachable: abort raises")


def _check_path(field: str, path: str) -> None:
    if not path:
        raise _invalid(f"{field} missing in request")
    if not os.path.isabs(path) or "\x00" in path:
        raise _invalid(f"{field} {path[:200]!r} must be an absolute path")


class IdentityServicer(csi_grpc.IdentityServicer):
    def __init__(self, driver_name: str) -> None:
        self.driver_name = driver_name

    def GetPluginInfo(
        self, request: csi.GetPluginInfoRequest, context: grpc.ServicerContext
    ) -> csi.GetPluginInfoResponse:
        return csi.GetPluginInfoResponse(name=self.driver_name, vendor_version=__version__)

    def GetPluginCapabilities(
        self, request: csi.GetPluginCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi.GetPluginCapabilitiesResponse:
        # A node-only plugin: no controller service to advertise.
        return csi.GetPluginCapabilitiesResponse()

    def Probe(self, request: csi.ProbeRequest, context: grpc.ServicerContext) -> csi.ProbeResponse:
        return csi.ProbeResponse(ready={"value": True})


class NodeServicer(csi_grpc.NodeServicer):
    def __init__(self, publisher: Publisher, node_id: str) -> None:
        self.publisher = publisher
        self.node_id = node_id

    def NodeStageVolume(
        self, request: csi.NodeStageVolumeRequest, context: grpc.ServicerContext
    ) -> csi.NodeStageVolumeResponse:
        def stage() -> csi.NodeStageVolumeResponse:
            # Nothing to stage for secrets; kubelet stages no ephemeral volume anyway.
            if not request.volume_id:
                raise _invalid("Volume ID missing in request")
            _check_path("Staging target path", request.staging_target_path)
            if not request.HasField("volume_capability"):
                raise _invalid("Volume capability missing in request")
            return csi.NodeStageVolumeResponse()

        return _call("NodeStageVolume", context, stage)

    def NodeUnstageVolume(
        self, request: csi.NodeUnstageVolumeRequest, context: grpc.ServicerContext
    ) -> csi.NodeUnstageVolumeResponse:
        def unstage() -> csi.NodeUnstageVolumeResponse:
            if not request.volume_id:
                raise _invalid("Volume ID missing in request")
            _check_path("Staging target path", request.staging_target_path)
            return csi.NodeUnstageVolumeResponse()

        return _call("NodeUnstageVolume", context, unstage)

    def NodePublishVolume(
        self, request: csi.NodePublishVolumeRequest, context: grpc.ServicerContext
    ) -> csi.NodePublishVolumeResponse:
        def publish() -> csi.NodePublishVolumeResponse:
            volume = check_publish(request)
            remaining = context.time_remaining()
            # A call without a deadline reads as ~9e18 s remaining: treat it as none (the default budget).
            no_deadline = remaining is None or remaining > _NO_DEADLINE
            deadline = None if no_deadline else time.monotonic() + remaining
            self.publisher.publish(volume, deadline)
            return csi.NodePublishVolumeResponse()

        return _call("NodePublishVolume", context, publish)

    def NodeUnpublishVolume(
        self, request: csi.NodeUnpublishVolumeRequest, context: grpc.ServicerContext
    ) -> csi.NodeUnpublishVolumeResponse:
        def unpublish() -> csi.NodeUnpublishVolumeResponse:
            if not request.volume_id:
                raise _invalid("Volume ID missing in request")
            _check_path("Target path", request.target_path)
            self.publisher.unpublish(request.volume_id, request.target_path)
            return csi.NodeUnpublishVolumeResponse()

        return _call("NodeUnpublishVolume", context, unpublish)

    def NodeGetVolumeStats(
        self, request: csi.NodeGetVolumeStatsRequest, context: grpc.ServicerContext
    ) -> csi.NodeGetVolumeStatsResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "NodeGetVolumeStats is not implemented")
        raise AssertionError("unreachable: abort raises")

    def NodeExpandVolume(
        self, request: csi.NodeExpandVolumeRequest, context: grpc.ServicerContext
    ) -> csi.NodeExpandVolumeResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "NodeExpandVolume is not implemented")
        raise AssertionError("unreachable: abort raises")

    def NodeGetCapabilities(
        self, request: csi.NodeGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi.NodeGetCapabilitiesResponse:
        # As upstream: staging is accepted (and is a no-op), and files can be
        # given to the pod's fsGroup through volume_mount_group.
        kinds = [_NodeCap.RPC.STAGE_UNSTAGE_VOLUME, _NodeCap.RPC.VOLUME_MOUNT_GROUP]
        return csi.NodeGetCapabilitiesResponse(
            capabilities=[_NodeCap(rpc=_NodeCap.RPC(type=k)) for k in kinds]
        )

    def NodeGetInfo(
        self, request: csi.NodeGetInfoRequest, context: grpc.ServicerContext
    ) -> csi.NodeGetInfoResponse:
        return csi.NodeGetInfoResponse(node_id=self.node_id)


class ControllerServicer(csi_grpc.ControllerServicer):
    """A node-only plugin's controller: no capability, and no volume a controller made.

    Upstream answers one capability of type UNKNOWN, which conformance tests
    reject; no capability says the same to every CO. Nothing calls this in a
    cluster (the CSIDriver has attachRequired: false)."""

    def ControllerGetCapabilities(
        self, request: csi.ControllerGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi.ControllerGetCapabilitiesResponse:
        return csi.ControllerGetCapabilitiesResponse()

    def ValidateVolumeCapabilities(
        self, request: csi.ValidateVolumeCapabilitiesRequest, context: grpc.ServicerContext
    ) -> csi.ValidateVolumeCapabilitiesResponse:
        def check() -> csi.ValidateVolumeCapabilitiesResponse:
            if not request.volume_id:
                raise _invalid("Volume ID missing in request")
            if not request.volume_capabilities:
                raise _invalid("volume_capabilities missing in request")
            # Inline ephemeral volumes only: no volume id ever came from a CreateVolume here.
            raise PublishError(
                PublishReason.INVALID_REQUEST,
                f"volume {request.volume_id[:200]!r} does not exist: this driver serves inline volumes only",
                grpc.StatusCode.NOT_FOUND,
            )

        return _call("ValidateVolumeCapabilities", context, check)


def check_publish(request: csi.NodePublishVolumeRequest) -> VolumeRequest:
    """The request's required fields, in upstream's order; raises PublishError(INVALID_ARGUMENT)."""
    if not request.HasField("volume_capability"):
        raise _invalid("Volume capability missing in request")
    if not request.volume_id:
        raise _invalid("Volume ID missing in request")
    _check_path("Target path", request.target_path)
    if not request.volume_context:
        raise _invalid(
            "Volume attributes missing in request: the pod's csi volume needs "
            "volumeAttributes.secretProviderClass, and the CSIDriver podInfoOnMount: true"
        )
    if request.volume_capability.HasField("block"):
        raise _invalid("volume_capability: block access is not supported; use a filesystem (mount) volume")
    if not request.readonly:
        raise _invalid("Readonly is not true in request: set readOnly: true on the pod's csi volume")
    return VolumeRequest(
        volume_id=request.volume_id,
        target_path=request.target_path,
        volume_context=dict(request.volume_context),
        secrets=dict(request.secrets),
        volume_mount_group=request.volume_capability.mount.volume_mount_group,
    )


def register(server: grpc.Server, driver_name: str, publisher: Publisher, node_id: str) -> None:
    csi_grpc.add_IdentityServicer_to_server(IdentityServicer(driver_name), server)
    csi_grpc.add_NodeServicer_to_server(NodeServicer(publisher, node_id), server)
    csi_grpc.add_ControllerServicer_to_server(ControllerServicer(), server)
