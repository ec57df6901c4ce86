"""What a process imported, from Python's own report (PYTHONPROFILEIMPORTTIME=1 writes one
``import time:`` line per module to stderr, at startup or later), and the packages no daemon
may import: the image leaves them out (they come with the ``cli`` extra)."""

from __future__ import annotations

# kubernetes brings pydantic (and pydantic_core), oauthlib and requests_oauthlib.
HEAVY = ("kubernetes", "pydantic", "pydantic_core", "oauthlib", "requests_oauthlib")
PROFILE = {"PYTHONPROFILEIMPORTTIME": "1"}


def imported(log: str) -> set[str]:
    return {
        line.rsplit("|", 1)[1].strip()
        for line in log.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def assert_lean(log: str, worked: set[str]) -> None:
    """No heavy package in ``log``'s report, which must name ``worked`` (the modules that did the
    work, so that a report that was never written cannot pass)."""
    modules = imported(log)
    assert worked <= modules, sorted(worked - modules)
    for heavy in HEAVY:
        assert not {m for m in modules if m == heavy or m.startswith(f"{heavy}.")}, heavy
