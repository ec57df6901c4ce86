"""A Secret many volumes share (issue 26): written only when what the writer last saw of it
differs, a conflict read again and compared, queued owners added in one update. Requests are
counted at the writer's own client, talking to the real kube-apiserver."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client as _client

from kvmount.kube.rest import RestClient
from kvmount.secretsync.seen import SeenSecrets
from kvmount.secretsync.writer import Owner, SecretSync
from tests.secretsync.test_writer import CLASS, FILES, decoded, opaque, owners, read, rest_of
from tests.support import eventually

k8s: Any = _client
ROTATED = {"user": b"admin", "pass": b"rotated"}


class Counting(RestClient):
    """The writer's client, counting the requests it sends (by method). ``gate``, when set,
    holds the first GET until it is opened."""

    def __init__(self, connection: Any, gate: threading.Event | None = None) -> None:
        super().__init__(connection)
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._gate = gate

    def request(self, method: str, where: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        with self._lock:
            self.calls[method] += 1
            gate, self._gate = (self._gate, None) if method == "GET" else (None, self._gate)
        if gate is not None:
            gate.wait(60)
        return super().request(method, where, *args, **kwargs)

    def taken(self) -> Counter[str]:
        """The requests since the last call."""
        with self._lock:
            taken, self.calls = self.calls, Counter()
        return taken


def replica_set(name: str) -> Owner:
    """An owner; no garbage collector runs here, so it need not exist."""
    return Owner(name, str(uuid.uuid4()), "apps/v1", "ReplicaSet")


def test_a_secret_that_matches_costs_no_request(api: Any, rest: RestClient, ns: str) -> None:
    counting = Counting(rest.connection)
    sync = SecretSync(rest_of(counting))
    rs = replica_set("web-5d4f")
    sync.sync(ns, [opaque()], FILES, (rs,), CLASS)
    assert counting.taken() == {"GET": 1, "POST": 1}  # not there yet: created
    for _ in range(3):
        assert sync.sync(ns, [opaque()], dict(FILES), (rs,), CLASS) == ["db"]
    assert counting.taken() == {}

    sync.sync(ns, [opaque()], ROTATED, (rs,), CLASS)
    assert counting.taken() == {"PUT": 1}  # over the version it wrote: no read first
    assert decoded(read(api, ns, "db"))["password"] == b"rotated"


def test_another_node_wrote_it_first_no_second_write(api: Any, rest: RestClient, ns: str) -> None:
    """Two nodes' drivers: the one whose copy is stale is refused (409), reads the Secret
    again, finds it already as wanted and writes nothing; no error."""
    rs = replica_set("web-5d4f")
    one, two = Counting(rest.connection), Counting(rest.connection)
    first, second = SecretSync(rest_of(one)), SecretSync(rest_of(two))
    first.sync(ns, [opaque()], FILES, (rs,), CLASS)
    second.sync(ns, [opaque()], FILES, (rs,), CLASS)
    assert two.taken() == {"GET": 1}  # created by the other: read once, already right
    first.sync(ns, [opaque()], ROTATED, (rs,), CLASS)
    version = read(api, ns, "db").metadata.resource_version

    assert second.sync(ns, [opaque()], ROTATED, (rs,), CLASS) == ["db"]
    assert two.taken() == {"PUT": 1, "GET": 1}
    assert read(api, ns, "db").metadata.resource_version == version
    assert second.sync(ns, [opaque()], ROTATED, (rs,), CLASS) == ["db"]
    assert two.taken() == {}


def test_a_deleted_secret_comes_back_with_the_next_change(api: Any, rest: RestClient, ns: str) -> None:
    rs = replica_set("web-5d4f")
    sync = SecretSync(rest_of(rest))
    sync.sync(ns, [opaque()], FILES, (rs,), CLASS)
    k8s.CoreV1Api(api).delete_namespaced_secret("db", ns)
    assert sync.sync(ns, [opaque()], ROTATED, (rs,), CLASS) == ["db"]
    assert decoded(read(api, ns, "db"))["password"] == b"rotated"


def test_owners_queued_behind_a_write_are_added_in_one(api: Any, rest: RestClient, ns: str) -> None:
    """110 bare pods' volumes (each owned by its own pod status) reach the Secret together:
    the one writing adds every queued owner, so the Secret costs one read and one create."""
    gate = threading.Event()
    counting = Counting(rest.connection, gate)
    sync = SecretSync(rest_of(counting))
    statuses = [Owner(f"web-{i}-{ns}-{CLASS}", str(uuid.uuid4())) for i in range(110)]
    with ThreadPoolExecutor(len(statuses)) as pool:
        done = [pool.submit(sync.sync, ns, [opaque()], FILES, (o,), CLASS) for o in statuses]
        # The first holds the Secret's lock, its read held at the gate; the others queue.
        eventually(lambda: sync.waiting(ns, "db") == len(statuses), timeout=30, what="all queued")
        gate.set()
        assert [d.result(timeout=60) for d in done] == [["db"]] * len(statuses)
    assert counting.taken() == {"GET": 1, "POST": 1}
    assert sorted(uid for *_, uid in owners(read(api, ns, "db"))) == sorted(o.uid for o in statuses)
    assert sync.waiting(ns, "db") == 0


def test_a_copy_is_trusted_for_a_while_without_its_data() -> None:
    secret = {
        "metadata": {"name": "db", "resourceVersion": "7", "managedFields": [{}]},
        "data": {"k": "dg=="},
    }
    seen = SeenSecrets().put("ns/db", secret)
    assert "data" not in seen.secret and seen.secret["metadata"] == {"name": "db", "resourceVersion": "7"}
    assert SeenSecrets().get("ns/db") is None
    expired = SeenSecrets(seen_for=0.0)
    expired.put("ns/db", secret)
    assert expired.get("ns/db") is None and len(expired) == 0
