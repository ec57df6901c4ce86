"""Kubernetes object names checked as the API server checks them.

Names from a request (pod, namespace, class) become file names in standalone
mode and parts of API paths; one that is not a valid Kubernetes name (``../x``,
``a/b``, upper case, too long) is refused before it is used for either.
"""

from __future__ import annotations

import re

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_LABEL_RE = re.compile(_LABEL)
_SUBDOMAIN_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*")

LABEL_RULE = (
    "a DNS label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
)
SUBDOMAIN_RULE = (
    "a DNS subdomain: at most 253 lowercase letters, digits, '-' and '.', "
    "each part starting and ending with a letter or digit"
)


def is_label(name: str) -> bool:
    """An RFC 1123 DNS label, as namespaces are."""
    return len(name) <= 63 and _LABEL_RE.fullmatch(name) is not None


def is_subdomain(name: str) -> bool:
    """An RFC 1123 DNS subdomain, as pods, Secrets and custom resources are named."""
    return len(name) <= 253 and _SUBDOMAIN_RE.fullmatch(name) is not None


def name_problem(field: str, value: str, label: bool = False) -> str | None:
    """Why ``value`` cannot be the Kubernetes name ``field``, or None when it can be."""
    if is_label(value) if label else is_subdomain(value):
        return None
    shown = value if len(value) <= 64 else value[:61] + "..."
    rule = LABEL_RULE if label else SUBDOMAIN_RULE
    return f"{field} {shown!r} is not a valid Kubernetes name: it must be {rule}"
