"""The sync controller's guard rails: what the API server refuses its identity, and leader failover."""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as _client

from tests.provider.conftest import VAULT
from tests.support import eventually
from tests.synccontroller.conftest import (
    AUDIENCE,
    CONTROLLER_SA,
    LEASE,
    SYSTEM,
    Cluster,
    holder_pid,
    lease_holder,
)
from tests.synccontroller.test_sync_controller import decoded, setup_namespace, sync_manifest

k8s: Any = _client


def test_admission_policies_refuse_the_controllers_forbidden_writes(cluster: Cluster) -> None:
    """Each write the controller must never make, tried with the controller's own identity."""
    namespace = cluster.namespace()
    cluster.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "users"}, "stringData": {"a": "b"}}
    )
    as_controller = k8s.CoreV1Api(cluster.api.api_client(cluster.controller_kubeconfig))
    owner = {"apiVersion": "secret-sync.x-k8s.io/v1alpha1", "kind": "SecretSync", "uid": str(uuid.uuid4())}
    label = {"secrets-store.sync.x-k8s.io": ""}

    def refused(call: Any) -> str:
        try:
            call()
        except k8s.ApiException as err:
            # A policy's refusal is 403, or 422 for a validation without a reason (as upstream's).
            return str(err.body) if err.status in (403, 422) else f"HTTP {err.status}"
        return ""

    # A new name each time: a Secret made before the policies took effect must not hide them (409).
    unowned = {"metadata": {"generateName": "unowned-", "labels": label}, "stringData": {"a": "b"}}

    # Policies reach the API server's admission a moment after they are created: wait on that.
    def create_unowned() -> Any:
        return as_controller.create_namespaced_secret(namespace, unowned)

    eventually(
        lambda: "single secretsync owner" in refused(create_unowned),
        timeout=30,
        what="an unowned Secret is refused",
    )
    token_type = {
        "metadata": {
            "name": "tok",
            "labels": label,
            "ownerReferences": [{**owner, "name": "tok"}],
            "annotations": {"kubernetes.io/service-account.name": "default"},
        },
        "type": "kubernetes.io/service-account-token",
    }
    refusal = refused(lambda: as_controller.create_namespaced_secret(namespace, token_type))
    assert "with kubernetes.io/service-account-token type" in refusal, refusal
    bootstrap = {
        "metadata": {"name": "boot", "labels": label, "ownerReferences": [{**owner, "name": "boot"}]},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": {"token-id": "abcdef", "token-secret": "0123456789abcdef"},
    }
    refusal = refused(lambda: as_controller.create_namespaced_secret(namespace, bootstrap))
    assert "with bootstrap.kubernetes.io/token type" in refusal, refusal
    # RBAC lets the controller patch Secrets (server-side apply); the policies stop a take-over.
    take_over = {"metadata": {"labels": label, "ownerReferences": [{**owner, "name": "users"}]}}
    taken = refused(lambda: as_controller.patch_namespaced_secret("users", namespace, take_over))
    assert "secrets-store-sync-controller has failed to UPDATE" in taken, taken
    # A real owner, so that the garbage collector keeps the Secret (its class is missing: nothing syncs it).
    real = cluster.secret_sync(
        namespace, sync_manifest("ok", "absent", "app", [{"sourcePath": "a", "targetKey": "a"}])
    )
    real_owner = {**owner, "uid": real["metadata"]["uid"], "name": "ok"}
    owned = {"metadata": {"name": "ok", "labels": label, "ownerReferences": [real_owner]}}
    as_controller.create_namespaced_secret(namespace, owned)  # allowed: what the controller does
    # RBAC grants no delete; were it granted by mistake, the policy still refuses.
    by_rbac = refused(lambda: as_controller.delete_namespaced_secret("ok", namespace))
    assert "forbidden" in by_rbac and "not allowed to delete" not in by_rbac
    rbac = k8s.RbacAuthorizationV1Api(cluster.api.admin)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "too-much"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["delete"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "too-much"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "too-much"},
            "subjects": [{"kind": "ServiceAccount", "name": CONTROLLER_SA, "namespace": SYSTEM}],
        },
    )

    def delete() -> Any:
        return as_controller.delete_namespaced_secret("ok", namespace)

    eventually(
        lambda: "not allowed to delete secrets" in refused(delete),
        timeout=30,
        what="the policy, not RBAC, refuses the delete",
    )
    assert cluster.secret(namespace, "ok") is not None

    # Tokens for Azure AD only: a token for the API server would let it act as that account.
    cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": "admin-like"}})

    def token(*audiences: str, seconds: int = 600) -> Any:
        body = {"spec": {"audiences": list(audiences), "expirationSeconds": seconds}}
        return as_controller.create_namespaced_service_account_token("admin-like", namespace, body)

    api_token = refused(lambda: token(cluster.api.issuer))
    assert "may request tokens only for one of the audiences" in api_token, api_token
    # As upstream's policy: one audience, 600 s.
    assert "600 s" in refused(lambda: token(AUDIENCE, seconds=3600))
    assert "600 s" in refused(lambda: token(AUDIENCE, AUDIENCE + "2"))
    assert token(AUDIENCE).status.token  # allowed: what a sync hands the provider


def test_leader_failover_keeps_syncing(cluster: Cluster) -> None:
    election = [
        "--leader-elect=true",
        "--leader-elect-lease-duration=4s",
        "--leader-elect-renew-deadline=3s",
        "--leader-elect-retry-period=1s",
    ]
    cluster.stop_controllers()  # only the two replicas below run
    first, second = cluster.start_controller(*election), cluster.start_controller(*election)
    namespace, kv_name = setup_namespace(cluster, "before")
    cluster.secret_sync(
        namespace, sync_manifest("ha", "kv", "app", [{"sourcePath": "password", "targetKey": "pw"}])
    )
    eventually(lambda: cluster.secret(namespace, "ha") is not None, timeout=60, what="the leader syncs")
    holder = lease_holder(cluster)
    leader = next(c for c in (first, second) if c.process.pid == holder_pid(holder))
    follower = second if leader is first else first
    # Only the leader works: the follower waits for the Lease and syncs nothing.
    assert "leader: leading " in leader.log.read_text()
    assert "leader: leading " not in follower.log.read_text()
    assert "reconcile: synced " not in follower.log.read_text()
    os.kill(leader.process.pid, signal.SIGKILL)
    leader.process.wait()
    cluster.kv.put_secret(VAULT, kv_name, "after")
    eventually(
        lambda: holder_pid(lease_holder(cluster)) == follower.process.pid,
        timeout=30,
        what="the follower takes the lease",
    )
    eventually(
        lambda: decoded(cluster.secret(namespace, "ha"), "pw") == "after",
        timeout=40,
        what="the new leader syncs",
    )
    cluster.stop_controllers()


def _lease_spec(cluster: Cluster) -> Any:
    return k8s.CoordinationV1Api(cluster.api.admin).read_namespaced_lease(LEASE, SYSTEM).spec


def test_a_clean_stop_releases_the_lease(cluster: Cluster) -> None:
    """SIGTERM: the leader finishes, empties the Lease's holder, and the waiting replica takes it at
    once, long before the 120 s lease duration would have let it (the elector on kube/rest.py does
    what client-go's does with ReleaseOnCancel)."""
    election = [
        "--leader-elect=true",
        "--leader-elect-lease-duration=120s",
        "--leader-elect-renew-deadline=10s",
        "--leader-elect-retry-period=1s",
    ]
    cluster.stop_controllers()
    first = cluster.start_controller(*election)
    eventually(
        lambda: holder_pid(lease_holder(cluster)) == first.process.pid, timeout=60, what="the first leads"
    )
    held = _lease_spec(cluster)
    assert held.lease_duration_seconds == 120
    assert held.acquire_time is not None and held.renew_time is not None
    second = cluster.start_controller(*election)
    eventually(
        lambda: "leader: waiting for the lease" in second.log.read_text(), timeout=60, what="the second waits"
    )
    renewed = held.renew_time
    eventually(lambda: _lease_spec(cluster).renew_time > renewed, timeout=10, what="the leader renews")
    assert holder_pid(lease_holder(cluster)) == first.process.pid
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(timeout=40) == 0
    assert "leader: released the lease" in first.log.read_text()
    eventually(
        lambda: holder_pid(lease_holder(cluster)) == second.process.pid,
        timeout=20,
        what="the second takes it",
    )
    taken = _lease_spec(cluster)
    assert taken.lease_duration_seconds == 120
    assert taken.lease_transitions == (held.lease_transitions or 0) + 1
    cluster.stop_controllers()


def test_a_lease_held_elsewhere_is_taken_only_once_it_stops_changing(cluster: Cluster) -> None:
    """Another holder's Lease, renewed, is left alone however old its renewTime looks; once it
    stops changing it is taken after the holder's leaseDurationSeconds (3 s), counted on the
    taker's clock, not after the taker's own 60 s."""
    cluster.stop_controllers()
    leases = k8s.CoordinationV1Api(cluster.api.admin)
    with contextlib.suppress(k8s.ApiException):
        leases.delete_namespaced_lease(LEASE, SYSTEM)
    # An hour-old renewTime: only a change seen by the taker proves the holder alive.
    stale = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    spec = {
        "holderIdentity": "elsewhere_1",
        "leaseDurationSeconds": 3,
        "renewTime": stale,
        "leaseTransitions": 4,
    }
    leases.create_namespaced_lease(SYSTEM, {"metadata": {"name": LEASE}, "spec": spec})
    controller = cluster.start_controller(
        "--leader-elect=true",
        "--leader-elect-lease-duration=60s",
        "--leader-elect-renew-deadline=10s",
        "--leader-elect-retry-period=1s",
    )
    eventually(
        lambda: "leader: waiting for the lease" in controller.log.read_text(), timeout=60, what="it waits"
    )
    for _ in range(6):  # the holder renews every second, as a live one would
        lease = leases.read_namespaced_lease(LEASE, SYSTEM)
        assert lease.spec.holder_identity == "elsewhere_1"
        lease.spec.renew_time = stale = stale + datetime.timedelta(seconds=1)
        leases.replace_namespaced_lease(LEASE, SYSTEM, lease)
        time.sleep(1)
    stopped = time.monotonic()
    eventually(
        lambda: holder_pid(lease_holder(cluster)) == controller.process.pid,
        timeout=30,
        what="it takes the lease",
    )
    assert time.monotonic() - stopped < 20, "taken after the holder's duration, not the taker's"
    taken = _lease_spec(cluster)
    assert (taken.lease_duration_seconds, taken.lease_transitions) == (60, 5)
    cluster.stop_controllers()


@pytest.mark.peer
def test_a_kubeconfig_that_runs_a_program_is_refused_at_start(tmp_path: Path) -> None:
    """The controller's own client runs no credential program: it says so, naming the field, and
    stops (a program would otherwise be looked for in every list, for ever)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"exec": {"command": "kubelogin"}}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "kvmount.cli", "sync-controller", f"--kubeconfig={kubeconfig}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = done.stderr.splitlines()
    assert line.startswith("kvmount sync-controller: cannot configure the Kubernetes API client: ")
    assert "user 'u': exec credentials are not supported here" in line
