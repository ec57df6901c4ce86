"""The azure/kv FlexVolume through kubelet v1.37, which still execs drivers from --volume-plugin-dir.

kubelet's environment is the driver's (tests/node/conftest.py gives it the double's CA and
the AzureStackCloud file); the credentials come from a Secret of type azure/kv.
"""

from __future__ import annotations

import sys
import uuid

import pytest
from kubernetes import client as k8s

from kvmount.flexvolume.install import install
from tests.node.conftest import CHART_MODE, MOUNT, VAULT, Cluster
from tests.node.host import mounts_under
from tests.support import eventually

# kubelet execs the FlexVolume driver from the host: the chart's pods play no part.
pytestmark = pytest.mark.skipif(CHART_MODE, reason="FlexVolume is kubelet's exec, not the chart's pods")


def test_pod_reads_its_secret_through_the_flexvolume_driver(cluster: Cluster) -> None:
    node = cluster.node
    # kubelet probes the directory again when it changes: no restart needed.
    install(str(node.plugin_dir), sys.executable, str(node.log("flexvolume")), str(node.kubelet_dir))
    run, client_id, secret = cluster.name("flex"), cluster.name("flex-app"), uuid.uuid4().hex
    cluster.kv.put_secret(VAULT, run, "through flexvolume")
    cluster.kv.register_aad_client(client_id, secret=secret)
    cluster.core.create_namespaced_secret(
        cluster.namespace,
        k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name="kvcreds"),
            type="azure/kv",  # kubelet passes only a Secret of the driver's type
            string_data={"clientid": client_id, "clientsecret": secret},
        ),
    )
    volume = {
        "flexVolume": {
            "driver": "azure/kv",
            "secretRef": {"name": "kvcreds"},
            "options": {
                "keyvaultname": VAULT,
                "keyvaultobjectnames": run,
                "keyvaultobjecttypes": "secret",
                "tenantid": cluster.kv.tenant,
                "cloudname": "AzureStackCloud",
            },
        }
    }
    cluster.pod("web", f"cat {MOUNT}/{run}; echo; exec sleep 3600", volume)
    pod = cluster.running("web")
    cluster.log_shows("web", "through flexvolume")
    volume_dir = cluster.volume_dir(pod, plugin="azure~kv")
    assert mounts_under(volume_dir) == [str(volume_dir)]

    cluster.delete_pod("web")
    cluster.gone("Pod", "web")
    eventually(lambda: not mounts_under(volume_dir), timeout=30, what="the FlexVolume unmounted")
