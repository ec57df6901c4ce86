"""The official ``kubernetes`` client, for the workstation tools only (doctor, ``validate --cluster``):
a user's kubeconfig may run an exec credential plugin (kubelogin), which kube/kubeconfig.py refuses.
The daemons' image leaves the package out; the ``cli`` extra brings it."""

from __future__ import annotations

import os
from typing import Any

from kvmount.kube.errors import StoreUnavailable

CLI_EXTRA = "pip install 'kvmount[cli]'"


class ClientMissing(Exception):
    """The ``kubernetes`` package is not installed."""

    def __init__(self) -> None:
        super().__init__(f"the Kubernetes client (the kubernetes package) is not installed: {CLI_EXTRA}")


def official_client(kubeconfig: str, context: str) -> Any:
    """An ApiClient from ``kubeconfig`` (or $KUBECONFIG) and ``context``, else in-cluster;
    raises ClientMissing, or StoreUnavailable for a configuration it cannot use."""
    try:
        from kubernetes import client
        from kubernetes import config as kube_config
    except ImportError:
        raise ClientMissing() from None
    config: Any = kube_config
    settings = client.Configuration()
    try:
        if kubeconfig or os.environ.get("KUBECONFIG"):
            config.load_kube_config(
                config_file=kubeconfig or None, context=context or None, client_configuration=settings
            )
        else:
            config.load_incluster_config(client_configuration=settings)
    except (config.ConfigException, OSError, TypeError, ValueError) as err:
        raise StoreUnavailable(f"cannot configure the Kubernetes API client: {err}") from None
    # Fail fast: the tools say what failed rather than retry.
    settings.retries = 1
    return client.ApiClient(settings)
