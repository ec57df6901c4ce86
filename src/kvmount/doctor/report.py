"""Doctor's answer: one row per check, a verdict, what was found and what to do, as a table or JSON.

Rows carry names, ids, HTTP statuses and Azure AD codes, never a secret value
or a token: every detail is written by the checks from what they know, never
copied from a response body.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum


class Verdict(StrEnum):
    OK = "ok"
    WARN = "warn"  # works, but will not for long or not as meant
    FAIL = "FAIL"  # this is why the mount fails
    SKIP = "skip"  # could not be checked from here, or needs a check above to pass first
    INFO = "info"


@dataclass(frozen=True)
class Row:
    check: str
    verdict: Verdict
    detail: str
    fix: str = ""

    def line(self, width: int = 0) -> str:
        """The row on one line: verdict, check, what was found -> what to do."""
        fix = f" -> {self.fix}" if self.fix else ""
        return f"{self.verdict.value:<5} {self.check:<{width}}  {self.detail}{fix}"


def render(rows: list[Row]) -> str:
    width = max((len(row.check) for row in rows), default=0)
    return "\n".join(row.line(width).rstrip() for row in rows)


def as_json(rows: list[Row]) -> str:
    return json.dumps([{**asdict(row), "verdict": row.verdict.value} for row in rows], indent=2)


def failed(rows: list[Row]) -> bool:
    return any(row.verdict is Verdict.FAIL for row in rows)
