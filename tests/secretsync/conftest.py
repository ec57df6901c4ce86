"""The real kube-apiserver with the Secrets Store CRDs, a namespace per test, the writer's client."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as _client

from kvmount.kube.kubeconfig import from_kubeconfig
from kvmount.kube.rest import RestClient
from tests.peers.kube import KubeAPIServer

k8s: Any = _client
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(kube_apiserver: KubeAPIServer) -> KubeAPIServer:
    for path in sorted((REPO / "deploy" / "crds").glob("*.yaml")):
        kube_apiserver.apply_yaml(path)
    return kube_apiserver


@pytest.fixture
def api(server: KubeAPIServer) -> Iterator[Any]:
    made: Any = server.api_client()
    yield made
    made.close()


@pytest.fixture
def ns(api: Any) -> str:
    name = f"sync-{uuid.uuid4().hex[:8]}"
    k8s.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
def rest(server: KubeAPIServer) -> Iterator[RestClient]:
    """The writer's own client (kube/rest.py), as the admin."""
    made = RestClient(from_kubeconfig([str(server.kubeconfig)]))
    yield made
    made.close()
