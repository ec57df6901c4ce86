"""Audit the locked Python dependencies with pip-audit and PyPI's advisory data.

    python scripts/audit_dependencies.py [LOCK]     (default scripts/image/cli-requirements.txt)

The default lock is everything kvmount ships: the image's pins (it is compiled
with scripts/image/requirements.txt as constraints) plus the `cli` extra of
the kubectl plugin's archives.

Exit status, so that scripts/test never takes an audit that did not happen for
a clean one:
  0  every locked package that has advisory data was looked up, and none has
     a known vulnerability with a fixed version (vulnerabilities without a fix
     are printed, and pass: there is nothing to upgrade to);
  1  a locked package has a known vulnerability that a newer version fixes:
     `scripts/lock-image-requirements -P NAME` moves it;
  2  the audit did not complete (the index unreachable or failing, an answer
     that could not be read): tried once more, then this fails too. No
     network means no audit, never "no vulnerabilities".
pip-audit runs with --disable-pip (the lock pins and hashes everything, so
nothing is resolved or installed) and asks the index for each pinned
version's advisories. An index that serves a project's advisories for its
latest release only (a partial mirror: no per-version JSON, pip-audit's
"not found") is read for those: a pin that is the latest release is audited
from them, and a pin behind it (held back by a dependency's upper bound) is
listed as not audited: it is the index's gap, printed on every run, not a
failure of this run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from packaging.version import InvalidVersion, Version
from pip._internal.models.index import PyPI

LOCK = Path(__file__).resolve().parent / "image" / "cli-requirements.txt"
ATTEMPTS = 2
# pip-audit's own --timeout bounds each of its requests; these bound the rest.
RUN_TIMEOUT = 300
REQUEST_TIMEOUT = 30
MAX_PROJECT_JSON = 32 << 20
CLEAN, VULNERABLE, INCOMPLETE = 0, 1, 2
NOT_ON_INDEX = "Dependency not found on PyPI"


class AuditIncomplete(Exception):
    pass


@dataclass
class Finding:
    name: str
    version: str
    # (ids, fixed versions newer than this pin)
    vulns: list[tuple[str, list[str]]] = field(default_factory=list)
    not_audited: str = ""


def locked_names(lock: Path) -> set[str]:
    names = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", lock.read_text(), re.MULTILINE)
    return {normalize(n) for n in names}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def newer(fixes: list[str], version: str) -> list[str]:
    try:
        pinned = Version(version)
        return [f for f in fixes if Version(f) > pinned]
    except InvalidVersion:
        return fixes


def run_pip_audit(lock: Path) -> dict[str, Any]:
    """pip-audit's JSON report of the lock."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "audit.json"
        command = [
            *(sys.executable, "-m", "pip_audit", "--vulnerability-service", "pypi"),
            *("--requirement", str(lock), "--require-hashes", "--disable-pip"),
            *("--format", "json", "--output", str(report), "--progress-spinner", "off"),
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            raise AuditIncomplete(f"pip-audit did not finish in {RUN_TIMEOUT}s") from e
        try:
            # Written once pip-audit looked every package up, whatever it found.
            parsed: dict[str, Any] = json.loads(report.read_text())
            return parsed
        except (OSError, ValueError) as e:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise AuditIncomplete(f"pip-audit exited {done.returncode}: {lines[-1] if lines else '-'}") from e


def latest_release_advisories(name: str) -> tuple[str, list[dict[str, Any]]]:
    """The index's latest release of a project and the advisories it lists for that release."""
    url = f"{PyPI.pypi_url}/{name}/json"
    try:
        with requests.get(url, timeout=REQUEST_TIMEOUT, stream=True) as response:
            response.raise_for_status()
            body = response.raw.read(MAX_PROJECT_JSON + 1, decode_content=True)
        if len(body) > MAX_PROJECT_JSON:
            raise AuditIncomplete(f"{url}: more than {MAX_PROJECT_JSON} bytes")
        data = json.loads(body)
        advisories = [v for v in data.get("vulnerabilities") or [] if not v.get("withdrawn")]
        return str(data["info"]["version"]), advisories
    except (requests.RequestException, ValueError, KeyError, TypeError) as e:
        raise AuditIncomplete(f"{url}: {e}") from e


def findings(report: dict[str, Any], expected: set[str]) -> list[Finding]:
    found = []
    for dependency in report["dependencies"]:
        finding = Finding(normalize(dependency["name"]), dependency.get("version", ""))
        reason = dependency.get("skip_reason")
        if reason is None:
            for vuln in dependency["vulns"]:
                ids = ", ".join([vuln["id"], *vuln.get("aliases", [])])
                finding.vulns.append((ids, newer(vuln["fix_versions"], finding.version)))
        elif reason.startswith(NOT_ON_INDEX):
            finding.version = finding.version or reason.rsplit("(", 1)[-1].rstrip(")")
            latest, advisories = latest_release_advisories(finding.name)
            if latest != finding.version:
                finding.not_audited = f"the index serves advisories for its latest release ({latest}) only"
            for vuln in advisories:
                ids = ", ".join([vuln["id"], *vuln.get("aliases", [])])
                finding.vulns.append((ids, newer(vuln.get("fixed_in") or [], finding.version)))
        else:
            raise AuditIncomplete(f"pip-audit skipped {finding.name}: {reason}")
        found.append(finding)
    missing = expected - {f.name for f in found}
    if missing:
        raise AuditIncomplete(f"pip-audit's report leaves out {', '.join(sorted(missing))}")
    return found


def verdict(found: list[Finding]) -> tuple[int, list[str]]:
    lines = []
    fixable = 0
    for f in found:
        if f.not_audited:
            lines.append(f"not audited: {f.name} {f.version}: {f.not_audited}")
            continue
        for ids, fixes in f.vulns:
            if fixes:
                fixable += 1
                lines.append(f"VULNERABLE {f.name} {f.version}: {ids}; fixed in {', '.join(fixes)}")
            else:
                lines.append(f"known, no fix released: {f.name} {f.version}: {ids}")
    audited = sum(1 for f in found if not f.not_audited)
    lines.append(
        f"audit: {audited} of {len(found)} locked packages audited; fixable vulnerabilities: {fixable}"
    )
    return (VULNERABLE if fixable else CLEAN), lines


def main() -> int:
    lock = Path(sys.argv[1]) if len(sys.argv) > 1 else LOCK
    expected = locked_names(lock)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            status, lines = verdict(findings(run_pip_audit(lock), expected))
        except AuditIncomplete as e:
            print(f"audit, attempt {attempt} of {ATTEMPTS}: {e}", file=sys.stderr)
            continue
        print("\n".join(lines), file=sys.stderr if status else sys.stdout)
        return status
    print(f"audit: the audit of {lock} did not complete; this is not a clean result", file=sys.stderr)
    return INCOMPLETE


if __name__ == "__main__":
    sys.exit(main())
