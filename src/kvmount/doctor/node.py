"""This node's side: do the driver and the providers answer on their sockets, what do they run,
and which volumes are mounted (tmpfs under kubelet's pods directory)."""

from __future__ import annotations

import glob
import os
import urllib.error
import urllib.request
from collections.abc import Iterator

import grpc

from kvmount.base import unix_grpc
from kvmount.csi.provider_client import ProviderClients, ProviderError
from kvmount.doctor.report import Row, Verdict
from kvmount.proto import csi_pb2 as csi
from kvmount.proto import csi_pb2_grpc as csi_grpc

PROVIDER_DIRS = ("/var/run/secrets-store-csi-providers", "/etc/kubernetes/secrets-store-csi-providers")
DRIVER_SOCKET = "/var/lib/kubelet/plugins/csi-secrets-store/csi.sock"
KUBELET_DIR = "/var/lib/kubelet"
TIMEOUT = 5.0


def driver_rows(socket: str) -> Iterator[Row]:
    """The CSI driver: Probe and GetPluginInfo on its socket."""
    check = "driver socket"
    if not os.path.exists(socket):
        yield Row(
            check,
            Verdict.FAIL,
            f"{socket} does not exist",
            "is the driver running on this node? (--endpoint)",
        )
        return
    with unix_grpc.dial(socket) as channel:
        stub = csi_grpc.IdentityStub(channel)
        try:
            info = stub.GetPluginInfo(csi.GetPluginInfoRequest(), timeout=TIMEOUT)
            probe = stub.Probe(csi.ProbeRequest(), timeout=TIMEOUT)
        except grpc.RpcError as err:
            yield Row(
                check, Verdict.FAIL, f"{socket} does not answer ({err.code().name})", "restart the driver"
            )
            return
    ready = not probe.HasField("ready") or probe.ready.value
    verdict = Verdict.OK if ready else Verdict.FAIL
    yield Row(
        check, verdict, f"{info.name} {info.vendor_version} on {socket}, {'ready' if ready else 'not ready'}"
    )


def provider_rows(directories: list[str]) -> Iterator[Row]:
    """Each provider socket found: does it answer Version, and with what runtime."""
    sockets = sorted({p for d in directories for p in glob.glob(os.path.join(d, "*.sock"))})
    if not sockets:
        yield Row(
            "provider socket",
            Verdict.FAIL,
            f"no provider socket in {', '.join(directories)}",
            "is the provider's pod running on this node? (its --endpoint must be in that directory)",
        )
        return
    clients = ProviderClients(directories, 4 * 1024 * 1024)
    try:
        for socket in sockets:
            name = os.path.basename(socket).removesuffix(".sock")
            try:
                runtime = clients.version(name)
            except ProviderError as err:
                yield Row(f"provider {name}", Verdict.FAIL, str(err), "restart the provider; see its log")
                continue
            yield Row(f"provider {name}", Verdict.OK, f"{runtime} on {socket}")
    finally:
        clients.close()


def health_rows(urls: list[str]) -> Iterator[Row]:
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
                yield Row("health", Verdict.OK, f"{url}: HTTP {response.status}")
        except urllib.error.HTTPError as err:
            yield Row("health", Verdict.FAIL, f"{url}: HTTP {err.code}", "see the component's log")
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            yield Row("health", Verdict.FAIL, f"{url}: unreachable ({reason})", "is the component running?")


def _counts(text: str, name: str) -> tuple[float, dict[str, float]]:
    """A counter's total and its totals by error_type, from Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    total, by_reason = 0.0, dict[str, float]()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{name}_total":
                total += sample.value
                reason = sample.labels.get("error_type", "")
                if reason:
                    by_reason[reason] = by_reason.get(reason, 0.0) + sample.value
    return total, by_reason


def _outcome(text: str, name: str, what: str) -> str:
    done, _ = _counts(text, name)
    failed, reasons = _counts(text, f"{name}_error")
    top = ", ".join(f"{r} x{n:.0f}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:4] if n)
    return f"{what}: {done:.0f} ok, {failed:.0f} failed{f' ({top})' if top else ''}"


def metrics_rows(urls: list[str]) -> Iterator[Row]:
    """The driver's counters since it started: publishes and rotations, failures by reason."""
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
                text = response.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as err:
            yield Row("driver metrics", Verdict.FAIL, f"{url}: unreachable ({getattr(err, 'reason', err)})")
            continue
        publishes, rotations = (
            _outcome(text, "node_publish", "publishes"),
            _outcome(text, "rotation_reconcile", "rotations"),
        )
        failures = _counts(text, "node_publish_error")[0] + _counts(text, "rotation_reconcile_error")[0]
        verdict = Verdict.WARN if failures else Verdict.INFO
        fix = "doctor --pod NS/NAME for a pod that waits" if failures else ""
        yield Row("driver metrics", verdict, f"{publishes}; {rotations}", fix)


def served_mounts(kubelet_dir: str, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """tmpfs mount points of CSI volumes under kubelet's pods directory (what the driver serves)."""
    prefix = os.path.join(kubelet_dir, "pods") + "/"
    found = []
    with open(mountinfo, encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            separator = fields.index("-")
            point = fields[4].replace("\\040", " ")
            if (
                fields[separator + 1] == "tmpfs"
                and point.startswith(prefix)
                and "/kubernetes.io~csi/" in point
            ):
                found.append(point)
    return sorted(found)


def mount_rows(kubelet_dir: str) -> Iterator[Row]:
    mounts = served_mounts(kubelet_dir)
    shown = ", ".join(m.removeprefix(kubelet_dir + "/pods/") for m in mounts[:3])
    more = f" (+{len(mounts) - 3} more)" if len(mounts) > 3 else ""
    yield Row(
        "mounts",
        Verdict.INFO,
        f"{len(mounts)} CSI tmpfs volumes under {kubelet_dir}/pods{': ' if mounts else ''}{shown}{more}",
    )
