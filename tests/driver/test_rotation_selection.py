"""Selection (objectTags / objectNamePattern) through the driver's rotation: objects that start or
stop matching appear and disappear, the pod status lists exactly the current matches, and
secretObjects may take a match's file. Every part real, as in test_rotation.py."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path
from typing import Any

from tests.driver.conftest import Driver, eventually
from tests.driver.test_rotation import GROUP, INTERVAL, VAULT, Namespace, Stack, k8s, rotating, stack

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
    eventually(lambda: mounted_files(pod.target) == {f"sel/{b}", f"sel/{c}"}, INTERVAL + 5, "matches rotated")
    assert (pod.target / "sel" / c).read_text() == "C"

    def status_objects() -> dict[str, str]:
        status = k8s.CustomObjectsApi(ns.api).get_namespaced_custom_object(
            GROUP, "v1", ns.name, "secretproviderclasspodstatuses", f"web-{ns.name}-kv"
        )
        return {o["id"]: o["version"] for o in status["status"]["objects"]}

    expected = {f"secret/{b}": version_of(stack, b), f"secret/{c}": version_of(stack, c)}
    eventually(lambda: status_objects() == expected, 10, "the pod status lists exactly the matches")
    rotating.node.NodeUnpublishVolume(pod.unpublish_request(), timeout=30)
