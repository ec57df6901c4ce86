"""`kvmount driver` and `kvmount provider` as host processes next to the test node's kubelet.

The driver serves CSI where kubelet looks for it (``<kubelet>/plugins/csi-secrets-store``),
registers itself in kubelet's plugin registry (no node-driver-registrar), and talks to
the API server as the ServiceAccount of deploy/driver/rbac.yaml, so that manifest is
what grants it. The provider reaches the Key Vault double through its CA and the
cloud environment file each SecretProviderClass names. Rotation polls every
ROTATION seconds, so a test sees a new version within a few seconds. The provider serves
stale content through a Key Vault outage for STALE_ON_ERROR (tests/node/test_outage.py);
no other test makes an outage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.node import host
from tests.node.cluster import NODE_NAME, Node
from tests.support import free_port, start_daemon, until_ready

ROTATION = 2.0
RESTART_INTERVAL = 20.0
STALE_ON_ERROR = "10m"
DRIVER_NAME = "secrets-store.csi.k8s.io"
REPO = Path(__file__).resolve().parents[2]


class Plugins:
    def __init__(self, node: Node, kv_env: dict[str, str]) -> None:
        self.node = node
        self.csi_socket = node.kubelet_dir / "plugins" / "csi-secrets-store" / "csi.sock"
        self.registry = node.kubelet_dir / "plugins_registry"
        self.provider_dir = node.root / "providers"
        self.state_dir = node.root / "driver-state"
        self.cloud_env = str(node.root / "azurestack.json")  # in the provider's --cloud-env-dirs
        self._kv_env = kv_env
        self._kubeconfig = node.root / "driver.kubeconfig"
        self.driver: subprocess.Popen[bytes] | None = None
        # upstream's suite reads the driver's metrics (tests/compat/test_e2e_provider_suite.py)
        self.metrics_port = free_port()
        self.provider: subprocess.Popen[bytes] | None = None

    def start(self) -> Plugins:
        api = self.node.api
        for manifest in ("crds/secretproviderclasses.yaml", "crds/secretproviderclasspodstatuses.yaml",
                         "driver/csidriver.yaml", "driver/rbac.yaml"):  # fmt: skip
            api.apply_yaml(REPO / "deploy" / manifest)
        token = api.service_account_token("kube-system", "secrets-store-csi-driver", expiration_seconds=86400)
        api.write_kubeconfig(self._kubeconfig, token, user="secrets-store-csi-driver")
        self.start_provider()
        self.start_driver()
        return self

    def stop(self) -> None:
        self.stop_driver()
        if self.provider is not None:
            host.kill_group(self.provider)
            self.provider = None

    def start_provider(self) -> None:
        sock = self.provider_dir / "azure.sock"
        self.provider = self._start(
            "provider",
            sock,
            [
                "provider",
                f"--endpoint=unix://{sock}",
                "--healthz-port=0",
                "--prometheus-port=0",
                f"--cloud-env-dirs={self.node.root}",  # the classes' cloudEnvFileName is there
                f"--serve-stale-on-error={STALE_ON_ERROR}",
            ],
            {**os.environ, **self._kv_env},
        )

    def start_driver(self) -> None:
        self.driver = self._start(
            "driver",
            self.csi_socket,
            [
                "driver",
                f"--endpoint=unix://{self.csi_socket}",
                f"--kubelet-registration-path={self.csi_socket}",
                f"--plugin-registration-path={self.registry}",
                f"--kubeconfig={self._kubeconfig}",
                f"--nodeid={NODE_NAME}",
                f"--provider-volume={self.provider_dir}",
                "--additional-provider-volume-paths=",
                f"--metrics-addr=127.0.0.1:{self.metrics_port}",
                f"--state-dir={self.state_dir}",
                f"--kubelet-root-dir={self.node.kubelet_dir}",
                "--enable-secret-rotation",
                f"--rotation-poll-interval={ROTATION}s",
                # Only workloads that opt in are rolled out (tests/node/test_restart.py).
                "--enable-workload-restart",
                f"--workload-restart-min-interval={RESTART_INTERVAL}s",
            ],
            dict(os.environ),
        )

    def stop_driver(self, first: signal.Signals = signal.SIGTERM) -> None:
        if self.driver is not None:
            host.kill_group(self.driver, first=first)
            self.driver = None

    def log(self, name: str) -> str:
        return self.node.log(name).read_text(errors="replace")

    def _start(self, name: str, sock: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """``kvmount <args>`` in its own process group, once it serves ``sock``."""
        argv = [sys.executable, "-m", "kvmount.cli", *args]
        daemon = start_daemon(name, argv, self.node.log(name), env=env, own_group=True)
        try:
            until_ready(sock.is_socket, timeout=30, what=f"{name}: a socket at {sock}", daemons=[daemon])
        except BaseException:
            host.kill_group(daemon.process)
            raise
        return daemon.process
