"""nodePublishSecretRef Secrets from a watch (issue 26), against a real API server, under
kvmount's RBAC with `rotation.watchSecrets` (deploy/driver/rbac-secret-watch.yaml) bound to a
ServiceAccount of this test's own: the labelled Secrets this node's pods name are held and kept
current by one watch, a rotation reads them without a request, and an unlabelled one still
works by a GET."""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as _client

from kvmount.driver.rotation import Rotator
from kvmount.driver.rotation_path import RotationPath
from kvmount.kube.node_caches import SECRET_USED_LABEL
from tests.driver.test_api_cost import STATUSES, Node, mounted, synced
from tests.driver.test_rotation import (  # noqa: F401 (stack: a fixture)
    REPO,
    Stack,
    in_process_publisher,
    stack,
)
from tests.support import eventually

k8s: Any = _client


@pytest.fixture
def watcher(
    stack: Stack,  # noqa: F811
    tmp_path: Path,
    kubelet_dir: Path,
) -> Iterator[tuple[Node, str]]:
    """The driver's parts in this process as a ServiceAccount bound to the driver's roles and the
    Secret watch role (the session's driver account stays without it); its user name."""
    kube, namespace, account = stack.kube, f"watcher-{uuid.uuid4().hex[:6]}", "driver"
    k8s.CoreV1Api(kube.admin).create_namespace({"metadata": {"name": namespace}})
    k8s.CoreV1Api(kube.admin).create_namespaced_service_account(namespace, {"metadata": {"name": account}})
    for file in ("rbac.yaml", "rbac-secret-watch.yaml"):
        for doc in kube.apply_yaml(REPO / "deploy" / "driver" / file):
            if doc["kind"] == "ClusterRoleBinding":
                doc["metadata"] = {"name": f"{doc['metadata']['name']}-{namespace}"}
                doc["subjects"] = [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
                kube.apply(doc)
    token = kube.service_account_token(namespace, account)
    kubeconfig = kube.write_kubeconfig(tmp_path / "watcher.kubeconfig", token)
    own = dataclasses.replace(stack, driver_kubeconfig=kubeconfig)
    store, publisher = in_process_publisher(own, tmp_path / "state", kubelet_dir)
    try:
        yield (
            Node(own, store, publisher, Rotator(publisher, store, "test-node", 3600.0)),
            f"system:serviceaccount:{namespace}:{account}",
        )
    finally:
        for state in publisher.served_volumes():
            publisher.unpublish(state.volume_id, state.target_path)
        publisher.providers.close()


def label(core: Any, namespace: str, name: str, value: str | None) -> None:
    core.patch_namespaced_secret(name, namespace, {"metadata": {"labels": {SECRET_USED_LABEL: value}}})


def test_labelled_node_publish_secrets_come_from_the_watch(
    watcher: tuple[Node, str], kubelet_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node, user = watcher

    def calls(mark: int) -> Counter[tuple[str, str]]:
        return Counter((verb, resource) for verb, resource, _ in node.stack.kube.requests(user, mark))

    stop = threading.Event()
    start = node.stack.kube.audit_mark()
    node.store.start_watches(stop)
    caplog.set_level(logging.INFO, logger="kvmount.driver")
    assert node.rotator.choose_path(node.store, rotating=False) is RotationPath.DRIVER
    assert not node.rotator.grants.watch_secrets  # the refresh annotation alone: no watch
    assert node.rotator.choose_path(node.store) is RotationPath.DRIVER
    assert node.rotator.grants.watch_secrets
    said = [r.__dict__["node_publish_secrets"] for r in caplog.records if r.getMessage() == "rotation path"]
    assert said == ["get", "watch"]
    node.store.start_secret_watch(stop)
    try:
        caches = node.store.caches
        assert caches is not None
        secrets = caches.secrets
        assert secrets is not None
        eventually(lambda: synced(caches) and secrets.synced.is_set(), timeout=30, what="caches synced")
        ns, _, _ = mounted(node, kubelet_dir)
        eventually(lambda: caches.pods.get(ns.name, "web"), timeout=30, what="pod in the cache")
        label(ns.core, ns.name, "sp", "true")
        eventually(lambda: secrets.get(ns.name, "sp"), timeout=30, what="the labelled Secret held")
        node.poll()  # the first poll asks for the pod's tokens
        polls = node.stack.kube.audit_mark()
        node.poll()
        node.poll()
        assert calls(polls) == {}  # not even the nodePublishSecretRef Secret
        watched = {r for (verb, r), _ in calls(start).items() if verb == "watch"}
        assert watched == {"pods", "secretproviderclasses", STATUSES, "secrets"}

        # Changed credentials are seen as they change; a labelled Secret no pod here names is not held.
        mark = node.stack.kube.audit_mark()
        ns.core.create_namespaced_secret(
            ns.name, {"metadata": {"name": "other", "labels": {SECRET_USED_LABEL: "true"}}}
        )
        ns.core.patch_namespaced_secret("sp", ns.name, {"stringData": {"note": "changed"}})
        eventually(
            lambda: node.store.node_publish_secret(ns.name, "sp").get("note") == "changed",
            timeout=30,
            what="the change seen",
        )
        assert secrets.get(ns.name, "other") is None  # its event came before sp's change
        assert calls(mark)[("get", "secrets")] == 0

        # Without the label it leaves the watch, and is read by a GET per rotation again.
        label(ns.core, ns.name, "sp", None)
        eventually(
            lambda: secrets.get(ns.name, "sp") is None, timeout=30, what="the unlabelled Secret dropped"
        )
        mark = node.stack.kube.audit_mark()
        node.poll()
        assert calls(mark) == {("get", "secrets"): 1}
        assert node.store.node_publish_secret(ns.name, "sp")["clientid"] == ns.client_id
    finally:
        stop.set()
