"""bench/compare.py's numbers as the measured part of bench/RESULTS.md.

Only the part between the markers is rewritten; the analysis around it is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BEGIN, END = "<!-- measured:begin -->", "<!-- measured:end -->"
NAMES = ("upstream", "kvmount", "kvmount-fresh")
# Key Vault's documented limit for secrets (and vault) transactions, per vault and region.
KV_LIMIT_PER_10S = 4000
POLL_SECONDS = 120  # --rotation-poll-interval, upstream's and kvmount's default


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [row(head), row(["---"] * len(head)), *(row(r) for r in rows), ""]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def check(holds: bool) -> str:
    return "yes" if holds else "**no**"


def _provider(r: dict[str, Any]) -> list[str]:
    head = ["", "upstream", "kvmount (window 5 s)", "kvmount fresh (window 0)", "fresh vs upstream"]
    rows = []
    for (n, ms), by in sorted(r["latency"].items(), key=lambda kv: (kv[0][1], kv[0][0])):
        ratio = by["upstream"] / by["kvmount-fresh"]
        rows.append(
            [f"mount p50, {n} objects, {ms} ms latency", *(_ms(by[x]) for x in NAMES), f"{ratio:.2f}x faster"]
        )
    cpu = r["cpu"]
    rows.append(
        [
            "CPU per object (mounts of 50)",
            *(_ms(cpu[x]) for x in NAMES),
            f"{cpu['kvmount-fresh'] / cpu['upstream']:.2f}x the CPU",
        ]
    )
    for key, label in (("throughput", "20 ms"), ("throughput_0", "0 ms")):
        t = r[key]
        rows.append(
            [
                f"mounts/s, 20 concurrent mounts of 10 objects, {label}",
                *(f"{t[x]:.1f}" for x in NAMES),
                f"{t['kvmount-fresh'] / t['upstream']:.2f}x",
            ]
        )
    rows.append(["start-up to a served socket", *(f"{r['start'][x]:.2f} s" for x in NAMES), ""])
    for key, label in (
        ("rss_idle", "RSS idle (before any mount)"),
        ("rss_first", "RSS after the first mounts"),
        ("rss_after", f"RSS after {r['many']} mounts"),
    ):
        rows.append([label, *(f"{r[key][x]:.1f} MiB" for x in NAMES), ""])
    return table(head, rows)


def _requests(r: dict[str, Any]) -> list[str]:
    head = ["mount of 10 objects", *NAMES]
    rows = []
    for when in ("first", "repeat", "after a change"):
        for kind in ("read", "challenge", "token", "discovery"):
            rows.append([f"{when}: {kind}", *(str(r["requests"][x][when][kind]) for x in NAMES)])
    return table(head, rows)


def _rotation(r: dict[str, Any]) -> list[str]:
    head = ["one poll, 20 pods sharing a class of 5 objects", *NAMES]
    rows = [
        [kind, *(str(r["rotation"][x][kind]) for x in NAMES)]
        for kind in ("read", "challenge", "token", "discovery")
    ]
    return table(head, rows)


def _scale(r: dict[str, Any]) -> list[str]:
    """10,000 pods on 250 nodes, 5 objects each, from the measured reads per poll of 20 pods."""
    pods, nodes, objects = 10_000, 250, 5
    per_node = pods // nodes
    lines = [
        f"Key Vault requests per poll ({POLL_SECONDS} s) for {pods:,} pods on {nodes} nodes, "
        f"{objects} objects each, one vault; pods on a node share their class (measured with 20 pods):",
        "",
    ]
    head = [
        "",
        "requests per poll",
        "per 10 s (spread evenly)",
        f"of the {KV_LIMIT_PER_10S:,}/10 s vault limit",
    ]
    rows = []
    for name in NAMES:
        measured = r["rotation"][name]
        total_kv = measured["read"] + measured["challenge"]
        # Requests that grow with pods (upstream: every poll of every pod) vs. per node (shared).
        per_pod = total_kv / 20
        shared = total_kv if name == "kvmount" else per_pod * per_node
        cluster = shared * nodes
        spread = cluster * 10 / POLL_SECONDS
        rows.append([name, f"{cluster:,.0f}", f"{spread:,.0f}", f"{spread / KV_LIMIT_PER_10S:.0%}"])
    return [*lines, *table(head, rows)]


def _targets(r: dict[str, Any], d: dict[str, Any] | None) -> list[str]:
    cpu = r["cpu"]["kvmount-fresh"] / r["cpu"]["upstream"]
    tput = r["throughput"]["kvmount-fresh"] / r["throughput"]["upstream"]
    l0 = r["latency"][(50, 0)]["kvmount-fresh"] / r["latency"][(50, 0)]["upstream"]
    l20 = r["latency"][(50, 20)]["upstream"] / r["latency"][(50, 20)]["kvmount-fresh"]
    rows = [
        ["CPU per object, fresh", "<= 1.5x upstream", f"{cpu:.2f}x", check(cpu <= 1.5)],
        [
            "20 concurrent mounts of 10 objects (20 ms), fresh",
            ">= upstream",
            f"{tput:.2f}x",
            check(tput >= 1),
        ],
        ["mount of 50 objects, no latency, fresh", "<= 1.5x upstream", f"{l0:.2f}x", check(l0 <= 1.5)],
        ["mount of 50 objects, 20 ms latency, fresh", ">= 4x faster", f"{l20:.2f}x faster", check(l20 >= 4)],
    ]
    idle, after = r["rss_idle"]["kvmount"], r["rss_after"]["kvmount"]
    rows.append(["provider RSS idle", "<= 45 MiB", f"{idle:.1f} MiB", check(idle <= 45)])
    rows.append(
        [f"provider RSS after {r['many']} mounts", "<= 55 MiB", f"{after:.1f} MiB", check(after <= 55)]
    )
    start = max(r["start"]["kvmount"], r["start"]["kvmount-fresh"])
    rows.append(["provider start-up to a served socket", "< 1 s", f"{start:.2f} s", check(start < 1)])
    if d is not None:
        rows.append(
            [
                "driver RSS idle",
                "<= 60 MiB",
                f"{d['rss_idle']['kvmount']:.1f} MiB",
                check(d["rss_idle"]["kvmount"] <= 60),
            ]
        )
        busy = d["rss_volumes"]["kvmount"]
        rows.append(
            [f"driver RSS with {d['volumes']} volumes", "<= 75 MiB", f"{busy:.1f} MiB", check(busy <= 75)]
        )
        rows.append(
            [
                "driver start-up to a served socket",
                "< 1 s",
                f"{d['start']['kvmount']:.2f} s",
                check(d["start"]["kvmount"] < 1),
            ]
        )
    return table(["target", "wanted", "measured", "holds"], rows)


def _driver(d: dict[str, Any]) -> list[str]:
    head = ["", "upstream driver", "kvmount driver"]
    rows = [
        ["start-up to a served socket", *(f"{d['start'][x]:.2f} s" for x in ("upstream", "kvmount"))],
        ["RSS idle", *(f"{d['rss_idle'][x]:.1f} MiB" for x in ("upstream", "kvmount"))],
        [
            f"RSS with {d['volumes']} published volumes",
            *(f"{d['rss_volumes'][x]:.1f} MiB" for x in ("upstream", "kvmount")),
        ],
        [
            f"CPU per publish ({d['volumes']} publishes)",
            *(_ms(d["cpu_publish"][x]) for x in ("upstream", "kvmount")),
        ],
        ["publish p50", *(_ms(d["publish_p50"][x]) for x in ("upstream", "kvmount"))],
    ]
    return table(head, rows)


def measured(results: dict[str, Any], machine: str, when: str) -> str:
    d = results.get("driver")
    out = [BEGIN, "", f"Measured {when} on {machine}, by `python bench/compare.py`.", ""]
    out += ["### Targets (issue 14)", "", *_targets(results, d)]
    out += ["### Providers", "", *_provider(results)]
    out += ["### Requests at the double per mount", "", *_requests(results)]
    out += ["### Rotation", "", *_rotation(results)]
    out += ["### Scale on paper", "", *_scale(results)]
    if d is not None:
        out += ["### Drivers (fast in-process provider)", "", *_driver(d)]
    out.append(END)
    return "\n".join(out)


def splice(path: Path, begin: str, end: str, block: str) -> None:
    """Replace what is between the markers ``begin`` and ``end`` in ``path`` (``block`` holds both);
    markers missing: the block is added at the end (the file made if need be)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if begin not in text or end not in text:
        text = f"{text.rstrip()}\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    path.write_text(head + block + rest.split(end, 1)[1])


def write(path: Path, results: dict[str, Any], machine: str, when: str) -> str:
    """Replace the measured part of ``path`` (or create the file with it alone)."""
    block = measured(results, machine, when)
    splice(path, BEGIN, END, block)
    return block
