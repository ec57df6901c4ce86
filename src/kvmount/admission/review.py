"""One AdmissionReview -> its answer: `kvmount validate`'s findings as warnings, or a refusal.

Pure: no I/O. A SecretProviderClass or a SecretSync is checked; any other object is allowed as
it is. By default everything is allowed and every finding is a warning, so nothing that worked
before stops working; with ``deny`` an object with an error finding is refused, its warnings
still shown.
"""

from __future__ import annotations

import json
from typing import Any

from kvmount.validate.checks import Severity
from kvmount.validate.kinds import KINDS, check_object

# The API server truncates long warnings and drops them past a total; keep each readable whole.
MAX_WARNING_CHARS = 256
MAX_WARNINGS = 20
MAX_MESSAGE_CHARS = 4096
_REVIEW_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")


class BadReview(ValueError):
    """A request that is not an AdmissionReview; the message names what is wrong."""


def _field(doc: dict[str, Any], key: str, kind: type) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind):
        raise BadReview(f"request.{key} is missing or not a {kind.__name__}")
    return value


def review(body: bytes, deny: bool) -> dict[str, Any]:
    """The AdmissionReview answering ``body``; raises BadReview."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise BadReview("the body is not JSON") from None
    if not isinstance(doc, dict) or doc.get("kind") != "AdmissionReview":
        raise BadReview("the body is not an AdmissionReview")
    api_version = doc.get("apiVersion")
    if api_version not in _REVIEW_VERSIONS:
        raise BadReview(f"apiVersion must be one of {', '.join(_REVIEW_VERSIONS)}")
    request = doc.get("request")
    if not isinstance(request, dict):
        raise BadReview("request is missing")
    uid = _field(request, "uid", str)
    kind = request.get("kind")
    obj = request.get("object")
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if isinstance(kind, dict) and kind.get("kind") in KINDS and isinstance(obj, dict):
        findings = check_object(obj, str(kind["kind"]))
        warnings = [_short(f"{f.field}: {f.message}") for f in findings]
        if warnings:
            response["warnings"] = warnings[:MAX_WARNINGS]
        errors = [f"{f.field}: {f.message}" for f in findings if f.severity is Severity.ERROR]
        # An update that leaves the spec as it was (labels, owners, a finalizer removed on the
        # way to deletion) is never refused: refusing it would strand an object admitted before.
        old = request.get("oldObject")
        unchanged = (
            request.get("operation") == "UPDATE"
            and isinstance(old, dict)
            and old.get("spec") == obj.get("spec")
        )
        if deny and errors and not unchanged:
            response["allowed"] = False
            response["status"] = {
                "code": 422,
                "reason": "Invalid",
                "message": _short(
                    f"{kind['kind']} {_name(obj)} is invalid: {'; '.join(errors)}", MAX_MESSAGE_CHARS
                ),
            }
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": response}


def _short(text: str, limit: int = MAX_WARNING_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"
