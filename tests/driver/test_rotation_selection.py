"""Selection (objectTags / objectNamePattern) through the driver's rotation: objects that start or
stop matching appear and disappear, the pod status lists exactly the current matches, and
secretObjects may take a match's file; and a class's own rotation period
(kvmount.io/rotation-poll-interval). Every part real, as in test_rotation.py."""

from __future__ import annotations

import base64
import os
import secrets
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest

from kvmount.kube.classes import ROTATION_INTERVAL_ANNOTATION
from tests.driver.conftest import Driver, stop_driver
from tests.driver.test_rotation import (
    GROUP,
    INTERVAL,
    VAULT,
    Namespace,
    Stack,
    k8s,
    kube_driver,
    rotating,
    stack,
)
from tests.support import eventually

__all__ = ["rotating", "stack"]  # the fixtures, shared with test_rotation.py


def mounted_files(target: Path) -> set[str]:
    """The files a pod sees in its volume (the writer's own ..data entries left out)."""
    found = set()
    for root, dirs, names in os.walk(target, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith("..")]
        found |= {os.path.relpath(os.path.join(root, n), target) for n in names if not n.startswith("..")}
    return found


def version_of(stack: Stack, name: str) -> str:
    return str(stack.kv.vault_call(VAULT, "GET", f"/secrets/{name}")["id"].rsplit("/", 1)[1])


def test_objects_that_start_or_stop_matching_are_picked_up_by_rotation(
    stack: Stack, rotating: Driver, kubelet_dir: Path
) -> None:
    ns, tag = Namespace(stack), secrets.token_hex(4)
    a, b, c = (f"sel-{tag}-{x}" for x in "abc")
    stack.kv.put_secret(VAULT, a, "A", tags={"rot": tag})
    stack.kv.put_secret(VAULT, b, "B", tags={"rot": tag})
    stack.kv.put_secret(VAULT, c, "C", tags={"rot": "not-yet"})
    selection: dict[str, Any] = {"objectTags": {"rot": tag}, "objectType": "secret", "objectAlias": "sel"}
    sync = [{"secretName": "picked", "type": "Opaque", "data": [{"objectName": f"sel/{b}", "key": "b"}]}]
    ns.create_class("kv", [selection], sync)
    pod = ns.create_pod(kubelet_dir, "web", "kv")
    ns.publish(rotating, pod, "kv")
    assert mounted_files(pod.target) == {f"sel/{a}", f"sel/{b}"}
    assert base64.b64decode(ns.secret("picked").data["b"]) == b"B"

    # c is re-tagged into the selection, a disabled out of it.
    stack.kv.update(VAULT, "secrets", c, version_of(stack, c), {"tags": {"rot": tag}})
    stack.kv.update(VAULT, "secrets", a, version_of(stack, a), {"attributes": {"enabled": False}})
    eventually(
        lambda: mounted_files(pod.target) == {f"sel/{b}", f"sel/{c}"},
        timeout=INTERVAL + 5,
        what="matches rotated",
    )
    assert (pod.target / "sel" / c).read_text() == "C"

    def status_objects() -> dict[str, str]:
        status = k8s.CustomObjectsApi(ns.api).get_namespaced_custom_object(
            GROUP, "v1", ns.name, "secretproviderclasspodstatuses", f"web-{ns.name}-kv"
        )
        return {o["id"]: o["version"] for o in status["status"]["objects"]}

    expected = {f"secret/{b}": version_of(stack, b), f"secret/{c}": version_of(stack, c)}
    eventually(
        lambda: status_objects() == expected, timeout=10, what="the pod status lists exactly the matches"
    )
    rotating.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=30)


@pytest.mark.parametrize(
    ("flags", "fast_is_annotated"),
    [
        # The driver's own period is an hour; the annotated class rotates every second.
        (("--rotation-poll-interval=1h", "--min-rotation-poll-interval=1s"), True),
        # The driver's floor is an hour: the annotation's second is raised to it.
        (("--rotation-poll-interval=1s", "--min-rotation-poll-interval=1h"), False),
    ],
    ids=["annotated-faster", "raised-to-the-floor"],
)
def test_a_class_rotates_at_the_pace_of_its_annotation(
    stack: Stack, tmp_path: Path, kubelet_dir: Path, flags: tuple[str, ...], fast_is_annotated: bool
) -> None:
    driver = kube_driver(stack, tmp_path / "drv", "--enable-secret-rotation", *flags)
    try:
        ns = Namespace(stack)
        names = {c: f"{c}-{secrets.token_hex(4)}" for c in ("annotated", "plain")}
        for c, name in names.items():
            stack.kv.put_secret(VAULT, name, "one")
            ns.create_class(c, [{"objectName": name, "objectType": "secret"}])
        k8s.CustomObjectsApi(ns.api).patch_namespaced_custom_object(
            GROUP, "v1", ns.name, "secretproviderclasses", "annotated",
            {"metadata": {"annotations": {ROTATION_INTERVAL_ANNOTATION: "1s"}}},
        )  # fmt: skip
        pods = {c: ns.create_pod(kubelet_dir, f"web-{c}", c) for c in names}
        for c, pod in pods.items():
            ns.publish(driver, pod, c)
        fast, slow = ("annotated", "plain") if fast_is_annotated else ("plain", "annotated")
        for value in ("two", "three"):  # two rotations of the fast class...
            for name in names.values():
                stack.kv.put_secret(VAULT, name, value)
            rotated = partial(lambda v: (pods[fast].target / names[fast]).read_text() == v, value)
            eventually(rotated, timeout=10, what=f"{fast} class: {value}")
        # ...while the other class waits for its hour.
        assert (pods[slow].target / names[slow]).read_text() == "one"
    finally:
        stop_driver(driver)


def test_a_rotation_annotation_that_is_no_period_fails_the_mount_naming_it(
    stack: Stack, rotating: Driver, kubelet_dir: Path
) -> None:
    ns = Namespace(stack)
    name = f"s-{secrets.token_hex(4)}"
    stack.kv.put_secret(VAULT, name, "v")
    ns.create_class("kv", [{"objectName": name, "objectType": "secret"}])
    for bad in ("soon", "500ms"):
        k8s.CustomObjectsApi(ns.api).patch_namespaced_custom_object(
            GROUP, "v1", ns.name, "secretproviderclasses", "kv",
            {"metadata": {"annotations": {ROTATION_INTERVAL_ANNOTATION: bad}}},
        )  # fmt: skip
        pod = ns.create_pod(kubelet_dir, f"web-{bad}", "kv")
        with pytest.raises(grpc.RpcError) as caught:
            ns.publish(rotating, pod, "kv")
        assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION  # as any class it cannot read
        assert ROTATION_INTERVAL_ANNOTATION in (caught.value.details() or "")
