"""What each CSI driver costs the API server (issue 26), side by side: kvmount's driver,
upstream's v1.6.1 and upstream's v1.5.6, each against a real kube-apiserver of its own.

    python bench/api_load.py --nodes 2 --volumes 110             # the three drivers, ~6 min
    python bench/api_load.py --nodes 20 --volumes 10 --drivers kvmount

M simulated nodes (one driver process per node id, each its own client certificate, so the
audit log names the node of every request) and N pods per node; the stand-in kubelet of
bench/api_nodes.py publishes every volume, then, where the driver's CSIDriver says
requiresRepublish, re-publishes each once per --republish seconds (as kubelet's pod sync does
every minute or so against the 2-minute poll). Phases, each a window of the audit log:

* start-up: the drivers start, nothing published;
* first publish: every volume published once, until the synced Secret exists;
* warm-up: --warmup polls and one re-publish round (first rotation polls, token requests);
* steady: --polls rotation polls, nothing changed;
* every object changed once: the provider's objects all change; until every volume and the
  synced Secret show it, then one more poll and re-publish round.

Results go to bench/api-load/<M>x<N>.json (a run of some drivers replaces theirs, a run with
other settings the whole file) and, from every such file, to the section "API server
(issue 26)" of bench/RESULTS.md. Needs root (tmpfs mounts), kube-apiserver
(scripts/peers/kube-apiserver.sh), helm, upstream's drivers (built on demand:
scripts/install-peers --bench).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import api_cluster as cluster
from bench import api_report, audit, procstat
from bench.api_nodes import CONTENDERS, Contender, Kubelet, NodeDriver
from bench.compare import machine
from kvmount.volume import mounts
from tests.peers.e2e_provider import E2EProvider
from tests.peers.kube import KubeAPIServer
from tests.support import eventually

HERE = Path(__file__).resolve().parent


def flush(api: KubeAPIServer) -> int:
    """An offset of the audit log by which every request answered so far is in it: a GET of a
    unique name is sent last and waited for (an event is written as its response completes);
    the offset is the end of that GET's line."""
    marker = f"audit-mark-{os.urandom(6).hex()}"
    start = api.audit_log.stat().st_size
    try:
        cluster.k8s.CoreV1Api(api.admin).read_namespace(marker)
    except cluster.k8s.ApiException as err:
        if err.status != 404:
            raise

    def logged() -> int | None:
        with open(api.audit_log, "rb") as log:
            log.seek(start)
            data = log.read()
        at = data.find(marker.encode())
        end = data.find(b"\n", at) if at >= 0 else -1
        return start + end + 1 if end >= 0 else None  # the marker's whole line, never half a line

    return eventually(logged, timeout=30, what=f"the audit event of {marker}")


class Phase:
    """One window of the audit log: the drivers' and the kubelets' requests in it."""

    def __init__(self, api: KubeAPIServer, provider: E2EProvider | None = None) -> None:
        self.api, self.provider = api, provider
        self.warned = cluster.warnings(api)
        self.mounts = len(provider.servicer.mounts) if provider else 0
        self.since, self.began = flush(api), time.monotonic()

    def close(self) -> dict[str, Any]:
        until, seconds = flush(self.api), time.monotonic() - self.began
        found = audit.calls(audit.read(self.api.audit_log, self.since, until))
        drivers = audit.by_user(found, cluster.DRIVER_USER)
        now = cluster.warnings(self.api)
        return {
            "seconds": round(seconds, 2),
            "driver": audit.tally(drivers),
            "kubelet": audit.tally(audit.by_user(found, cluster.KUBELET_USER)),
            "conflicts": audit.conflicts(drivers),
            # Writes the API server refused (409): requests, not writes that changed anything.
            "refused_writes": audit.tally(c for c in drivers if c.code == 409),
            "refused": sum(1 for c in drivers if c.code >= 400 and c.code not in (404, 409)),
            "per_node": audit.per_user(drivers),
            "warnings": {r: n - self.warned.get(r, 0) for r, n in now.items() if n > self.warned.get(r, 0)},
            "provider_mounts": (len(self.provider.servicer.mounts) - self.mounts) if self.provider else 0,
        }


def run(contender: Contender, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    contender.install()
    api = KubeAPIServer(work / "kube").start()
    drivers: dict[str, NodeDriver] = {}
    provider: E2EProvider | None = None
    kubelet: Kubelet | None = None
    stop = threading.Event()
    republisher: threading.Thread | None = None
    poll, republish = args.poll, args.republish
    try:
        version = cluster.kube_version(api)
        ours = cluster.kvmount_chart(version)
        charted = (
            cluster.upstream_chart(contender.chart_version, version) if contender.chart_version else ours
        )
        csidriver = cluster.csidriver(charted)
        pods = cluster.setup(api, cluster.driver_rbac(charted), csidriver, args.nodes, args.volumes)
        providers = work / "providers"
        providers.mkdir()
        # v1.5.x sends the socket's path as :authority; v1.6 and kvmount send localhost.
        provider = E2EProvider(providers / f"{cluster.PROVIDER}.sock", strict_authority=False).start()
        provider.control("/validate-token-requests?audience=" + ",".join(cluster.AUDIENCES))
        spec = csidriver["spec"]
        result: dict[str, Any] = {
            "requires_republish": bool(spec.get("requiresRepublish")),
            "tokens_in_secrets": bool(spec.get("serviceAccountTokenInSecrets")),
        }
        phase = Phase(api, provider)
        for i in range(args.nodes):
            node = cluster.node_name(i)
            home = work / node
            home.mkdir()
            user = cluster.DRIVER_USER + node
            config = cluster.kubeconfig(api, home / "driver.kubeconfig", user, cluster.DRIVER_GROUP)
            drivers[node] = NodeDriver(contender, node, home, config, providers, poll)
        result["start"] = phase.close()
        kubelet = Kubelet(drivers, pods, csidriver)
        for node in drivers:
            user = cluster.KUBELET_USER + node
            config = cluster.kubeconfig(api, work / node / "kubelet.kubeconfig", user, cluster.KUBELET_GROUP)
            kubelet.connect(node, config)

        phase = Phase(api, provider)
        kubelet.publish_all(args.parallel)
        eventually(lambda: cluster.synced_secret(api), timeout=120, what="the synced Secret")
        result["first"] = phase.close()
        result["rss"] = [round(procstat.rss_mib(d.pid), 1) for d in drivers.values()]

        phase = Phase(api, provider)
        if kubelet.republishes:
            republisher = kubelet.republishing(republish, stop)
        stop.wait(args.warmup * poll + republish)  # a window of the log by design: the first polls
        result["warmup"] = phase.close()

        def cpu() -> float:
            return sum(procstat.cpu_seconds(d.pid) for d in drivers.values())

        spent = cpu()
        phase = Phase(api, provider)
        stop.wait(args.polls * poll)  # the steady window
        result["steady"] = phase.close() | {"driver_cpu": round(cpu() - spent, 2)}
        every = audit.by_user(audit.calls(audit.read(api.audit_log)), cluster.DRIVER_USER)
        result["watches"] = audit.open_watches(every)
        result["watch_kinds"] = audit.tally(c for c in every if c.verb == "watch" and not c.ended)

        phase = Phase(api, provider)
        began = time.monotonic()
        provider.control("/rotation?rotated=true")

        def seen() -> bool:
            secret = cluster.synced_secret(api) or {}
            return secret.get("value") == "rotated" and kubelet is not None and kubelet.rotated() == len(pods)

        eventually(seen, timeout=3 * max(poll, republish) + 120, what="every volume and the Secret rotated")
        took = time.monotonic() - began
        stop.wait(max(poll, republish))  # one more poll and re-publish round: what comes after
        result["changed"] = phase.close() | {"took": round(took, 1)}
        for d in drivers.values():
            d.alive()
        result["publishes"] = kubelet.publishes
        result["publish_errors"] = len(kubelet.errors)
        result["publish_error_sample"] = kubelet.errors[:5]
        return result
    finally:
        stop.set()
        if republisher is not None:
            republisher.join()
        if kubelet is not None:
            kubelet.unpublish_all()
            kubelet.close()
        for d in drivers.values():
            d.stop()
        for point in sorted(mounts.mount_points(), reverse=True):
            if point.startswith(f"{work}{os.sep}"):
                mounts.unmount(point)
        if provider is not None:
            provider.stop()
        api.stop()


def record(path: Path, settings: dict[str, Any], measured: dict[str, Any]) -> dict[str, Any]:
    """Merge this run's drivers into the file of its configuration (other settings: replaced)."""
    old = json.loads(path.read_text()) if path.exists() else {}
    kept = old.get("contenders", {}) if all(old.get(k) == v for k, v in settings.items()) else {}
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    data = {**settings, "machine": machine(), "when": when, "contenders": {**kept, **measured}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return data


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=2, help="simulated nodes, one driver process each")
    parser.add_argument("--volumes", type=int, default=110, help="pods (one volume each) per node")
    every = ",".join(CONTENDERS)
    parser.add_argument("--drivers", default=every, help=f"which, comma-separated (default {every})")
    parser.add_argument("--poll", type=float, default=10.0, help="--rotation-poll-interval, seconds")
    parser.add_argument("--republish", type=float, default=5.0, help="kubelet's re-publish period, seconds")
    parser.add_argument("--polls", type=int, default=3, help="rotation polls in the steady window")
    parser.add_argument(
        "--warmup", type=int, default=1, help="rotation polls before it (more where one poll of every "
        "volume takes the machine longer than the poll interval)",
    )  # fmt: skip
    parser.add_argument("--parallel", type=int, default=8, help="publishes at once per node at first")
    parser.add_argument("--results", type=Path, default=HERE / "api-load", help="where the JSON goes")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="where the section goes")
    args = parser.parse_args()
    names = [n.strip() for n in args.drivers.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown or min(args.nodes, args.volumes, args.polls, args.warmup) < 1:
        parser.error(
            f"--drivers: unknown {unknown}" if unknown else "--nodes, --volumes, --polls, --warmup: >= 1"
        )
    settings = {
        "nodes": args.nodes, "volumes": args.volumes, "poll": args.poll,
        "republish": args.republish, "polls": args.polls, "warmup": args.warmup,
    }  # fmt: skip
    measured = {}
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"kvmount-api-{name}-") as tmp:
            print(f"== {name}: {args.nodes} nodes x {args.volumes} volumes", file=sys.stderr, flush=True)
            measured[name] = run(CONTENDERS[name], args, Path(tmp))
    record(args.results / f"{args.nodes}x{args.volumes}.json", settings, measured)
    runs = [json.loads(p.read_text()) for p in sorted(args.results.glob("*.json"))]
    print(api_report.write(args.out, runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
