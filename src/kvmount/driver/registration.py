"""kubelet plugin registration, served by the driver itself (no node-driver-registrar sidecar).

kubelet watches its plugin registry directory (``/var/lib/kubelet/plugins_registry``)
for sockets. For each new one it calls ``Registration.GetInfo``; a CSI plugin
answers with its driver name and the path of its CSI socket as kubelet sees it.
kubelet then calls NodeGetInfo on that socket, records the driver in the node's
CSINode object, and reports the outcome with ``NotifyRegistrationStatus``.

The socket is named ``<driver>-reg.sock``, as the registrar names it, so a node
that still runs the registrar sidecar (with this feature off) looks the same to
kubelet. kubelet forgets a plugin whose socket is deleted, and a kubelet whose
root directory was wiped never sees the old socket again; the driver therefore
checks the socket every few seconds and serves a new one when it is gone.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import grpc

from kvmount.base import unix_grpc
from kvmount.proto import pluginregistration_pb2 as pb
from kvmount.proto import pluginregistration_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

DEFAULT_REGISTRY_DIR = "/var/lib/kubelet/plugins_registry"
PLUGIN_TYPE = "CSIPlugin"
# The CSI spec versions kubelet may speak to the driver (kubelet accepts 1.x).
SUPPORTED_VERSIONS = ("1.0.0",)


class _Registration(pb_grpc.RegistrationServicer):
    def __init__(self, driver_name: str, csi_endpoint: str, registered: threading.Event) -> None:
        self._info = pb.PluginInfo(
            type=PLUGIN_TYPE,
            name=driver_name,
            endpoint=csi_endpoint,
            supported_versions=SUPPORTED_VERSIONS,
        )
        self._registered = registered

    def GetInfo(self, request: pb.InfoRequest, context: grpc.ServicerContext) -> pb.PluginInfo:
        log.info("kubelet asked for plugin info", extra={"driver": self._info.name})
        return self._info

    def NotifyRegistrationStatus(
        self, request: pb.RegistrationStatus, context: grpc.ServicerContext
    ) -> pb.RegistrationStatusResponse:
        if request.plugin_registered:
            self._registered.set()
            log.info("registered with kubelet", extra={"driver": self._info.name})
        else:
            self._registered.clear()
            # kubelet's reason (e.g. an endpoint it cannot dial) is what the operator needs.
            log.error(
                "kubelet refused the registration",
                extra={"driver": self._info.name, "error": request.error},
            )
        return pb.RegistrationStatusResponse()


class RegistrationServer:
    """Serves ``Registration`` on ``<registry_dir>/<driver>-reg.sock`` and keeps that socket there."""

    def __init__(
        self,
        registry_dir: str | Path,
        driver_name: str,
        csi_endpoint: str,
        check_interval: float = 2.0,
    ) -> None:
        if not csi_endpoint:
            raise ValueError("--kubelet-registration-path: give the CSI socket path as kubelet sees it")
        self.socket = Path(registry_dir) / f"{driver_name}-reg.sock"
        # kubelet wants a bare path, which is what the registrar sends too.
        self._csi_path = unix_grpc.socket_path(csi_endpoint)
        self._driver = driver_name
        self._interval = check_interval
        self.registered = threading.Event()
        self._server: grpc.Server | None = None
        self._inode: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> RegistrationServer:
        self._serve()
        self._watcher = threading.Thread(target=self._watch, name="plugin-registration", daemon=True)
        self._watcher.start()
        return self

    def stop(self) -> None:
        """Stop serving. gRPC removes the socket, so kubelet forgets the driver until it is back."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        if self._server is not None:
            self._server.stop(None)
            self._server = None

    def _serve(self) -> None:
        if self._server is not None:
            self._server.stop(None)
        servicer = _Registration(self._driver, self._csi_path, self.registered)
        self._server = unix_grpc.serve(
            str(self.socket), lambda s: pb_grpc.add_RegistrationServicer_to_server(servicer, s), max_workers=2
        )
        self._inode = _inode(self.socket)
        log.info(
            "serving kubelet plugin registration",
            extra={"socket": str(self.socket), "csi_endpoint": self._csi_path},
        )

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            current = _inode(self.socket)
            if current is not None and current == self._inode:
                continue
            log.warning(
                "registration socket gone (kubelet restarted or its directory was wiped); serving it again",
                extra={"socket": str(self.socket)},
            )
            self.registered.clear()
            try:
                self._serve()
            except (OSError, ValueError, RuntimeError) as err:
                # e.g. the registry directory is not back yet: try again next round.
                self._inode = None
                log.error(
                    "cannot serve registration socket", extra={"socket": str(self.socket), "error": str(err)}
                )


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino
