"""The image's lock files (scripts/lock-image-requirements) and their audit (scripts/audit_dependencies.py).

No image needed: these read the committed files, and run the audit where the
index cannot be reached.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / "scripts" / "image"
sys.path.insert(0, str(REPO / "scripts"))
import audit_dependencies  # noqa: E402

# name==version, then its --hash options, up to the next pin.
PIN = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s*\\\n\s*--hash=sha256:[0-9a-f]{64})+)", re.MULTILINE
)


def hashes(lock: Path) -> dict[str, set[str]]:
    """Each pinned package's sha256 hashes (of every file the index has for the pin)."""
    found: dict[str, set[str]] = {
        canonicalize_name(m[1]): set(re.findall(r"sha256:([0-9a-f]{64})", m[3]))
        for m in PIN.finditer(lock.read_text())
    }
    return found


def pins(lock: Path) -> dict[str, Version]:
    text = lock.read_text()
    found: dict[str, Version] = {
        canonicalize_name(m.group(1)): Version(m.group(2)) for m in PIN.finditer(text)
    }
    every = re.findall(r"^[A-Za-z0-9][^\s=]*==", text, re.MULTILINE)
    assert len(found) == len(every), f"{lock.name}: a pin without a sha256 hash"
    return found


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [
        ("requirements.txt", pyproject()["project"]["dependencies"]),
        ("build-requirements.txt", pyproject()["build-system"]["requires"]),
    ],
)
def test_the_lock_pins_every_requirement_of_pyproject_by_hash(lock: str, requirements: list[str]) -> None:
    pinned = pins(IMAGE / lock)
    refresh = "run scripts/lock-image-requirements"
    for line in requirements:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{line} is not in scripts/image/{lock}: {refresh}"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"scripts/image/{lock} pins {name}=={pinned[name]}, outside {line}: {refresh}"
        )


def test_the_lock_holds_nothing_that_pyproject_dropped() -> None:
    # pip-compile's annotations: `# via kvmount (pyproject.toml)` on what pyproject asks for directly.
    required = {canonicalize_name(Requirement(r).name) for r in pyproject()["project"]["dependencies"]}
    blocks = re.split(
        r"^(?=[A-Za-z0-9][^\s=]*==)", (IMAGE / "requirements.txt").read_text(), flags=re.MULTILINE
    )
    direct = {canonicalize_name(b.split("==")[0]) for b in blocks if "kvmount (pyproject.toml)" in b}
    assert direct <= required, (
        f"scripts/image/requirements.txt still locks {sorted(direct - required)} for pyproject, "
        "which no longer asks for them: run scripts/lock-image-requirements"
    )


def test_the_runtime_lock_holds_no_development_tool() -> None:
    extras = pyproject()["project"]["optional-dependencies"]
    dev = {canonicalize_name(Requirement(r).name) for r in extras["dev"]}
    assert not dev & set(pins(IMAGE / "requirements.txt")), "a dev tool in the image's lock"


def test_the_plugin_lock_is_the_image_lock_plus_the_cli_extra() -> None:
    image, plugin = hashes(IMAGE / "requirements.txt"), hashes(IMAGE / "cli-requirements.txt")
    plugin_pins = pins(IMAGE / "cli-requirements.txt")
    refresh = "run scripts/lock-image-requirements"
    for name, pinned in pins(IMAGE / "requirements.txt").items():
        assert plugin_pins.get(name) == pinned, f"cli-requirements.txt: {name}: {refresh}"
        assert plugin[name] == image[name], f"cli-requirements.txt: {name}'s hashes: {refresh}"
    for line in pyproject()["project"]["optional-dependencies"]["cli"]:
        requirement = Requirement(line)
        cli_pin = plugin_pins.get(canonicalize_name(requirement.name))
        assert cli_pin is not None and requirement.specifier.contains(cli_pin), f"{line}: {refresh}"


def report(vulns: list[dict[str, Any]], skip: str = "") -> dict[str, Any]:
    """pip-audit's JSON report (--format json) of one package."""
    dependency: dict[str, Any] = {"name": "PyYAML", "version": "5.3"}
    if skip:
        dependency["skip_reason"] = skip
    else:
        dependency["vulns"] = vulns
    return {"dependencies": [dependency], "fixes": []}


def test_a_vulnerability_with_a_fix_fails_and_one_without_is_printed() -> None:
    fixable = {"id": "PYSEC-2021-142", "aliases": ["CVE-2020-14343"], "fix_versions": ["5.4"]}
    unfixed = {"id": "GHSA-0000-0000-0000", "aliases": [], "fix_versions": []}
    old_fix = {"id": "PYSEC-2020-1", "aliases": [], "fix_versions": ["5.1"]}  # fixed before this pin
    found = audit_dependencies.findings(report([fixable, unfixed]), {"pyyaml"})
    status, lines = audit_dependencies.verdict(found)
    assert status == audit_dependencies.VULNERABLE
    assert "VULNERABLE pyyaml 5.3: PYSEC-2021-142, CVE-2020-14343; fixed in 5.4" in lines
    assert "known, no fix released: pyyaml 5.3: GHSA-0000-0000-0000" in lines
    found = audit_dependencies.findings(report([unfixed, old_fix]), {"pyyaml"})
    assert audit_dependencies.verdict(found)[0] == audit_dependencies.CLEAN


def test_a_package_left_out_or_skipped_is_an_incomplete_audit() -> None:
    with pytest.raises(audit_dependencies.AuditIncomplete, match="leaves out grpcio"):
        audit_dependencies.findings(report([]), {"pyyaml", "grpcio"})
    with pytest.raises(audit_dependencies.AuditIncomplete, match="skipped pyyaml"):
        audit_dependencies.findings(report([], skip="some other reason"), {"pyyaml"})


def test_an_unreachable_index_is_a_failed_audit_not_a_clean_one(tmp_path: Path) -> None:
    # A proxy that refuses connections: every request of pip-audit and of the
    # fallback fails as it would with no network.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    proxy = f"http://127.0.0.1:{port}"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy}
    env["NO_PROXY"] = ""
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "audit_dependencies.py"), str(IMAGE / "requirements.txt")],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert done.returncode == audit_dependencies.INCOMPLETE, done.stdout + done.stderr
    assert "did not complete; this is not a clean result" in done.stderr
    assert "attempt 2 of 2" in done.stderr
    assert "audited" not in done.stdout
