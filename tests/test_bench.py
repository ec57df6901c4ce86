"""bench/compare.py runs end to end with minimal iterations (providers only) and writes its tables;
bench/api_load.py's audit log reading and projection, on events and runs written here.

The numbers of such a run mean nothing; this only keeps the benchmark from rotting.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import api_report, audit
from tests.peers.upstream import PROVIDER_BINARY, require

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.peer  # runs kvmount's provider and upstream's as processes
def test_quick_run_writes_the_measured_tables(tmp_path: Path) -> None:
    require(PROVIDER_BINARY)
    out = tmp_path / "RESULTS.md"
    out.write_text("# kept\n\n<!-- measured:begin -->\nold\n<!-- measured:end -->\n\nkept too\n")
    run = subprocess.run(
        [sys.executable, "bench/compare.py", "--quick", "--skip-driver", f"--out={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# kept\n") and text.rstrip().endswith("kept too")
    assert "\nold\n" not in text
    for table in ("### Targets (issue 14)", "### Providers", "### Rotation", "### Scale on paper"):
        assert table in text
    assert "| mount p50, 50 objects, 20 ms latency |" in text


def _event(
    audit_id: str, stage: str, verb: str, resource: str, code: int = 200, **more: Any
) -> dict[str, Any]:
    return {
        "auditID": audit_id,
        "stage": stage,
        "verb": verb,
        "user": {"username": more.get("user", "bench-driver:node-00")},
        "objectRef": {"resource": resource, **({"subresource": more["sub"]} if "sub" in more else {})},
        "responseStatus": {"code": code},
    }


def test_audit_counts_each_request_once_and_finds_the_open_watches(tmp_path: Path) -> None:
    events = [
        _event("w1", "ResponseStarted", "watch", "pods"),
        _event("c1", "ResponseComplete", "create", "secretproviderclasspodstatuses", 409),
        _event(
            "t1", "ResponseComplete", "create", "serviceaccounts", sub="token", user="bench-kubelet:node-00"
        ),
        _event("w2", "ResponseStarted", "watch", "secretproviderclasses"),
        _event("w2", "ResponseComplete", "watch", "secretproviderclasses"),
        {
            "auditID": "d1",
            "stage": "ResponseComplete",
            "verb": "get",
            "user": {"username": "bench-driver:node-01"},
        },
    ]
    log = tmp_path / "audit.log"
    log.write_text("".join(json.dumps(e) + "\n" for e in events))
    skipped = len(json.dumps(events[0])) + 1
    found = audit.calls(audit.read(log))
    assert len(found) == 5  # w2's two stages are one request
    drivers = audit.by_user(found, "bench-driver:")
    assert audit.tally(drivers) == {
        "watch pods": 1,
        "create secretproviderclasspodstatuses": 1,
        "watch secretproviderclasses": 1,
        "get discovery": 1,
    }
    assert audit.conflicts(drivers) == 1
    assert audit.open_watches(drivers) == {"bench-driver:node-00": 1}  # w2 ended
    assert audit.per_user(drivers) == {"bench-driver:node-00": 3, "bench-driver:node-01": 1}
    assert audit.tally(audit.by_user(found, "bench-kubelet:")) == {"create serviceaccounts/token": 1}
    assert len(audit.calls(audit.read(log, since=skipped))) == 4  # a window from a byte offset


def _phase(driver: dict[str, int], seconds: float = 30.0, **more: Any) -> dict[str, Any]:
    return {"seconds": seconds, "driver": driver, "conflicts": 0, "warnings": {}, "provider_mounts": 0} | more


def _run(steady: dict[str, int], first: dict[str, int]) -> dict[str, Any]:
    return {
        "nodes": 2, "volumes": 110, "poll": 10.0, "republish": 5.0, "polls": 3, "warmup": 1,
        "when": "now", "machine": "here",
        "contenders": {
            "kvmount": {
                "start": _phase({"list pods": 2, "watch pods": 2}),
                "first": _phase(first, warnings={"FailedToCreateSecret": 2}),
                "warmup": _phase({}),
                "steady": _phase(steady, driver_cpu=0.66),
                "changed": _phase(
                    {"update secretproviderclasspodstatuses": 220, "create events": 220, "update secrets": 2},
                    took=4.0,
                ),
                "watches": {"bench-driver:node-00": 4, "bench-driver:node-01": 5},
                "rss": [50.0, 52.0],
                "publish_errors": 0,
            }
        },
    }  # fmt: skip


def test_figures_are_per_volume_and_poll_and_project_to_the_large_cluster() -> None:
    run = _run(
        {"get pods": 66}, {"create secretproviderclasspodstatuses": 220, "create serviceaccounts/token": 4}
    )
    f = api_report.figures(run, "kvmount")
    assert f.steady == pytest.approx(66 / 220 / 3)  # 30 s window of a 10 s poll: 3 polls
    assert f.steady_cpu_ms == pytest.approx(1.0)
    assert f.first == pytest.approx(224 / 220)
    assert (f.status_writes, f.event_writes, f.secret_writes) == (1.0, 1.0, 1.0)
    assert (f.watches, f.start, f.rss, f.first_warnings) == (5, 2.0, 51.0, 2)
    assert f.own_tokens
    polls, tokens = api_report.projection(f.steady, f.own_tokens)
    assert polls == pytest.approx(0.1 * 550_000 / 120)
    assert tokens == pytest.approx(550_000 * 2 / 2880)
    assert api_report.projection(0.0, False) == (0.0, 0.0)
    text = api_report.section([run])
    assert "| steady: requests per volume per poll | <= 0.02 | 0.100 | **no** |" in text
    assert "| watches per node | <= 4 | 5 | **no** |" in text
    assert "| first publish, 110 pods sharing a synced Secret: warnings | 0 | 2 | **no** |" in text


def test_the_api_section_replaces_only_its_own_part(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    out.write_text(
        "# kept\n\n<!-- measured:begin -->\nother\n<!-- measured:end -->\n\n"
        f"{api_report.BEGIN}\nold\n{api_report.END}\ntail\n"
    )
    api_report.write(out, [_run({}, {"create secretproviderclasspodstatuses": 220})])
    text = out.read_text()
    assert "\nold\n" not in text and "\nother\n" in text and text.endswith("tail\n")
    assert "| steady: requests per volume per poll | <= 0.02 | 0.000 | yes |" in text
