"""Mount latency of the provider's Key Vault pipeline, against the Key Vault double with added latency.

Prints, for 1, 10 and 50 objects, the time of one mount done the kvmount way
(objects fetched concurrently, credentials and clients reused across mounts)
and two baselines measured in the same run on the same double:

* ``sequential``: the same code with one fetch in flight (upstream fetches one
  object after another);
* ``upstream-like``: sequential and with a fresh credential and client for
  every mount (upstream builds new credentials on every Mount call).

Only ratios are meaningful; absolute times depend on the machine.

    python bench/mount_bench.py [--latency-ms 20] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from kvmount.keyvault.mount import KeyVaultMounter, Settings
from tests.peers.keyvault_double import KeyVaultDouble

VAULT = "kvbench"


def attributes(kv: KeyVaultDouble, env_file: str, names: list[str]) -> dict[str, str]:
    return {
        "keyvaultName": VAULT,
        "tenantID": kv.tenant,
        "cloudName": "AzureStackCloud",
        "cloudEnvFileName": env_file,
        "objects": yaml.safe_dump(
            {"array": [yaml.safe_dump({"objectName": n, "objectType": "secret"}) for n in names]}
        ),
    }


def timed(call: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, KeyVaultDouble(state_dir=tmp).start() as kv:
        os.environ.update(kv.env())
        env_file = kv.write_cloud_env(os.path.join(tmp, "cloud.json"))
        secrets = {"clientid": "bench-app", "clientsecret": "bench-secret"}
        kv.register_aad_client("bench-app", secret="bench-secret")
        names = [f"bench-{i}" for i in range(50)]
        for name in names:
            kv.put_secret(VAULT, name, f"value of {name}")
        kv.set_latency(args.latency_ms)
        # Coalescing off: it would answer the repeated mounts from its window, measuring no fetch.
        concurrent = KeyVaultMounter(Settings(max_concurrency=8, coalesce_seconds=0))
        sequential = KeyVaultMounter(Settings(max_concurrency=1, coalesce_seconds=0))

        def upstream_like(attrs: dict[str, str]) -> None:
            fresh = KeyVaultMounter(Settings(max_concurrency=1, coalesce_seconds=0))
            try:
                fresh.mount_attributes(attrs, secrets, 0o644)
            finally:
                fresh.close()

        print(f"latency {args.latency_ms} ms per Key Vault request, median of {args.repeat} mounts")
        header = ("objects", "kvmount", "sequential", "upstream-like", "x seq", "x upstream")
        print("{:>7} {:>10} {:>11} {:>14} {:>7} {:>10}".format(*header))
        for count in (1, 10, 50):
            attrs = attributes(kv, env_file, names[:count])
            for mounter in (concurrent, sequential):
                mounter.mount_attributes(attrs, secrets, 0o644)  # warm: token and connections
            ours = timed(partial(concurrent.mount_attributes, attrs, secrets, 0o644), args.repeat)
            seq = timed(partial(sequential.mount_attributes, attrs, secrets, 0o644), args.repeat)
            base = timed(partial(upstream_like, attrs), args.repeat)
            print(
                f"{count:>7} {ours * 1000:>8.1f}ms {seq * 1000:>9.1f}ms {base * 1000:>12.1f}ms "
                f"{seq / ours:>6.1f}x {base / ours:>9.1f}x"
            )
        concurrent.close()
        sequential.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
