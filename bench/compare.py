"""kvmount against upstream's binaries, side by side in one run: writes bench/RESULTS.md.

    python bench/compare.py                 # the whole run, a few minutes
    python bench/compare.py --quick         # minimal iterations (a smoke run, numbers meaningless)
    python bench/compare.py --skip-driver   # providers only (no kube-apiserver, no tmpfs)

Needs upstream's provider and driver binaries (scripts/peers/upstream-provider.sh,
scripts/peers/upstream-driver.sh), the Kubernetes API server peer
(scripts/peers/kube-apiserver.sh) and root for the driver part (tmpfs mounts).
Only ratios are meaningful; absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import provider_bench as pb
from bench import report
from bench.contenders import Contender, seed, start_kvmount, start_upstream
from tests.peers.keyvault_double import KeyVaultDouble

HERE = Path(__file__).resolve().parent


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{platform.node()}: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def provider_results(work: Path, quick: bool) -> dict[str, Any]:
    repeat, rounds = (2, 1) if quick else (15, 3)
    results: dict[str, Any] = {}
    kv = KeyVaultDouble.spawn(work / "double")
    contenders: list[Contender] = []
    try:
        vault = seed(kv, work, 50)
        contenders = [
            start_upstream(work / "upstream", kv),
            start_kvmount("kvmount", work / "kvmount", kv),
            start_kvmount("kvmount-fresh", work / "kvmount-fresh", kv, "--coalesce-seconds=0"),
        ]
        results["start"] = {c.name: c.start_seconds for c in contenders}
        results["rss_idle"] = {c.name: c.rss() for c in contenders}
        results["requests"] = pb.requests_per_mount(contenders, vault, 10)
        secrets = vault.identity()
        pb.warm(contenders, vault, secrets)
        results["rss_first"] = {c.name: c.rss() for c in contenders}
        results["latency"] = {}
        for ms in (0, 20):
            kv.set_latency(ms)
            for n in (1, 10, 50):
                results["latency"][(n, ms)] = pb.latency(contenders, vault, secrets, n, repeat)
        kv.set_latency(0)
        results["cpu"] = pb.cpu_per_object(contenders, vault, secrets, 50, 2 if quick else 10, rounds)
        kv.set_latency(20)
        mounts = 20 if quick else 200
        results["throughput"] = pb.throughput(contenders, vault, secrets, 10, 20, mounts, rounds)
        results["rotation"] = pb.rotation(contenders, vault, secrets, 20, 5, 4)
        kv.set_latency(0)
        many = 20 if quick else 1000
        results["many"] = many
        results["rss_after"], results["throughput_0"] = pb.memory_after(
            contenders, vault, secrets, many, 10, 20
        )
    finally:
        for c in contenders:
            c.stop()
        kv.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="minimal iterations: checks the script runs")
    parser.add_argument("--skip-driver", action="store_true", help="providers only")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="where the table goes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kvmount-bench-") as tmp:
        work = Path(tmp)
        results = provider_results(work, args.quick)
        if not args.skip_driver:
            from bench import driver_bench

            results["driver"] = driver_bench.run(work / "driver", args.quick)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(report.write(args.out, results, machine(), when))
    return 0


if __name__ == "__main__":
    sys.exit(main())
