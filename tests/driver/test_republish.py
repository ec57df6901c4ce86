"""kubelet's periodic re-publish (requiresRepublish) of a live volume: one rotation path per volume.

A volume the driver's reconciler rotates is never fetched by kubelet's re-publish too, and a
re-publish that does not fetch costs nothing: counted at the real API server (its audit log),
at the real provider (its log of Mount calls) and at the Key Vault double, with `kvmount driver`
served over real gRPC.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kvmount.csi.attributes import SA_TOKENS
from kvmount.driver.republish import Republish
from kvmount.driver.request import VolumeRequest
from kvmount.driver.rotation_path import Grants
from kvmount.driver.volumes import VolumeState
from tests.driver.conftest import stop_driver
from tests.driver.test_rotation import (  # noqa: F401 (stack: a fixture)
    VAULT,
    Namespace,
    Stack,
    kube_driver,
    stack,
)
from tests.support import eventually

DRIVER_USER = "system:serviceaccount:kube-system:secrets-store-csi-driver"
REQUEST = VolumeRequest("v", "/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/s/mount", {}, {})


def state(age: float) -> VolumeState:
    """The state of a volume last fetched ``age`` seconds ago."""
    return VolumeState(
        "v",
        REQUEST.target_path,
        "web",
        "default",
        "uid",
        "default",
        "kv",
        "azure",
        {},
        refreshed_at=time.time() - age,
    )


@pytest.mark.parametrize(
    ("interval", "reconciled", "age", "fetches"),
    [
        (None, False, 7200.0, False),  # rotation off: never
        (60.0, False, 0.0, False),  # not due
        (60.0, False, 7200.0, True),  # due, and kubelet's to rotate
        (60.0, True, 7200.0, False),  # due, but the reconciler's
        (60.0, True, None, True),  # unknown to the driver: the reconciler cannot serve it
    ],
)
def test_a_republish_fetches_only_a_due_volume_the_reconciler_does_not_serve(
    interval: float | None, reconciled: bool, age: float | None, fetches: bool
) -> None:
    republish = Republish(interval)
    republish.hand_to(lambda _: reconciled)
    assert republish.fetches(REQUEST, None if age is None else state(age)) is fetches


def _mounts(log: Path, pod: str) -> int:
    """The provider's Mount calls for ``pod`` (namespace/name) so far."""
    return sum(1 for line in log.read_text().splitlines() if "mounted" in line and pod in line)


def test_a_burst_of_republishes_costs_no_request_and_no_provider_call(
    stack: Stack,  # noqa: F811
    tmp_path: Path,
    kubelet_dir: Path,
) -> None:
    driver = kube_driver(stack, tmp_path / "drv", "--enable-secret-rotation", "--rotation-poll-interval=1h")
    try:
        # The reconciler has asked what it may fetch: the volumes it may serve are its alone.
        eventually(lambda: "rotation path" in driver.log.read_text(), timeout=30, what="rotation path chosen")
        ns = Namespace(stack)
        name, pod = ns.mounted(driver, kubelet_dir, "one")
        where = f"{ns.name}/web"
        assert _mounts(stack.provider_log, where) == 1

        def burst(count: int) -> Callable[[], None]:
            def check() -> None:
                mark, mounts, reads = (
                    stack.kube.audit_mark(),
                    _mounts(stack.provider_log, where),
                    stack.kv.requests(),
                )
                for _ in range(count):
                    ns.publish(driver, pod, "kv")  # kubelet's re-publish, its secrets and all
                assert stack.kube.requests(DRIVER_USER, mark) == []
                assert _mounts(stack.provider_log, where) == mounts
                assert stack.kv.requests() == reads
                assert (pod.target / name).read_text() == "one"

            return check

        burst(20)()  # not due: the volume was fetched a moment ago

        # Due by kubelet's clock (fetched two hours ago) and changed in Key Vault: still the
        # reconciler's, on its own schedule; kubelet's re-publish fetches nothing.
        (state_file,) = (tmp_path / "drv" / "state" / "volumes").glob("*.json")
        doc = json.loads(state_file.read_text())
        doc["refreshed_at"] = time.time() - 7200
        state_file.write_text(json.dumps(doc))
        stack.kv.put_secret(VAULT, name, "two")
        burst(20)()
    finally:
        stop_driver(driver)


def test_tokens_the_reconciler_may_not_get_leave_the_volume_to_kubelets_republish() -> None:
    """The request's own credentials decide, from memory: tokens without the token grant (or a
    nodePublishSecretRef without the secrets grant) are kubelet's to rotate."""
    tokens = VolumeRequest("v", REQUEST.target_path, {SA_TOKENS: "{}"}, {})
    node_secret = VolumeRequest("v", REQUEST.target_path, {}, {"clientid": "x"})
    assert Grants().cover(tokens) and Grants().cover(node_secret) and Grants().cover(REQUEST)
    assert not Grants(tokens=False).cover(tokens) and Grants(tokens=False).cover(node_secret)
    assert not Grants(secrets=False).cover(node_secret) and Grants(secrets=False).cover(tokens)
    in_secrets = VolumeRequest(
        "v", REQUEST.target_path, {}, {SA_TOKENS: "{}"}
    )  # serviceAccountTokenInSecrets
    assert not Grants(tokens=False).cover(in_secrets) and Grants(secrets=False).cover(in_secrets)
